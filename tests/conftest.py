"""Shared fixtures: the published reference figures and a scenario factory.

REFERENCE is the package's published.yaml (simulator/data/published.yaml), keyed by case id.
"""

from __future__ import annotations

import pytest
import yaml

from simulator.data import reference as published

REFERENCE: dict[str, dict] = published()

GPT3_175B = {"layers": 96, "hidden": 12288, "heads": 96, "ffn": 49152, "ffn_kind": "gelu",
             "vocab": 51200, "tied_embeddings": True}
"""GPT-3 175B (Brown et al. 2020, Table 2.1; vocab padded to 51200 as Megatron-LM pads it)."""


@pytest.fixture
def reference():
    """reference(case_id) -> the case mapping of published.yaml (KeyError for an unknown id)."""
    def get(case_id: str) -> dict:
        return REFERENCE[case_id]
    return get


@pytest.fixture
def make_scenario(tmp_path):
    """make_scenario(model=..., topology=..., workload=..., layout=...) -> a loaded Scenario.

    Sections are plain mappings (or preset names) as a scenario YAML would hold them; defaults:
    GPT-3 175B on 8 DGX A100 nodes, seq 2048, one sequence a micro-batch, no parallelism but dp.
    """
    from simulator import load_scenario

    counter = iter(range(10**6))

    def make(*, model=None, topology=None, workload=None, layout=None, **extra):
        raw = {
            "model": dict(GPT3_175B) if model is None else model,
            "topology": {"preset": "dgx-a100-superpod", "domains": 8} if topology is None else topology,
            "workload": {"kind": "train", "seq_len": 2048, "global_batch": 64, "micro_batch": 1,
                         "dtype": "bf16", "recompute": "none", **(workload or {})},
            "layout": layout or {},
            **extra,
        }
        path = tmp_path / f"scenario{next(counter)}.yaml"
        path.write_text(yaml.safe_dump(raw), encoding="utf-8")
        return load_scenario(path)

    return make
