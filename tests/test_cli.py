"""The command line: a real report, bad input as one line with exit status 2, determinism."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from simulator.cli import app

ROOT = Path(__file__).resolve().parents[1]
GOOD = ROOT / "scenarios" / "gpt3-175b-selene.yaml"
runner = CliRunner()

VALID = """\
model: gpt3-175b
topology: {preset: dgx-a100-superpod, domains: 8}
workload: {kind: train, seq_len: 2048, global_batch: 64, micro_batch: 1, dtype: fp16}
layout: {tp: 8, pp: 8, schedule: 1f1b}
"""

# (id, scenario text or VALID with --set overrides, field path the message must name)
BAD = [
    ("unknown-top-key", VALID + "colour: red\n", "colour"),
    ("unknown-layout-key", VALID.replace("schedule: 1f1b", "schedule: 1f1b, foo: 1"), "layout.foo"),
    ("unknown-model-key", VALID.replace("model: gpt3-175b", "model: {preset: gpt3-175b, depth: 3}"), "model.depth"),
    ("wrong-type", VALID.replace("seq_len: 2048", "seq_len: long"), "workload.seq_len"),
    ("negative", VALID.replace("global_batch: 64", "global_batch: -64"), "workload.global_batch"),
    ("zero-tp", VALID.replace("tp: 8", "tp: 0"), "layout.tp"),
    ("mesh-mismatch", VALID.replace("dgx-a100-superpod, domains: 8", "dgx-a100-superpod, domains: 8}\n#")
     .replace("layout: {tp: 8, pp: 8, schedule: 1f1b}", "layout: {tp: 8, pp: 8, dp: 2, schedule: 1f1b}"), "layout"),
    ("dp-auto-indivisible", VALID.replace("pp: 8", "pp: 3"), "layout"),
    ("heads-tp", VALID.replace("tp: 8, pp: 8", "tp: 64, pp: 1"), "layout.tp"),
    ("layers-pp", VALID.replace("pp: 8", "pp: 8, chunks: 1").replace("domains: 8", "domains: 7")
     .replace("pp: 8, chunks: 1", "pp: 7, chunks: 1"), "layout"),
    ("interleaved-m-pp", VALID.replace("global_batch: 64", "global_batch: 12")
     .replace("schedule: 1f1b", "schedule: interleaved, chunks: 2"), "layout"),
    ("batch-not-divisible", VALID.replace("global_batch: 64, micro_batch: 1", "global_batch: 63, micro_batch: 2"),
     "workload.global_batch"),
    ("stage-layers-sum", VALID.replace("schedule: 1f1b", "schedule: 1f1b, stage_layers: [12,12,12,12,12,12,12,11]"),
     "layout.stage_layers"),
    ("stage-layers-len", VALID.replace("schedule: 1f1b", "schedule: 1f1b, stage_layers: [48, 48]"),
     "layout.stage_layers"),
    ("bad-schedule", VALID.replace("schedule: 1f1b", "schedule: 2f2b"), "layout.schedule"),
    ("bad-recompute", VALID.replace("dtype: fp16", "dtype: fp16, recompute: some"), "workload.recompute"),
    ("dtype-not-on-device", VALID.replace("dtype: fp16", "dtype: fp8"), "workload.dtype"),
    ("bad-unit", VALID.replace("domains: 8}", "domains: 8, domain: {gpus: 8, bandwidth: 300 parsecs}}"),
     "topology.domain.bandwidth"),
    # a bare number in a dimensional field has no unit (it used to be read as SI: 300 B/s)
    ("bare-bandwidth", VALID.replace("domains: 8}", "domains: 8, domain: {gpus: 8, bandwidth: 300}}"),
     "topology.domain.bandwidth: a bare number has no unit; give a bandwidth like '900 GB/s' (units: B/s"),
    ("bare-number-string", VALID.replace("domains: 8}", "domains: 8, scaleout: {nic_bandwidth: 25e9}}"),
     "topology.scaleout.nic_bandwidth: a bare number has no unit"),
    ("bare-latency", VALID.replace("domains: 8}", "domains: 8, domain: {latency: 2}}"),
     "topology.domain.latency: a bare number has no unit; give a time like '2 us' (units: ns, us"),
    ("bare-hbm", VALID.replace("domains: 8}", "domains: 8, device: {preset: a100-80gb, hbm: 85899345920}}"),
     "topology.device.hbm: a bare number has no unit; give a size like '80 GiB' (units: B, kB, KiB"),
    ("bare-flops",
     VALID.replace("domains: 8}", "domains: 8, device: {preset: a100-80gb, peak_flops: {fp16: 3.12e14}}}"),
     "topology.device.peak_flops.fp16: a bare number has no unit; give a FLOP rate like '312 TFLOP/s'"),
    ("unknown-model-preset", VALID.replace("gpt3-175b", "gpt-9"), "model"),
    ("unknown-topology-preset", VALID.replace("dgx-a100-superpod", "dgx-z9000"), "topology"),
    ("yaml-syntax", VALID + "layout: [unclosed\n", ""),
    ("bad-order", VALID.replace("schedule: 1f1b", "schedule: 1f1b, order: [tp, tp, dp, pp, cp]"), "layout.order"),
    ("zero-stage", VALID.replace("schedule: 1f1b", "schedule: 1f1b, zero: 4"), "layout.zero"),
    ("ep-dense", VALID.replace("schedule: 1f1b", "schedule: 1f1b, ep: 2"), "layout.ep"),
]


def _invoke(tmp_path: Path, text: str, *extra: str):
    scenario = tmp_path / "bad.yaml"
    scenario.write_text(text)
    out = tmp_path / "report.json"
    result = runner.invoke(app, ["run", str(scenario), "--json", str(out), *extra])
    return result, out


def test_valid_scenario_writes_a_report(tmp_path):
    result, out = _invoke(tmp_path, VALID)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    for key in ("scenario", "kind", "gpus", "step_time_s", "tokens_per_s", "tokens_per_s_per_gpu", "mfu", "hfu",
                "bubble_fraction", "exposed_comm_s", "memory_bytes", "fits_in_memory", "traffic_bytes",
                "busiest_link", "cost_per_million_tokens"):
        assert key in report
    assert set(report["exposed_comm_s"]) == {"tp", "pp", "dp", "ep", "cp"}
    assert {"weights", "gradients", "optimizer", "activations", "kv_cache", "total", "capacity"} <= set(
        report["memory_bytes"])


@pytest.mark.parametrize("text, field", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_exit_2_no_file(tmp_path, text, field):
    result, out = _invoke(tmp_path, text)
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert "\n" not in message and "Traceback" not in message
    assert "bad.yaml" in message
    assert field in message
    assert not out.exists()


def test_bad_override_is_one_line(tmp_path):
    result, out = _invoke(tmp_path, VALID, "--set", "layout.pp=5")
    assert result.exit_code == 2
    assert "\n" not in result.stderr.strip() and not out.exists()


@pytest.mark.parametrize("override, field", [
    ("topology.domain.bandwidth=300", "topology.domain.bandwidth"),
    ("topology.domain.latency=0", "topology.domain.latency"),
    ("faults={failed_node: {domain: 1, checkpoint_interval_s: 1800}}", "faults.failed_node.checkpoint_interval_s"),
])
def test_bare_number_override_needs_a_unit(tmp_path, override, field):
    """`--set topology.domain.bandwidth=300` used to simulate a 300 B/s NVLink (a 1.45e9 s step, exit 0)."""
    result, out = _invoke(tmp_path, VALID, "--set", override)
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.startswith(f"simrack: {tmp_path / 'bad.yaml'}: {field}: a bare number has no unit")
    assert "\n" not in message and not out.exists()
    ok, _ = _invoke(tmp_path, VALID, "--set", override.replace("300", "300 GB/s").replace("=0", "=0 s")
                    .replace("1800", "30 min"), "-q")
    assert ok.exit_code == 0, ok.output


def test_missing_file(tmp_path):
    result = runner.invoke(app, ["run", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "nope.yaml" in result.stderr and "\n" not in result.stderr.strip()


SMALL_MOE_SERVE = [ROOT / "scenarios" / "deepseek-v3-serve-h800.yaml", "--set", "workload.arrivals.count=300"]


@pytest.mark.parametrize("args", [[GOOD], [ROOT / "scenarios" / "serve-llama3-70b-h100.yaml"], SMALL_MOE_SERVE],
                         ids=["train", "serve", "moe-serve"])
def test_same_scenario_gives_identical_json(tmp_path, args):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for out in (a, b):
        assert runner.invoke(app, ["run", *map(str, args), "--json", str(out), "-q"]).exit_code == 0
    assert a.read_bytes() == b.read_bytes()


def test_another_arrival_seed_changes_only_what_is_random(tmp_path):
    """Serving: a different arrivals seed moves the latencies, not the step costs or the memory."""
    reports = []
    for seed in (0, 1):
        out = tmp_path / f"{seed}.json"
        args = [*map(str, SMALL_MOE_SERVE), "--set", f"workload.arrivals.seed={seed}", "--json", str(out), "-q"]
        assert runner.invoke(app, ["run", *args]).exit_code == 0
        reports.append(json.loads(out.read_text()))
    a, b = reports
    assert a["ttft_s"] != b["ttft_s"]
    for key in ("prefill_s", "decode_step_s", "kv_cache_tokens_capacity", "gpus", "layout"):
        assert a[key] == b[key], key
    assert a["memory_bytes"]["weights"] == b["memory_bytes"]["weights"]


def test_console_script_runs_as_a_process(tmp_path):
    """The installed entry point, in a real process: table on stdout, trace and CSV written."""
    trace, csv = tmp_path / "t.json", tmp_path / "r.csv"
    done = subprocess.run([sys.executable, "-m", "simulator.cli", "run", str(GOOD), "--trace", str(trace),
                           "--csv", str(csv)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "step time" in done.stdout
    events = json.loads(trace.read_text())["traceEvents"]
    assert {e["cat"] for e in events if e.get("ph") == "X"} >= {"forward", "backward", "optimizer"}
    assert csv.read_text().splitlines()[0].startswith("scenario")


def test_schedule_command_prints_grid(tmp_path):
    result = runner.invoke(app, ["schedule", str(GOOD), "--set", "layout.schedule=1f1b",
                                 "--set", "layout.chunks=1"])
    assert result.exit_code == 0
    assert len(result.output.strip().splitlines()) == 8


def test_schedule_of_a_serving_scenario_is_one_line():
    serve = ROOT / "scenarios" / "serve-llama3-70b-h100.yaml"
    result = runner.invoke(app, ["schedule", str(serve)])
    assert result.exit_code == 2 and "workload.kind" in result.stderr and "\n" not in result.stderr.strip()
