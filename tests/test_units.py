"""simulator.scenario.units: human strings -> SI floats, SI floats -> report strings."""

import re

import pytest

from simulator.scenario.units import (
    DIMENSIONS, UNITS_REQUIRED, fmt_bandwidth, fmt_bytes, fmt_flops, fmt_time, parse_bandwidth, parse_bytes,
    parse_flops, parse_time
)


@pytest.mark.parametrize(
    ("parse", "text", "expected"),
    [
        pytest.param(parse_bytes, "80 GiB", 80 * 2**30, id="bytes-GiB"),
        pytest.param(parse_bytes, "80 GB", 80e9, id="bytes-GB"),
        pytest.param(parse_bytes, "512 B", 512, id="bytes-B"),
        pytest.param(parse_bytes, "1.5 TiB", 1.5 * 2**40, id="bytes-TiB"),
        pytest.param(parse_bytes, "4 KiB", 4096, id="bytes-KiB"),
        pytest.param(parse_bytes, "2 MiB", 2 * 2**20, id="bytes-MiB"),
        pytest.param(parse_bytes, "3 kB", 3000, id="bytes-kB"),
        pytest.param(parse_bytes, "80GiB", 80 * 2**30, id="bytes-no-space"),
        pytest.param(parse_bytes, 1024, 1024.0, id="bytes-bare-int"),
        pytest.param(parse_bytes, "1e9", 1e9, id="bytes-bare-string"),
        pytest.param(parse_bandwidth, "900 GB/s", 9e11, id="bw-GB/s"),
        pytest.param(parse_bandwidth, "3.35 TB/s", 3.35e12, id="bw-TB/s"),
        pytest.param(parse_bandwidth, "400 Gb/s", 5e10, id="bw-bits"),
        pytest.param(parse_bandwidth, "400 Gbps", 5e10, id="bw-Gbps"),
        pytest.param(parse_bandwidth, "200 Gbit/s", 2.5e10, id="bw-Gbit/s"),
        pytest.param(parse_bandwidth, "1 GiB/s", 2**30, id="bw-GiB/s"),
        pytest.param(parse_bandwidth, 2.5e10, 2.5e10, id="bw-bare-float"),
        pytest.param(parse_time, "2 us", 2e-6, id="time-us"),
        pytest.param(parse_time, "2 \u00b5s", 2e-6, id="time-micro-sign"),
        pytest.param(parse_time, "2 \u03bcs", 2e-6, id="time-greek-mu"),
        pytest.param(parse_time, "5 ns", 5e-9, id="time-ns"),
        pytest.param(parse_time, "5 min", 300.0, id="time-min"),
        pytest.param(parse_time, "1.5 h", 5400.0, id="time-h"),
        pytest.param(parse_time, "412 ms", 0.412, id="time-ms"),
        pytest.param(parse_time, "13.7 s", 13.7, id="time-s"),
        pytest.param(parse_time, 0, 0.0, id="time-bare-zero"),
        pytest.param(parse_flops, "312 TFLOP/s", 3.12e14, id="flops-TFLOP/s"),
        pytest.param(parse_flops, "989.4 TFLOPS", 9.894e14, id="flops-TFLOPS"),
        pytest.param(parse_flops, "1.98 PFLOP/s", 1.98e15, id="flops-PFLOP/s"),
        pytest.param(parse_flops, "500 GFLOP/s", 5e11, id="flops-GFLOP/s"),
        pytest.param(parse_flops, "7 FLOP/s", 7.0, id="flops-bare-unit"),
        pytest.param(parse_flops, 3.12e14, 3.12e14, id="flops-bare-float"),
    ],
)
def test_parse_to_si(parse, text, expected):
    assert parse(text) == pytest.approx(expected, rel=1e-12)
    assert isinstance(parse(text), float)


@pytest.mark.parametrize(
    ("parse", "text", "form"),
    [
        pytest.param(parse_bytes, "80 Gb", "80 GiB", id="bytes-in-bits"),
        pytest.param(parse_bytes, "80 GB/s", "80 GiB", id="bytes-given-rate"),
        pytest.param(parse_bytes, "lots", "80 GiB", id="bytes-no-number"),
        pytest.param(parse_bytes, "", "80 GiB", id="bytes-empty"),
        pytest.param(parse_bytes, True, "80 GiB", id="bytes-bool"),
        pytest.param(parse_bytes, None, "80 GiB", id="bytes-none"),
        pytest.param(parse_bytes, "1e999 B", "80 GiB", id="bytes-infinite"),
        pytest.param(parse_bandwidth, "900 GBs", "900 GB/s", id="bw-typo"),
        pytest.param(parse_bandwidth, "900 GiB/", "900 GB/s", id="bw-trailing-slash"),
        pytest.param(parse_bandwidth, "900", None, id="bw-bare-ok"),
        pytest.param(parse_time, "2 sec", "2 us", id="time-unknown-unit"),
        pytest.param(parse_time, "2 Ms", "2 us", id="time-mega-seconds"),
        pytest.param(parse_time, [2], "2 us", id="time-list"),
        pytest.param(parse_flops, "312 TB/s", "312 TFLOP/s", id="flops-given-rate"),
        pytest.param(parse_flops, "312 T", "312 TFLOP/s", id="flops-prefix-only"),
        pytest.param(parse_flops, "3 12 TFLOP/s", "312 TFLOP/s", id="flops-two-numbers"),
    ],
)
def test_parse_rejects_with_quoted_input_and_expected_form(parse, text, form):
    if form is None:  # a bare numeric string is SI, not an error
        assert parse(text) == float(text)
        return
    with pytest.raises(ValueError) as info:
        parse(text)
    message = str(info.value)
    assert repr(text) in message
    assert repr(form) in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("fmt", "value", "expected"),
    [
        pytest.param(fmt_bytes, 74.3 * 2**30, "74.3 GiB", id="bytes-GiB"),
        pytest.param(fmt_bytes, 512, "512 B", id="bytes-B"),
        pytest.param(fmt_bytes, 0, "0 B", id="bytes-zero"),
        pytest.param(fmt_bytes, 1.5 * 2**40, "1.5 TiB", id="bytes-TiB"),
        pytest.param(fmt_bytes, 1000 * 2**20, "1000 MiB", id="bytes-below-GiB"),
        pytest.param(fmt_time, 13.7, "13.7 s", id="time-s"),
        pytest.param(fmt_time, 0.412, "412 ms", id="time-ms"),
        pytest.param(fmt_time, 35e-6, "35 us", id="time-us"),
        pytest.param(fmt_time, 5e-9, "5 ns", id="time-ns"),
        pytest.param(fmt_time, 0.99996, "1 s", id="time-rounds-up-a-unit"),
        pytest.param(fmt_time, 0, "0 s", id="time-zero"),
        pytest.param(fmt_time, 3600, "3600 s", id="time-hour"),
        pytest.param(fmt_bandwidth, 9e11, "900 GB/s", id="bw-GB/s"),
        pytest.param(fmt_bandwidth, 3.35e12, "3.35 TB/s", id="bw-TB/s"),
        pytest.param(fmt_bandwidth, 2.5e10, "25 GB/s", id="bw-nic"),
        pytest.param(fmt_flops, 3.12e14, "312 TFLOP/s", id="flops-T"),
        pytest.param(fmt_flops, 1.98e15, "1.98 PFLOP/s", id="flops-P"),
    ],
)
def test_format_three_significant_digits(fmt, value, expected):
    assert fmt(value) == expected


@pytest.mark.parametrize(
    ("parse", "fmt", "text"),
    [
        pytest.param(parse_bytes, fmt_bytes, "80 GiB", id="bytes"),
        pytest.param(parse_bandwidth, fmt_bandwidth, "450 GB/s", id="bandwidth"),
        pytest.param(parse_time, fmt_time, "2 us", id="time"),
        pytest.param(parse_flops, fmt_flops, "989 TFLOP/s", id="flops"),
    ],
)
def test_format_then_parse_round_trips(parse, fmt, text):
    assert fmt(parse(text)) == text
    assert parse(fmt(parse(text))) == pytest.approx(parse(text))


@pytest.mark.parametrize("name", ["bytes", "bandwidth", "time", "flops"])
def test_every_unit_matches_the_pattern_and_parses_with_its_factor(name):
    """DIMENSIONS is the one list: each unit name with a number matches its pattern and parses to
    number * factor; a bare number matches no pattern."""
    dim = DIMENSIONS[name]
    for unit, factor in dim.units.items():
        for text in (f"2.5 {unit}", f"2.5{unit}", f"1e3 {unit}"):
            assert re.match(dim.pattern, text), text
            assert dim.parse(text) == pytest.approx(float(text.removesuffix(unit).strip()) * factor, rel=1e-15)
    for bare in ("300", "1e9", " 2.5 ", "300 parsecs", "GB/s"):
        assert not re.match(dim.pattern, bare), bare
    assert dim.example in dim.accepts.replace(",", "") or re.match(dim.pattern, dim.example)


@pytest.mark.parametrize("value", [300, 300.0, "300", "1e9"])
def test_bare_numbers_need_a_unit_only_when_the_context_asks(value):
    """From YAML or --set (context UNITS_REQUIRED) a bare number is refused naming the units; a Python
    caller's SI float is taken as is."""
    from pydantic import ValidationError

    from simulator.scenario.topology import DomainSpec

    assert DomainSpec(gpus=8, bandwidth=value).bandwidth == float(value)
    assert DomainSpec.model_validate({"gpus": 8, "bandwidth": value}).bandwidth == float(value)
    with pytest.raises(ValidationError) as info:
        DomainSpec.model_validate({"gpus": 8, "bandwidth": value}, context={UNITS_REQUIRED: True})
    message = info.value.errors()[0]["msg"]
    assert "bare number has no unit" in message and "GB/s" in message and "Gb/s" in message
    spec = DomainSpec.model_validate({"gpus": 8, "bandwidth": "300 GB/s", "latency": "2 us"},
                                     context={UNITS_REQUIRED: True})
    assert (spec.bandwidth, spec.latency) == (300e9, 2e-6)


def test_every_shipped_yaml_gives_units(tmp_path):
    """Scenarios, studies, topology presets and device data sheets load with units required."""
    from pathlib import Path

    import yaml

    from simulator import load_scenario
    from simulator.scenario.loader import PRESETS_DIR

    root = Path(__file__).resolve().parents[1]
    files = [p for p in sorted((root / "scenarios").rglob("*.yaml")) if "models" not in p.parts]
    files += sorted((root / "simulator" / "data" / "validation").glob("*.yaml"))
    assert len(files) > 20
    for path in files:
        load_scenario(path)
    devices = yaml.safe_load((PRESETS_DIR / "devices.yaml").read_text())
    presets = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml") if p.stem != "devices")
    assert len(presets) >= 6 and len(devices) >= 6
    for preset in presets:
        for device in devices:
            path = tmp_path / f"{preset}-{device}.yaml"
            path.write_text(yaml.safe_dump({
                "model": "llama3-8b", "topology": {"preset": preset, "device": device, "domains": 1},
                "workload": {"kind": "train", "seq_len": 2048, "global_batch": 288, "dtype": "bf16"}}))
            scn = load_scenario(path)
            assert scn.topology.domain.bandwidth > 1e10 and scn.topology.device.hbm_bytes > 1e10
