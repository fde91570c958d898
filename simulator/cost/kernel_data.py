"""The transcribed kernel measurements (simulator/data/kernels.yaml) as data, and the fitting primitives the device
and link fits share: deterministic least squares on log ratios, geometric means, residual summaries. SI units.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import yaml
from scipy.optimize import least_squares

GENERATION = {"A100-SXM4-80GB": "ampere", "H100-SXM5-80GB": "hopper", "H800": "hopper", "H200-SXM": "hopper",
              "B200": "blackwell", "GB200": "blackwell"}
GENERATIONS = ("ampere", "hopper", "blackwell")
TERA, GIGA, MICRO = 1e12, 1e9, 1e-6


def load_kernels(path: str | Path | None = None) -> dict:
    """The transcribed measurement document: `path`, or the packaged simulator/data/kernels.yaml."""
    if path is not None:
        return yaml.safe_load(Path(path).read_text())
    return yaml.safe_load(resources.files("simulator").joinpath("data", "kernels.yaml").read_text())


def data_sheet(doc: dict) -> dict:
    """Per device: dense peak FLOP/s by dtype ('bf16', 'fp16', 'fp8', 'fp4'), 'hbm' and 'nvlink' (bytes/s)."""
    sheet = {}
    for device, facts in doc["data_sheet"].items():
        peaks = {k.split("_")[0]: v * TERA for k, v in facts.items() if k.endswith("_dense_TFLOPs")}
        sheet[device] = {"peak": peaks, "hbm": facts["hbm_GBps"] * GIGA,
                         "nvlink": facts.get("nvlink_GBps_per_direction", 0) * GIGA}
    return sheet


def by_id(doc: dict) -> dict:
    """Entries keyed by id."""
    return {e["id"]: e for e in doc["entries"]}


def values(entry: dict, quantity: str | None = None, **where) -> list[float]:
    """Measured values whose quantity starts with `quantity` (all if None) and whose sweep keys equal `where`."""
    return [m["value"] for m in entry["measured"]
            if (quantity is None or m["quantity"].startswith(quantity))
            and all(m.get(k) == v for k, v in where.items())]


def stats(ratios) -> dict:
    """Residual summary of predicted/measured ratios: mean and max |ratio - 1| and the count."""
    err = np.abs(np.asarray(ratios, float) - 1.0)
    return {"mean_abs_rel_err": float(err.mean()), "max_abs_rel_err": float(err.max()), "n": int(err.size)}


def least_squares_fit(residuals, starts, lower, upper, scale):
    """Least squares from each fixed start; the lowest-cost solution (deterministic)."""
    best = None
    for x0 in starts:
        sol = least_squares(residuals, x0, bounds=(lower, upper), x_scale=scale, xtol=1e-14, ftol=1e-14, gtol=1e-14)
        best = sol if best is None or sol.cost < best.cost - 1e-15 else best
    return best.x


def single_point(doc: dict, entry_id: str, quantity: str | None, denominator: float) -> dict:
    """A single-measurement parameter: first matching value / denominator (in the entry's unit), with its id."""
    return {"value": values(by_id(doc)[entry_id], quantity)[0] / denominator, "fitted_from": [entry_id]}


def geometric_fraction(fractions: list[float], ids: list[str]) -> dict:
    """One fraction for a set of measured fractions: their geometric mean (the log least-squares constant)."""
    value = float(np.exp(np.mean(np.log(fractions))))
    return {"value": value, "fitted_from": sorted(set(ids)), "residuals": stats(np.array(fractions) / value)}
