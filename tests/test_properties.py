"""Generated scenarios, valid and invalid, through `simrack run`: each simulates (report written,
invariants hold: simulate.run checks them) or is rejected with one line and exit status 2 (no
traceback, no file). Training steps of dense and MoE models under every schedule, and serving runs of
dense and MoE models under every admission and batching policy.

The default run tries a few hundred cases; `pytest -m slow tests/test_properties.py` runs 10,000.
"""

import copy
import json
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from simulator.cli import app

runner = CliRunner()
SCHEDULES = ["gpipe", "1f1b", "interleaved", "zb-h1", "zb-h2", "zb-v", "dualpipe", "dualpipe-v"]
MODELS = ["gpt3-175b", "megatron-22b", "llama3-8b", "llama3-70b"]
TOPOLOGIES = ["dgx-a100-superpod", "dgx-h100-superpod", "hgx-h200", "hgx-b200", "gb200-nvl72", "hgx-h800"]
GPUS_PER_DOMAIN = {"dgx-a100-superpod": 8, "dgx-h100-superpod": 8, "hgx-h200": 8, "hgx-b200": 8,
                   "gb200-nvl72": 72, "hgx-h800": 8}
SPANNABLE = [t for t in TOPOLOGIES if GPUS_PER_DOMAIN[t] == 8]
"""Presets whose domain is small enough for a TP group of twice its size (16) to split the heads."""
GARBAGE = st.sampled_from([-1, 0, "many", 1.5, None, [1], "1 parsec"])
FIELDS = [("model", "layers"), ("model", "hidden"), ("workload", "seq_len"), ("workload", "global_batch"),
          ("workload", "micro_batch"), ("workload", "dtype"), ("workload", "recompute"), ("layout", "tp"),
          ("layout", "pp"), ("layout", "chunks"), ("layout", "zero"), ("layout", "order"),
          ("layout", "schedule"), ("layout", "cp"), ("topology", "domains"), ("options", "seed"),
          ("layout", "colour"), ("workload", "attention"), ("layout", "ep"), ("model", "moe"),
          ("workload", "prompt_len"), ("workload", "batch"), ("workload", "kv_dtype"),
          ("workload", "max_batch_tokens"), ("workload", "arrivals"), ("workload", "admission")]
TINY_MOE = {"layers": 4, "hidden": 1024, "heads": 8, "ffn": 4096, "ffn_kind": "swiglu", "vocab": 32000,
            "moe": {"experts": 16, "top_k": 2, "shared_experts": 1, "expert_ffn": 1024, "dense_layers": 1}}


@st.composite
def valid_base(draw, span: bool = False) -> dict:
    """A scenario built to satisfy the cross-field rules most of the time (schedules may still refuse);
    `span`: a TP group twice the NVLink domain (a group across two domains)."""
    preset = draw(st.sampled_from(SPANNABLE if span else TOPOLOGIES))
    domains = draw(st.sampled_from([2, 4] if span else [1, 2, 4]))
    gpus = domains * GPUS_PER_DOMAIN[preset]
    tps = [2 * GPUS_PER_DOMAIN[preset]] if span else [t for t in (1, 2, 4, 8, 16) if gpus % t == 0]
    tp = draw(st.sampled_from(tps))
    pp = draw(st.sampled_from([q for q in (1, 2, 4) if gpus % (tp * q) == 0]))
    schedule = draw(st.sampled_from(SCHEDULES))
    chunks = {"interleaved": draw(st.sampled_from([2, 3])), "zb-v": 2, "dualpipe": 2, "dualpipe-v": 2}.get(schedule, 1)
    layers = pp * chunks * draw(st.integers(1, 4)) * (2 if schedule == "dualpipe" else 1)
    heads = draw(st.sampled_from([8, 16, 32]))
    micro_batch, m = draw(st.sampled_from([1, 2])), pp * draw(st.integers(1, 8)) * 2
    model = draw(st.one_of(
        st.sampled_from(MODELS).map(lambda name: {"preset": name, "layers": layers}),
        st.just({"layers": layers, "hidden": heads * 64, "heads": heads, "vocab": 32000}),
        st.just({"layers": layers, "hidden": heads * 128, "heads": heads, "kv_heads": 8, "ffn_kind": "swiglu",
                 "ffn": heads * 128 * 3, "vocab": 50000}),
        st.just({**TINY_MOE, "layers": layers, "moe": {**TINY_MOE["moe"], "dense_layers": 0}})))
    dp = gpus // (tp * pp)
    ep = draw(st.sampled_from([e for e in (1, 2, 4, 8, 16) if dp % e == 0])) if "moe" in model else 1
    return {
        "model": model, "topology": {"preset": preset, "domains": domains},
        "workload": {"kind": "train", "seq_len": draw(st.sampled_from([512, 2048, 4096])),
                     "global_batch": gpus // (tp * pp) * micro_batch * m, "micro_batch": micro_batch,
                     "recompute": draw(st.sampled_from(["none", "selective", "full"])),
                     "attention": draw(st.sampled_from(["flash", "unfused"]))},
        "layout": {"tp": tp, "pp": pp, "ep": ep, "schedule": schedule, "chunks": chunks,
                   "zero": draw(st.integers(0, 3)), "sequence_parallel": draw(st.booleans()),
                   "distributed_optimizer": draw(st.booleans())},
        "options": {"seed": draw(st.integers(0, 3))},
    }


@st.composite
def serve_base(draw, span: bool = False) -> dict:
    """A serving run of a dense or MoE model, small enough to simulate in well under a second;
    `span`: a TP group twice the NVLink domain."""
    preset = draw(st.sampled_from(SPANNABLE if span else TOPOLOGIES))
    gpus = draw(st.sampled_from([2, 4] if span else [1, 2])) * GPUS_PER_DOMAIN[preset]
    tps = [2 * GPUS_PER_DOMAIN[preset]] if span else [t for t in (1, 2, 4, 8, 16) if gpus % t == 0]
    tp = draw(st.sampled_from(tps))
    pp = draw(st.sampled_from([q for q in (1, 2) if gpus % (tp * q) == 0]))
    moe = draw(st.booleans()) and not span  # TINY_MOE's 8 heads cannot split 16 ways
    model = TINY_MOE if moe else draw(st.sampled_from(["llama3-8b", "llama3-70b"]))
    dp = gpus // (tp * pp)
    ep = draw(st.sampled_from([e for e in (1, 2, 4, 8, 16) if dp % e == 0])) if moe else 1
    workload = {"kind": "serve", "prompt_len": draw(st.sampled_from([16, 512, 4096])),
                "output_len": draw(st.sampled_from([1, 16, 64])), "batch": draw(st.sampled_from([1, 8, 64])),
                "max_batch_tokens": draw(st.sampled_from([512, 8192])), "chunked_prefill": draw(st.booleans()),
                "admission": draw(st.sampled_from(["reserve", "preempt"])),
                "kv_dtype": draw(st.sampled_from(["bf16", "fp8", "int8"])),
                "arrivals": {"rate": draw(st.sampled_from([1, 100, 5000])), "count": draw(st.integers(1, 40)),
                             "seed": draw(st.integers(0, 3))}}
    if dp // ep > 1 and draw(st.booleans()):
        workload["disaggregated"] = {"prefill_replicas": 1}
    return {"model": model, "topology": {"preset": preset, "domains": gpus // GPUS_PER_DOMAIN[preset]},
            "workload": workload, "layout": {"tp": tp, "pp": pp, "ep": ep}}


@st.composite
def scenario_cases(draw) -> dict:
    """A valid base (training three times in four, else serving), half the time with one field
    replaced by garbage."""
    case = copy.deepcopy(draw(st.one_of(valid_base(), valid_base(), valid_base(), serve_base())))
    if draw(st.booleans()):
        section, field = draw(st.sampled_from(FIELDS))
        case.setdefault(section, {})
        if isinstance(case[section], dict):
            case[section][field] = draw(GARBAGE)
    return case


scenario = scenario_cases()


def check_one(case: dict) -> None:
    """The property: simulate (report + invariants) or one-line rejection with exit 2, no file."""
    with tempfile.TemporaryDirectory() as tmp:
        path, out = Path(tmp) / "gen.yaml", Path(tmp) / "report.json"
        path.write_text(yaml.safe_dump(case))
        result = runner.invoke(app, ["run", str(path), "--json", str(out), "-q"])
        if result.exit_code == 0:
            report = json.loads(out.read_text())
            if report["kind"] == "serve":
                assert report["completed"] + report["rejected"] == report["requests"]
            else:
                assert report["step_time_s"] > 0 and 0 <= report["bubble_fraction"] < 1
        else:
            assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
            message = result.stderr.strip()
            assert message.startswith("simrack: ") and "\n" not in message and "Traceback" not in message
            assert "gen.yaml" in message
            assert not out.exists()


COMMON = dict(deadline=timedelta(seconds=20), suppress_health_check=[HealthCheck.too_slow], derandomize=True)


@settings(max_examples=250, **COMMON)
@given(scenario)
def test_generated_scenarios(case):
    check_one(case)


@settings(max_examples=40, **COMMON)
@given(st.one_of(valid_base(span=True), serve_base(span=True)))
def test_tp_groups_spanning_domains(case):
    """TP 16 on 8-GPU domains, training and serving: the group's collectives cross the NICs."""
    assert case["layout"]["tp"] > GPUS_PER_DOMAIN[case["topology"]["preset"]]
    check_one(case)


@pytest.mark.slow
@settings(max_examples=10_000, **COMMON)
@given(scenario)
def test_generated_scenarios_10k(case):
    check_one(case)
