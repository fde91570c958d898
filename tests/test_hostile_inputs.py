"""Hostile input, class by class (parsing, side files, sizes, numbers, baselines, outputs): each case
ends with its exit status and one line on stderr naming the file and the field, no traceback, no file
left behind, within a memory limit and a time limit (tests/hostile.py runs them all in one child
process under RLIMIT_AS, so a regression fails here instead of taking the machine down)."""

from __future__ import annotations

import json

import pytest

from hostile import DEV_FULL, DEV_NULL, problems, run_cases

SCN = "s.yaml"
TRAIN = """\
model: llama3-8b
topology: {preset: hgx-h200, domains: 2}
workload: {kind: train, seq_len: 2048, global_batch: 16, micro_batch: 1, dtype: bf16}
layout: {tp: 4, pp: 2, schedule: 1f1b}
options: {seed: 0, gpu_hour_price: 2.0}
"""
SERVE = """\
model: llama3-8b
topology: {preset: hgx-h200, domains: 1}
workload: {kind: serve, prompt_len: 512, output_len: 16, batch: 8, arrivals: {trace: t.csv, rate: 5}}
layout: {tp: 2}
"""
MOE = """\
model: {layers: 4, hidden: 1024, heads: 8, ffn: 4096, ffn_kind: swiglu, vocab: 32000,
        moe: {experts: 16, top_k: 2, shared_experts: 1, expert_ffn: 1024, dense_layers: 1}}
topology: {preset: hgx-h200, domains: 1}
workload: {kind: train, seq_len: 512, global_batch: 8, routing: {kind: counts, counts_file: c.txt}}
layout: {ep: 4}
"""
FAULTS = TRAIN + """\
faults: {straggler: {gpu: 3, slowdown: 1.5}, degraded_link: {gpu: 1, tier: scaleout, fraction: 0.5},
         jitter: {cv: 0.1}}
"""
HEADER = "arrival_s,prompt_len,output_len\n"
ROW16 = " ".join(["1"] * 16)
BOMB = "\n".join(["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
                 + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)] + ["model: *a8"]) + "\n"
BOMB_FLOW = "{" + ", ".join(["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
                            + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]) + "}"
CASES: list[dict] = []


def case(cls: str, name: str, args: list, files: dict | None = None, says=(), expect: int = 2, **extra) -> None:
    CASES.append({"id": f"{cls}/{name}", "args": args, "files": files or {}, "says": list(says),
                  "expect": expect, **extra})


def run(name: str, files: dict, *sets: str, says=(), **extra) -> None:
    """`simrack run s.yaml -q --set ...` on the files given."""
    case(*name.split("/", 1), ["run", SCN, "-q", "--json", "out.json", *[a for s in sets for a in ("--set", s)]],
         files, says, **extra)


# --- 1. parsing: depth, aliases, sizes, files that are not files -------------------------------
run("parsing/deep-flow", {SCN: "model: " + "[" * 500 + "]" * 500 + "\n"}, says=[SCN, "deeper than 32"])
run("parsing/deep-block", {SCN: "model:\n  " + "- " * 400 + "1\n"}, says=[SCN, "deeper than 32"])
run("parsing/deep-mapping", {SCN: "".join(f"{'  ' * i}k{i}:\n" for i in range(60)) + "  " * 60 + "x\n"},
    says=["deeper than 32"])
run("parsing/alias-bomb", {SCN: BOMB}, says=[SCN, "aliases expand to more than 10,000 values"])
run("parsing/alias-recursive", {SCN: "a: &a [*a]\nmodel: *a\n"}, says=["refers to a value that holds it"])
run("parsing/merge-bomb", {SCN: BOMB.replace("model: *a8", "model: {<<: {x: *a8}}")}, says=["aliases expand"])
run("parsing/file-over-1MiB", {SCN: "model: [" + "1," * 600_000 + "1]\n"}, says=[SCN, "larger than 1 MiB"])
run("parsing/too-many-values", {SCN: "model: [" + "1," * 300_000 + "1]\n"}, says=["more than 10,000 values"])
run("parsing/dev-zero", {}, says=["/dev/zero", "character device"])
CASES[-1]["args"][1] = "/dev/zero"
run("parsing/fifo", {SCN: "<fifo>"}, says=[SCN, "FIFO"])
run("parsing/directory", {}, says=["is a directory"])
CASES[-1]["args"][1] = "."
run("parsing/topology-dev-zero", {SCN: TRAIN.replace("{preset: hgx-h200, domains: 2}", "/dev/zero")},
    says=[SCN, "topology", "character device"])
run("parsing/topology-alias-bomb", {SCN: TRAIN.replace("{preset: hgx-h200, domains: 2}", "topo.yaml"),
                                    "topo.yaml": BOMB.replace("model", "domain")}, says=["topology", "aliases expand"])
run("parsing/not-utf8", {SCN: {"hex": "6d6f64656c3a20ff0a"}}, says=["line 1", "not UTF-8"])
run("parsing/int-5000-digits", {SCN: TRAIN.replace("global_batch: 16", "global_batch: " + "9" * 5000)},
    says=["too long to read"])
run("parsing/int-400-digits", {SCN: TRAIN.replace("global_batch: 16", "global_batch: 1" + "0" * 400)},
    says=["workload.global_batch", "about 10^400", "limit"])
run("parsing/long-string", {SCN: TRAIN.replace("model: llama3-8b", "model: " + "x" * 500_000)},
    says=["model: no preset"])
run("parsing/duplicate-key", {SCN: TRAIN + "model: llama3-70b\n"}, says=["duplicate key 'model'"])
run("parsing/two-documents", {SCN: TRAIN + "---\n" + TRAIN}, says=["YAML error"])
run("parsing/python-tag", {SCN: "model: !!python/object/apply:os.system [echo hi]\n"}, says=["YAML error"])
run("parsing/empty", {SCN: ""}, says=["expected a mapping"])
run("parsing/set-deep", {SCN: TRAIN}, "layout.pp=" + "[" * 100 + "]" * 100, says=["layout.pp", "deeper than 32"])
run("parsing/set-bomb", {SCN: TRAIN}, "layout.pp=" + BOMB_FLOW, says=["layout.pp", "aliases expand"])

# --- 2. side files: the trace CSV and the routing counts name their file, line and field ----------
for name, text, say in [
    ("short-row", HEADER + "0,12\n", "line 2: 2 fields"),
    ("long-row", HEADER + "0,12,4,5\n", "line 2: 4 fields"),
    ("not-utf8", {"hex": (HEADER + "0,12,").encode().hex() + "ff0a"}, "line 2: not UTF-8"),
    ("400-digits", HEADER + "0,1" + "0" * 400 + ",4\n", "line 2: prompt_len"),
    ("nan-arrival", HEADER + "nan,12,4\n", "line 2: arrival_s 'nan'"),
    ("inf-arrival", HEADER + "0,12,4\ninf,12,4\n", "line 3: arrival_s 'inf'"),
    ("negative", HEADER + "-1,12,4\n", "line 2: arrival_s '-1'"),
    ("zero-tokens", HEADER + "0,0,4\n", "line 2: prompt_len '0'"),
    ("words", HEADER + "0,twelve,4\n", "line 2: prompt_len 'twelve'"),
    ("column-twice", "prompt_len,prompt_len,output_len\n1,2,3\n", "named twice"),
    ("no-rows", HEADER, "has no rows"),
    ("huge-field", HEADER + "0,12," + "9" * 200_000 + "\n", "t.csv line"),
]:
    run(f"side-files/trace-{name}", {SCN: SERVE, "t.csv": text}, says=[SCN, "workload.arrivals.trace", "t.csv", say])
run("side-files/trace-dev-zero", {SCN: SERVE.replace("t.csv", "/dev/zero")},
    says=["workload.arrivals.trace", "/dev/zero", "character device"])
for name, text, say in [
    ("nan", ROW16.replace("1", "nan", 1), "line 1: 'nan'"),
    ("inf", ROW16 + "\n" + ROW16.replace("1", "inf", 1), "line 2: 'inf'"),
    ("all-zero", ROW16.replace("1", "0"), "line 1: every count is zero"),
    ("negative", ROW16.replace("1", "-3", 1), "line 1: '-3'"),
    ("short", "1 2 3", "line 1: 3 counts"),
    ("too-many-rows", "\n".join([ROW16] * 4), "line 4: more than 3 rows"),
    ("two-rows", "\n".join([ROW16] * 2), "got 2 rows"),
    ("huge", ROW16.replace("1", "1e308", 1), "line 1: '1e308'"),
    ("word", ROW16.replace("1", "many", 1), "line 1: 'many'"),
]:
    run(f"side-files/counts-{name}", {SCN: MOE, "c.txt": text},
        says=[SCN, "workload.routing.counts_file", "c.txt", say])

# --- 3. sizes: refused with the limit and why, before any work -----------------------------------
for name, sets, field in [
    ("micro-batches-1e6", ["workload.global_batch=8000000"], "workload.global_batch"),
    ("global-batch-1e18", ["workload.global_batch=1000000000000000000"], "workload.global_batch"),
    ("global-batch-2^4000", [f"workload.global_batch={2 ** 4000}"], "workload.global_batch"),
    ("pp-1024", ["model.layers=1024", "layout.pp=1024", "layout.tp=1", "topology.domains=128",
                 "workload.global_batch=1024"], "workload.global_batch"),
    ("gpus-1e12", ["topology.domains=125000000000"], "topology.domains"),
    ("domain-gpus-1e6", ["topology.domain.gpus=1000000"], "topology.domain.gpus"),
    ("nics-1e6", ["topology.scaleout.nics_per_domain=1000000"], "topology.scaleout.nics_per_domain"),
    ("template-graph", ["topology.domain.gpus=4096", "topology.scaleout.domains_per_leaf=64", "topology.domains=64"],
     "topology.scaleout.domains_per_leaf"),
    ("layers-1e9", ["model.layers=1000000000"], "model.layers"),
    ("seq-2^30", ["workload.seq_len=1073741824"], "workload.seq_len"),
    ("seed-2^70", [f"options.seed={2 ** 70}"], "options.seed"),
]:
    run(f"sizes/{name}", {SCN: TRAIN}, *sets, says=[SCN, field, "limit"])
run("sizes/experts-100k", {SCN: MOE.replace("kind: counts, counts_file: c.txt", "kind: uniform")},
    "model.moe.experts=100000", says=["model.moe.experts", "limit"])
run("sizes/requests-1e9", {SCN: SERVE.replace("trace: t.csv, rate: 5", "rate: 5, count: 1000000000")},
    says=["workload.arrivals.count", "limit"])
run("sizes/decode-steps", {SCN: SERVE.replace("trace: t.csv, rate: 5", "rate: 0.5, count: 1000000")},
    says=["workload.arrivals", "decode steps"])
run("sizes/output-1e6", {SCN: SERVE.replace("trace: t.csv, rate: 5", "rate: 5, count: 40")},
    "workload.output_len=1000000", says=["workload.output_len", "decode steps"])
run("sizes/trace-slow-arrivals", {SCN: SERVE, "t.csv": "prompt_len,output_len\n" + "16,64\n" * 80000},
    "workload.arrivals.rate=0.001", says=["workload.arrivals.trace"])
run("sizes/trace-context-over-limit", {SCN: SERVE, "t.csv": HEADER + "0,3000000,4\n"}, "topology.device.hbm=1 PB",
    says=["workload.arrivals.trace", "3,000,004 tokens", "limit"])
case("sizes", "schedule-picture", ["schedule", SCN, "--set", "workload.global_batch=65536", "--svg", "s.png"],
     {SCN: TRAIN}, ["--svg s.png", "slices", "limit"])
case("sizes", "sweep-1e9-points", ["sweep", SCN, "--grid", "layout.pp=" + ",".join(map(str, range(1000))),
                                   "--grid", "layout.tp=" + ",".join(map(str, range(1000))), "--grid",
                                   "workload.micro_batch=" + ",".join(map(str, range(1, 1001))), "-q"],
     {SCN: TRAIN}, ["1,000,000,000 points", "limit"])
case("sizes", "search-1e12-gpus", ["search", SCN, "--gpus", "1000000000000", "-q"], {SCN: TRAIN},
     ["--gpus", "limit"])
case("sizes", "grid-unknown-field", ["sweep", SCN, "--grid", "nosuch.x=1,2", "-q", "--json", "out.json"],
     {SCN: TRAIN}, ["--grid nosuch: unknown field"])

# --- 4. numbers: no infinity, NaN or boolean where a number is meant ----------------------------
FLOATS = [("workload.routing.skew", MOE), ("workload.routing.capacity_factor", MOE),
          ("workload.routing.affinity", MOE), ("topology.scaleout.oversubscription", TRAIN),
          ("options.gpu_hour_price", TRAIN), ("model.dropout", TRAIN), ("topology.device.efficiency.gemm", TRAIN),
          ("faults.straggler.slowdown", FAULTS), ("faults.jitter.cv", FAULTS),
          ("faults.degraded_link.fraction", FAULTS)]
for field, text in FLOATS:
    text = text.replace("kind: counts, counts_file: c.txt", "kind: zipf")
    for value in (".inf", "-.inf", ".nan", "true", "1e400"):
        run(f"numbers/{field}={value}", {SCN: text}, f"{field}={value}", says=[SCN, field])
run("numbers/rate=.inf", {SCN: SERVE.replace("trace: t.csv, rate: 5", "rate: .inf, count: 4")},
    says=["workload.arrivals.rate", "finite"])
run("numbers/rate=true", {SCN: SERVE.replace("trace: t.csv, rate: 5", "rate: true, count: 4")},
    says=["workload.arrivals.rate", "boolean"])
for field, value in [("topology.device.peak_flops.bf16", "1e-300 FLOP/s"),
                     ("topology.device.hbm_bandwidth", "1e-300 B/s"),
                     ("topology.domain.latency", "1e308 s"), ("topology.scaleout.nic_bandwidth", "1e400 GB/s"),
                     ("topology.device.hbm", ".inf"), ("topology.domain.bandwidth", "true")]:
    run(f"numbers/{field}={value}", {SCN: TRAIN}, f"{field}={value}", says=[SCN, field])
for field, value in [("topology.device.peak_flops.bf16", "1 FLOP/s"), ("topology.domain.bandwidth", "1 B/s"),
                     ("topology.device.hbm_bandwidth", "1 B/s"), ("options.gpu_hour_price", "1e6")]:
    run(f"numbers/slowest-{field}", {SCN: TRAIN}, f"{field}={value}", expect=0, keep=["out.json"])

# --- 6. baselines: a corrupt baseline is bad input, never a pass ----------------------------------
GOOD_BASELINE = {"simrack_baseline": 1, "scenarios": {SCN: {"kind": "train", "metrics": {
    "step_time_s": 10.0, "tokens_per_s": 1000.0, "memory_bytes.total": 5e10}}}}
for name, value in [("nan", "NaN"), ("infinity", "Infinity"), ("null", "null"), ("string", '"fast"'),
                    ("boolean", "true"), ("negative", "-1.5"), ("huge", "1e999")]:
    text = json.dumps(GOOD_BASELINE).replace('"step_time_s": 10.0', f'"step_time_s": {value}')
    case("baselines", name, ["check", SCN, "--baseline", "b.json"], {SCN: TRAIN, "b.json": text}, ["b.json"])
for name, text in [("empty-metrics", json.dumps({**GOOD_BASELINE, "scenarios": {SCN: {"metrics": {}}}})),
                   ("unknown-metric", json.dumps(GOOD_BASELINE).replace("step_time_s", "step_time")),
                   ("deep", "[" * 100_000), ("not-json", "{"), ("list", "[]")]:
    case("baselines", name, ["check", SCN, "--baseline", "b.json"], {SCN: TRAIN, "b.json": text}, ["b.json"])
case("baselines", "dev-zero", ["check", SCN, "--baseline", "/dev/zero"], {SCN: TRAIN}, ["character device"])

# --- 5. outputs that cannot be written: one line, nothing left (the first output included) --------
OUT = ["run", SCN, "-q", "--json", "new/a.json", "--csv", "b.csv"]
case("outputs", "directory-in-the-way", [*OUT, "--trace", "d"], {SCN: TRAIN, "d/x": ""},
     ["--trace d", "a directory is in the way"], keep=["d"])
case("outputs", "file-in-the-way-of-a-folder", [*OUT, "--trace", "f/t.json"], {SCN: TRAIN, "f": ""},
     ["--trace f/t.json", "cannot write"])
case("outputs", "full-disk", [*OUT, "--trace", DEV_FULL[0]], {SCN: TRAIN, **DEV_FULL[1]},
     [f"--trace {DEV_FULL[0]}", "No space left"])
case("outputs", "file-size-limit", [*OUT, "--trace", "t.json"], {SCN: TRAIN}, ["--trace t.json", "too large"],
     fsize=3_000)
case("outputs", "fifo-without-reader", [*OUT, "--trace", "p"], {SCN: TRAIN, "p": "<fifo>"}, ["--trace p", "no reader"])
case("outputs", "same-file-twice", ["run", SCN, "-q", "--json", "a", "--csv", "./a"], {SCN: TRAIN},
     ["--json and --csv name the same file"])
case("outputs", "sweep-plot-directory", ["sweep", SCN, "--grid", "layout.zero=0,1", "-j", "1", "-q", "--json",
                                        "s.json", "--plot", "d"], {SCN: TRAIN, "d/x": ""}, ["--plot d"], keep=["d"])
case("outputs", "plot-unknown-format", ["schedule", SCN, "--svg", "p.xyz"], {SCN: TRAIN},
     ["--svg p.xyz: cannot draw", "not supported"])
case("outputs", "dev-null", ["run", SCN, "-q", "--json", DEV_NULL[0], "--csv", "b.csv"], {SCN: TRAIN, **DEV_NULL[1]},
     expect=0, keep=["b.csv"])


@pytest.fixture(scope="module")
def outcomes():
    return run_cases(CASES)


@pytest.mark.parametrize("item", CASES, ids=[c["id"] for c in CASES])
def test_hostile_case(outcomes, item):
    assert not problems(item, outcomes[item["id"]])


def test_hostile_cases_stay_quick(outcomes):
    """No case comes near the alarm: a refusal is immediate, not a long simulation cut short."""
    slow = {k: round(v["seconds"], 1) for k, v in outcomes.items() if v["seconds"] > 10}
    assert not slow


# --- the classes stay mended as the schema grows ---------------------------------------------------

def _schema_fields(cls=None, prefix=()):
    """(dotted path, field type without Annotated/Optional, FieldInfo) of every leaf of the schema;
    dict-valued fields once, as "<key>"."""
    from typing import get_args, get_origin

    from pydantic import BaseModel

    from simulator.scenario.loader import _unwrap
    from simulator.scenario.spec import Scenario

    cls = cls or Scenario
    for name, info in cls.model_fields.items():
        path = (*prefix, info.alias or name)
        tp = _unwrap(info.annotation)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            yield from _schema_fields(tp, path)
        elif get_origin(tp) is dict:
            yield ".".join((*path, "<key>")), _unwrap(get_args(tp)[1]), info
        elif get_origin(tp) is tuple:
            yield ".".join(path), _unwrap(get_args(tp)[0]), info
        else:
            yield ".".join(path), tp, info


def _models(cls=None):
    from pydantic import BaseModel

    from simulator.scenario.loader import _unwrap
    from simulator.scenario.spec import Scenario

    cls = cls or Scenario
    yield cls
    for info in cls.model_fields.values():
        tp = _unwrap(info.annotation)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            yield from _models(tp)


def test_every_integer_field_has_a_size_limit():
    """A new integer field must say how large it may be (simulator.scenario.limits.FIELD_MAX)."""
    from simulator.scenario.limits import FIELD_MAX

    ints = [path for path, tp, _ in _schema_fields() if tp is int]
    assert len(ints) > 30
    assert not [path for path in ints if path not in FIELD_MAX]


EVERY_SECTION = {  # between them, every section of the schema
    "train": MOE.replace("kind: counts, counts_file: c.txt", "kind: zipf") + """\
faults: {straggler: {gpu: 3, slowdown: 1.5}, degraded_link: {gpu: 1, tier: scaleout, fraction: 0.5},
         failed_node: {domain: 0, checkpoint_interval_s: 1 h}, jitter: {cv: 0.1}}
""",
    "serve": SERVE.replace("trace: t.csv, rate: 5", "rate: 5, count: 4"),
}


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "true", "1e400"])
def test_every_float_field_refuses_infinity_nan_and_booleans(tmp_path, value):
    """Every float field of the schema, set to `value` from YAML, is one line naming it."""
    from simulator.scenario.base import ScenarioError
    from simulator.scenario.loader import load_scenario

    assert all(m.model_config.get("allow_inf_nan") is False for m in _models())
    floats = [path.replace("<key>", "gemm" if "efficiency" in path else "bf16")
              for path, tp, _ in _schema_fields() if tp is float]
    assert len(floats) > 15
    for kind, text in EVERY_SECTION.items():
        (tmp_path / f"{kind}.yaml").write_text(text)
    for path in floats:
        kind = "serve" if path.startswith(("workload.arrivals", "workload.slo")) else "train"
        with pytest.raises(ScenarioError) as err:
            load_scenario(tmp_path / f"{kind}.yaml", [f"{path}={value}"])
        assert f": {path}: " in str(err.value) and "\n" not in str(err.value), (path, str(err.value))
