"""Generated scenarios, valid and invalid, through `simrack run`: each simulates (report written,
invariants hold: simulate.run checks them) or is rejected with one line and exit status 2 (no
traceback, no file). Training steps of dense and MoE models under every schedule, and serving runs of
dense and MoE models under every admission and batching policy. Hostile cases too: sizes far past
what a machine simulates, infinities, NaN and booleans in numeric fields, deep or alias-bombed YAML
and garbled side files, run under a memory limit and a time limit each.

The default run tries a few hundred cases; `pytest -m slow tests/test_properties.py` runs 10,000.
"""

import copy
import json
import math
import resource
import tempfile
import time
from contextlib import contextmanager
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


# --- hostile cases: refused in one line, or simulated to finite figures, within bounds ----------

HOSTILE_NUMBERS = st.sampled_from([2**31, 10**7, 2**63, 10**30, 2**4000, float("inf"), float("-inf"), float("nan"),
                                   True, False, 1e308, -1e308, 5e-324, "1e400", "-0", 0])
NUMERIC_FIELDS = [("model", "layers"), ("model", "hidden"), ("model", "heads"), ("model", "vocab"), ("model", "ffn"),
                  ("model", "dropout"), ("workload", "seq_len"), ("workload", "global_batch"),
                  ("workload", "micro_batch"), ("workload", "prompt_len"), ("workload", "output_len"),
                  ("workload", "batch"), ("workload", "max_batch_tokens"), ("workload", "arrivals", "rate"),
                  ("workload", "arrivals", "count"), ("workload", "arrivals", "seed"), ("layout", "tp"),
                  ("layout", "pp"), ("layout", "chunks"), ("layout", "ep"), ("layout", "cp"),
                  ("layout", "redundant_experts"), ("topology", "domains"), ("topology", "domain", "gpus"),
                  ("topology", "scaleout", "nics_per_domain"), ("topology", "scaleout", "domains_per_leaf"),
                  ("topology", "scaleout", "oversubscription"), ("options", "seed"), ("options", "gpu_hour_price")]
UNITS = {"bandwidth": "GB/s", "latency": "s", "hbm": "GiB", "hbm_bandwidth": "TB/s", "bf16": "TFLOP/s"}
DIMENSIONAL = [("topology", "domain", "bandwidth"), ("topology", "domain", "latency"),
               ("topology", "device", "hbm"), ("topology", "device", "hbm_bandwidth"),
               ("topology", "device", "peak_flops", "bf16"), ("topology", "scaleout", "latency")]
HOSTILE_MAGNITUDES = st.sampled_from(["1e-300", "1e308", "1e400", "inf", "nan", "-1", "0", "1e-9", "1e12"])
HOSTILE_YAML = st.one_of(
    st.integers(33, 800).map(lambda d: "[" * d + "]" * d),  # deep nesting
    st.tuples(st.integers(5, 12), st.integers(4, 9)).map(  # an alias bomb, width w and depth d
        lambda wd: "{" + ", ".join([f"a0: &a0 [{', '.join(['x'] * wd[0])}]"] + [
            f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * wd[0])}]" for i in range(1, wd[1])]) + "}"),
    st.just("&a [*a]"),  # recursive
    st.integers(4301, 6000).map(lambda n: "9" * n))  # too long to read as an integer
TRACE_CELLS = st.one_of(st.sampled_from(["nan", "inf", "-1", "0", "", "1e400", "1" + "0" * 400, "12", "x", "\x00"]),
                        st.text(max_size=8))


def _put(case: dict, path: tuple, value) -> None:
    node = case
    for key in path[:-1]:
        if isinstance(node.get(key), str):
            node[key] = {"preset": node[key]}
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            return
    node[path[-1]] = value


@st.composite
def hostile_cases(draw) -> tuple[dict, dict]:
    """(scenario, side files): a valid base with one hostile number, dimension or YAML value, or a
    garbled request trace."""
    case = copy.deepcopy(draw(st.one_of(valid_base(), serve_base())))
    files = {}
    kind = draw(st.sampled_from(["number", "number", "dimension", "yaml", "trace"]))
    if kind == "number":
        _put(case, draw(st.sampled_from(NUMERIC_FIELDS)), draw(HOSTILE_NUMBERS))
    elif kind == "dimension":
        path = draw(st.sampled_from(DIMENSIONAL))
        _put(case, path, f"{draw(HOSTILE_MAGNITUDES)} {UNITS[path[-1]]}")
    elif kind == "yaml":
        _put(case, draw(st.sampled_from(NUMERIC_FIELDS + DIMENSIONAL)), "<<HOSTILE>>")
        files["<<HOSTILE>>"] = draw(HOSTILE_YAML)
    elif case["workload"]["kind"] == "serve":
        case["workload"]["arrivals"] = {"trace": "t.csv", "rate": 5}
        rows = draw(st.lists(st.lists(TRACE_CELLS, min_size=1, max_size=4), min_size=1, max_size=5))
        files["t.csv"] = "arrival_s,prompt_len,output_len\n" + "".join(",".join(r) + "\n" for r in rows)
    return case, files


@contextmanager
def memory_limit(extra: int = 1 << 30):
    """This process's address space capped at its current size + `extra` inside the block (a runaway
    fails with MemoryError instead of taking the machine), restored after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    size = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (min(size + extra, hard if hard != resource.RLIM_INFINITY else size + extra),
                                            hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def check_hostile(case: dict, files: dict) -> None:
    """Refused with exit 2 and one line, or simulated (exit 0) to a report of finite numbers; in
    either case no traceback, no file left but the report, within memory and a few seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        text = yaml.safe_dump(case, width=10**9)
        for marker, value in files.items():
            if marker.startswith("<<"):
                text = text.replace(marker, value)
            else:
                (Path(tmp) / marker).write_text(value, encoding="utf-8", errors="surrogateescape")
        path, out = Path(tmp) / "gen.yaml", Path(tmp) / "report.json"
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
        before = set(Path(tmp).iterdir())
        start = time.monotonic()
        with memory_limit():
            result = runner.invoke(app, ["run", str(path), "--json", str(out), "-q"])
        assert time.monotonic() - start < 15, "took too long"
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        assert result.exit_code in (0, 2), (result.exit_code, result.output)
        assert "Traceback" not in result.stderr and "Warning" not in result.stderr, result.stderr
        if result.exit_code == 0:
            report = json.loads(out.read_text(), parse_constant=lambda c: math.nan)
            numbers = [v for v in _leaves(report) if isinstance(v, float)]
            assert all(math.isfinite(v) for v in numbers), "Infinity or NaN in the report"
            assert set(Path(tmp).iterdir()) - before == {out}
        else:
            message = result.stderr.strip()
            assert message.startswith("simrack: ") and "\n" not in message and len(message) <= 1100, message
            assert "gen.yaml" in message
            assert set(Path(tmp).iterdir()) == before


def _leaves(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


@settings(max_examples=120, **COMMON)
@given(hostile_cases())
def test_hostile_scenarios(item):
    check_hostile(*item)


@pytest.mark.slow
@settings(max_examples=5_000, **COMMON)
@given(hostile_cases())
def test_hostile_scenarios_5k(item):
    check_hostile(*item)
