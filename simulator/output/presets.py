"""The presets a scenario can name (`simrack presets`): models, topologies and devices, each with the other names it
answers to and its headline figures. Rows hold SI values (counts, FLOP/s, bytes, bytes/s); the tables format them."""

from __future__ import annotations

from rich.table import Table

from ..cost.params import active_parameters, total_parameters
from ..scenario.hardware import DeviceSpec
from ..scenario.loader import MODELS_DIR, PRESETS_DIR, device_preset, model_preset, topology_preset
from ..scenario.model import ModelSpec
from ..scenario.preset_names import device_aliases, preset_aliases
from ..scenario.topology import TopologySpec
from ..scenario.units import UNITS_REQUIRED, fmt_bandwidth, fmt_bytes


def model_rows() -> list[dict]:
    """One row a model preset: shape, experts, parameters in all and a token's."""
    rows = []
    for name, aliases in preset_aliases(MODELS_DIR).items():
        m = ModelSpec.model_validate(model_preset(name), context={UNITS_REQUIRED: True})
        rows.append({"preset": name, "aliases": aliases, "layers": m.layers, "hidden": m.hidden, "heads": m.heads,
                     "kv_heads": m.kv_heads, "ffn": m.ffn, "experts": m.moe.experts if m.moe else 0,
                     "top_k": m.moe.top_k if m.moe else 0, "parameters": total_parameters(m),
                     "active_parameters": active_parameters(m)})
    return rows


def topology_rows() -> list[dict]:
    """One row a topology preset: its device, NVLink domain, domains and scale-out."""
    rows = []
    for name, aliases in preset_aliases(PRESETS_DIR).items():
        t = TopologySpec.model_validate(topology_preset(name), context={UNITS_REQUIRED: True})
        rows.append({"preset": name, "aliases": aliases, "device": t.device.name, "domain": t.domain.kind,
                     "domain_gpus": t.domain.gpus, "nvlink_bytes_per_s": t.domain.bandwidth, "domains": t.domains,
                     "gpus": t.domains * t.domain.gpus, "nic_bytes_per_s": t.scaleout.nic_bandwidth,
                     "nics_per_domain": t.scaleout.nics_per_domain})
    return rows


def device_rows() -> list[dict]:
    """One row a devices.yaml entry: generation, dense peaks by dtype, HBM."""
    rows = []
    for name, aliases in device_aliases(PRESETS_DIR).items():
        d = DeviceSpec.model_validate(device_preset(name), context={UNITS_REQUIRED: True})
        rows.append({"preset": name, "aliases": aliases, "name": d.name, "generation": d.arch,
                     "peak_flops": dict(d.peak_flops), "hbm_bytes": d.hbm_bytes, "hbm_bytes_per_s": d.hbm_bandwidth})
    return rows


def tables() -> list[Table]:
    """The three catalogues as tables in human units."""
    models = [[r["preset"], str(r["layers"]), f"{r['hidden']:,}", f"{r['heads']}/{r['kv_heads']}", f"{r['ffn']:,}",
               f"{r['experts']} top-{r['top_k']}" if r["experts"] else "-", _params(r), ", ".join(r["aliases"])]
              for r in model_rows()]
    systems = [[r["preset"], r["device"], f"{r['domain']} x {r['domain_gpus']}", fmt_bandwidth(r["nvlink_bytes_per_s"]),
                str(r["domains"]), f"{r['gpus']:,}", f"{r['nics_per_domain']} x {fmt_bandwidth(r['nic_bytes_per_s'])}",
                ", ".join(r["aliases"])] for r in topology_rows()]
    devices = [[r["preset"], r["name"], r["generation"],
                *(f"{r['peak_flops'][k] / 1e12:,.0f}" if k in r["peak_flops"] else "-" for k in ("bf16", "fp8", "fp4")),
                fmt_bytes(r["hbm_bytes"]), fmt_bandwidth(r["hbm_bytes_per_s"]), ", ".join(r["aliases"])]
               for r in device_rows()]
    return [_table("models", ["preset", "layers", "hidden", "heads q/kv", "FFN", "experts", "parameters", "aliases"],
                   models),
            _table("topologies", ["preset", "device", "NVLink domain", "NVLink a GPU", "domains", "GPUs",
                                  "NICs a domain", "aliases"], systems),
            _table("devices (dense TFLOP/s)", ["preset", "name", "generation", "BF16", "FP8", "FP4", "HBM",
                                               "HBM bandwidth", "aliases"], devices)]


def _params(row: dict) -> str:
    total, active = row["parameters"] / 1e9, row["active_parameters"] / 1e9
    return f"{total:,.1f}B" if abs(total - active) < 1e-9 else f"{total:,.1f}B ({active:,.1f}B active)"


def _table(title: str, columns: list[str], rows: list[list[str]]) -> Table:
    out = Table(title=title, title_justify="left")
    for i, name in enumerate(columns):
        out.add_column(name, no_wrap=i == 0, overflow="fold")
    for row in rows:
        out.add_row(*row)
    return out
