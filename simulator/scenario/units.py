"""Human units at the edge: parse "900 GB/s" into SI floats, and format SI floats for reports.

The only module that knows unit names. Inside simrack everything is SI: seconds, bytes, bytes/s,
FLOP/s. Decimal prefixes k, M, G, T, P, E are powers of 1000; binary prefixes Ki, Mi, Gi, Ti, Pi are
powers of 1024 (bytes and byte rates only). Bandwidths given in bits ("400 Gb/s", "400 Gbps") are
divided by 8. A bare int or float, or a string holding only a number ("1e9"; YAML 1.1 reads 1e9
without a dot as a string), is taken as already SI by the parse_* functions and by models built in
Python; a scenario read from YAML or `--set` (validated with `UNITS_REQUIRED` in the pydantic
context) must give a unit, and a bare number there is an error naming the units accepted.

`DIMENSIONS` is the one definition of what each dimensional field accepts: its unit names (with their
SI factors), a regular expression of an accepted value (`Dimension.pattern`) and an example.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from pydantic import BeforeValidator, Field, ValidationInfo

__all__ = [
    "parse_bytes",
    "parse_bandwidth",
    "parse_time",
    "parse_flops",
    "fmt_bytes",
    "fmt_bandwidth",
    "fmt_time",
    "fmt_flops",
    "Bytes",
    "BytesPerSecond",
    "Seconds",
    "FlopPerSecond",
    "Watts",
    "Hertz",
    "DIMENSIONS",
    "Dimension",
    "UNITS_REQUIRED",
]

_DECIMAL = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
_BINARY = {"Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50}
_NUMBER = re.compile(r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*(\S*?)\s*$")


def _byte_units() -> dict[str, float]:
    """Byte unit name -> bytes: B, kB, MB, GB, ..., KiB, MiB, GiB, ..."""
    units = {p + "B": f for p, f in _DECIMAL.items()}
    units.update({p + "B": f for p, f in _BINARY.items()})
    return units


def _bandwidth_units() -> dict[str, float]:
    """Rate unit name -> bytes/s: GB/s, GiB/s, GBps (bytes); Gb/s, Gbit/s, Gbps (bits, / 8)."""
    units = {name + "/s": f for name, f in _byte_units().items()}
    units.update({name + "ps": f for name, f in _byte_units().items() if not name.endswith("iB")})
    for p, f in _DECIMAL.items():
        for suffix in ("b/s", "bit/s", "bps"):
            units[p + suffix] = f / 8
    return units


def _flops_units() -> dict[str, float]:
    """FLOP rate unit name -> FLOP/s: FLOP/s, TFLOP/s, TFLOPS, Tflop/s, ..."""
    units = {}
    for p, f in _DECIMAL.items():
        for suffix in ("FLOP/s", "FLOPS", "flop/s", "flops", "FLOPs/s"):
            units[p + suffix] = f
    return units


_BYTES = _byte_units()
_BANDWIDTH = _bandwidth_units()
_TIME = {"h": 3600.0, "min": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ns": 1e-9}
_FLOPS = _flops_units()
_WATTS = {"W": 1.0, "kW": 1e3, "MW": 1e6}
_HERTZ = {"Hz": 1.0, "kHz": 1e3, "MHz": 1e6, "GHz": 1e9}


def _parse(value: object, units: dict[str, float], kind: str, example: str) -> float:
    """Parse `value` as a number with one of `units` (name -> SI factor); raise ValueError if not."""
    expected = f"expected a number and a {kind} unit, like {example!r}"
    if isinstance(value, bool):
        raise ValueError(f"cannot parse {value!r} as a {kind}; {expected}")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        match = _NUMBER.match(value)
        unit = match.group(2) if match else None
        if unit is None or unit not in units and unit != "":
            raise ValueError(f"cannot parse {value!r} as a {kind}; {expected}")
        number = float(match.group(1)) * (units[unit] if unit else 1.0)
    else:
        raise ValueError(f"cannot parse {value!r} as a {kind}; {expected}")
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite {kind}; {expected}")
    return number


def parse_bytes(value: object) -> float:
    """Bytes from "80 GiB" (2^30), "80 GB" (1e9), "512 B", or a bare number of bytes."""
    return _parse(value, _BYTES, "size", "80 GiB")


def parse_bandwidth(value: object) -> float:
    """Bytes/s from "900 GB/s", "3.35 TB/s", "400 Gb/s" (bits: / 8), or a bare number of bytes/s."""
    return _parse(value, _BANDWIDTH, "bandwidth", "900 GB/s")


def parse_time(value: object) -> float:
    """Seconds from "2 us", "2 µs", "5 ns", "412 ms", "13.7 s", "5 min", "2 h", or a bare number of seconds."""
    return _parse(value, _TIME, "time", "2 us")


def parse_flops(value: object) -> float:
    """FLOP/s from "312 TFLOP/s", "989 TFLOPS", "1.98 PFLOP/s", or a bare number of FLOP/s."""
    return _parse(value, _FLOPS, "FLOP rate", "312 TFLOP/s")


def parse_power(value: object) -> float:
    """Watts from "700 W", "1.2 kW", or a bare number of watts."""
    return _parse(value, _WATTS, "power", "700 W")


def fmt_watts(x: float) -> str:
    """Watts: 700.0 -> "700 W", 1.2e3 -> "1.2 kW"."""
    return _scaled(x, [(1.0, "W"), (1e3, "kW"), (1e6, "MW")])


def fmt_hertz(x: float) -> str:
    """Hertz: 1.83e9 -> "1.83 GHz", 1.395e9 -> "1.4 GHz" (three digits)."""
    return _scaled(x, [(1.0, "Hz"), (1e3, "kHz"), (1e6, "MHz"), (1e9, "GHz")])


def _three_digits(x: float) -> str:
    """x with three significant digits, no exponent: 74.3, 412, 1023, 0.5."""
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _scaled(x: float, steps: list[tuple[float, str]]) -> str:
    """Format x with the largest unit of `steps` (factor, name; ascending) not above |x|."""
    if not math.isfinite(x):
        return f"{x} {steps[0][1]}"
    factor, name = steps[0]
    for f, n in steps:
        if abs(x) >= f * (1 - 5e-4):  # 999.9 ms rounds to "1 s", not "1000 ms"
            factor, name = f, n
    return f"{_three_digits(x / factor)} {name}"


_FMT_BYTES = [(1.0, "B"), *((f, p + "B") for p, f in _BINARY.items())]
_FMT_BANDWIDTH = [(f, p + "B/s") for p, f in _DECIMAL.items() if p not in ("K", "E")]
_FMT_FLOPS = [(f, p + "FLOP/s") for p, f in _DECIMAL.items() if p != "K"]
_FMT_TIME = [(1e-9, "ns"), (1e-6, "us"), (1e-3, "ms"), (1.0, "s")]


def fmt_bytes(x: float) -> str:
    """Bytes in binary units: 7.98e10 -> "74.3 GiB"."""
    return _scaled(x, _FMT_BYTES)


def fmt_bandwidth(x: float) -> str:
    """Bytes/s in decimal units: 9e11 -> "900 GB/s"."""
    return _scaled(x, _FMT_BANDWIDTH)


def fmt_flops(x: float) -> str:
    """FLOP/s in decimal units: 3.12e14 -> "312 TFLOP/s"."""
    return _scaled(x, _FMT_FLOPS)


def fmt_time(x: float) -> str:
    """Seconds: 13.7 -> "13.7 s", 0.412 -> "412 ms", 3.5e-5 -> "35 us"."""
    if x == 0:
        return "0 s"
    return _scaled(x, _FMT_TIME)



@dataclass(frozen=True)
class Dimension:
    """One dimensional quantity as YAML writes it: a number and one of `units` (name -> SI factor)."""

    kind: str  # "size", "bandwidth", "time", "FLOP rate"
    si: str  # the SI unit simrack holds it in
    units: dict[str, float]
    example: str
    accepts: str  # the unit names, for messages
    fmt: Callable[[float], str]  # SI float -> human string
    high: float = math.inf  # the largest value simrack simulates (SI)
    low: float = 0.0  # the smallest positive value it simulates (SI); 0 itself where the field allows it

    @property
    def pattern(self) -> str:
        """Regular expression of an accepted YAML value: a non-negative number (every dimensional
        field is), optional spaces, a unit name."""
        names = "|".join(re.escape(u) for u in sorted(self.units, key=lambda u: (-len(u), u)) if u)
        return r"^\s*\+?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*(?:" + names + r")\s*$"

    def text(self, value: float) -> str:
        """An SI float as a string that parses back exactly: "2 us", else "1.5e-06 s"."""
        out = self.fmt(value)
        try:
            if self.parse(out) == value:
                return out
        except ValueError:
            pass
        return f"{value!r} {self.si}"

    def parse(self, value: object) -> float:
        """SI float of `value` (a bare number is taken as SI)."""
        return _parse(value, self.units, self.kind, self.example)

    def check_range(self, number: float) -> None:
        """ValueError if a parsed value is beyond what simrack simulates: past `high`, or positive and
        below `low`; times and sizes computed from it would overflow or lose their precision."""
        if number > self.high:
            raise ValueError(f"over {self.high:g} {self.si}, the largest {self.kind} simrack simulates "
                             "(figures computed from it would lose their precision)")
        if 0 < number < self.low:
            raise ValueError(f"under {self.low:g} {self.si}, the smallest {self.kind} simrack simulates "
                             "(times computed from it would overflow)")

    def require_unit(self, value: object) -> None:
        """ValueError if `value` is a bare number (no unit), naming the units accepted."""
        bare = isinstance(value, (int, float)) and not isinstance(value, bool)
        if isinstance(value, str):
            match = _NUMBER.match(value)
            bare = match is not None and match.group(2) == ""
        if bare:
            raise ValueError(f"a bare number has no unit; give a {self.kind} like {self.example!r} "
                             f"(units: {self.accepts})")


def _names(units: dict[str, float], keep=lambda name: True) -> str:
    """Unit names kept by `keep`, by ascending factor, without the upper-case K alias of k."""
    names = [n for n in units if keep(n) and not (n.startswith("K") and not n.startswith("Ki"))]
    return ", ".join(sorted(names, key=lambda n: units[n]))


DIMENSIONS: dict[str, Dimension] = {
    "bytes": Dimension("size", "B", _BYTES, "80 GiB", _names(_BYTES), fmt_bytes, high=1e18, low=1.0),
    "bandwidth": Dimension("bandwidth", "B/s", _BANDWIDTH, "900 GB/s",
                           _names(_BANDWIDTH, lambda n: n.endswith("B/s"))
                           + "; also GBps, and bits: Gb/s, Gbit/s, Gbps", fmt_bandwidth, high=1e18, low=1.0),
    "time": Dimension("time", "s", _TIME, "2 us", "ns, us (\u00b5s), ms, s, min, h", fmt_time, high=1e7),
    "flops": Dimension("FLOP rate", "FLOP/s", _FLOPS, "312 TFLOP/s",
                       _names(_FLOPS, lambda n: n.endswith("FLOP/s") and not n.endswith("FLOPs/s"))
                       + "; also TFLOPS, Tflop/s", fmt_flops, high=1e21, low=1.0),
    "power": Dimension("power", "W", _WATTS, "700 W", "W, kW, MW", fmt_watts, high=1e9, low=1e-3),
    "frequency": Dimension("frequency", "Hz", _HERTZ, "1830 MHz", "Hz, kHz, MHz, GHz", fmt_hertz, high=1e12,
                           low=1.0),
}
"""What each dimensional field accepts; the pydantic types below and any schema read it from here."""

UNITS_REQUIRED = "units_required"
"""Key of the pydantic validation context under which a dimensional field needs a unit (the loader
sets it: YAML and `--set`); models validated without it (Python callers) take bare SI numbers."""


def _validator(dim: Dimension):
    def check(value: object, info: ValidationInfo) -> float:
        if info.context and info.context.get(UNITS_REQUIRED):
            dim.require_unit(value)
        number = dim.parse(value)
        dim.check_range(number)
        return number

    check.__doc__ = f"A {dim.kind}: a number and a unit (bare SI numbers from Python callers)."
    check.dimension = dim  # read by the JSON schema and by simulator.scenario.overrides.to_yaml
    return BeforeValidator(check)


# Pydantic field types: accept a human string (or, from Python, a bare SI number), store an SI float.
Bytes = Annotated[float, _validator(DIMENSIONS["bytes"]), Field(gt=0)]
"""A positive size in bytes; YAML says "80 GiB"."""
BytesPerSecond = Annotated[float, _validator(DIMENSIONS["bandwidth"]), Field(gt=0)]
"""A positive rate in bytes/s per direction; YAML says "900 GB/s" or "400 Gb/s"."""
Seconds = Annotated[float, _validator(DIMENSIONS["time"]), Field(ge=0)]
"""A non-negative duration in seconds; YAML says "2 us"."""
FlopPerSecond = Annotated[float, _validator(DIMENSIONS["flops"]), Field(gt=0)]
"""A positive compute rate in FLOP/s; YAML says "312 TFLOP/s"."""
Watts = Annotated[float, _validator(DIMENSIONS["power"]), Field(gt=0)]
"""A positive power in watts; YAML says "700 W"."""
Hertz = Annotated[float, _validator(DIMENSIONS["frequency"]), Field(gt=0)]
"""A positive clock frequency in Hz; YAML says "1830 MHz"."""
