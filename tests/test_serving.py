"""Request-level serving: latencies against step costs, saturation, conservation, policies, outputs."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from rich.console import Console

from simulator import ScenarioError, load_scenario, run
from simulator.cost.kv_cache import kv_bytes_per_token
from simulator.output.render import print_table, to_csv, to_json
from simulator.output.trace import chrome_trace
from simulator.serving.report import ServeReport, request_latencies
from simulator.serving.requests import make_requests
from simulator.serving.steps import step_costs

H100 = {"preset": "dgx-h100-superpod", "domains": 1}


@pytest.fixture
def serve(tmp_path):
    """serve(workload overrides, layout=..., topology=..., files={name: text}) -> Scenario (Llama 3 70B)."""
    counter = iter(range(10**6))

    def make(layout=None, topology=None, files=None, **workload):
        for name, text in (files or {}).items():
            (tmp_path / name).write_text(text)
        raw = {"model": "llama3-70b", "topology": topology or H100,
               "workload": {"kind": "serve", "prompt_len": 1024, "output_len": 64, "batch": 64, **workload},
               "layout": layout or {"tp": 8}}
        path = tmp_path / f"serve{next(counter)}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return load_scenario(path)

    return make


def test_low_load_ttft_is_prefill_and_tpot_is_decode_step(serve):
    scn = serve(arrivals={"rate": 0.01, "count": 20, "seed": 1})
    report = run(scn).report
    costs = step_costs(scn)
    decode = np.mean([costs.decode_step(1, 1024 + j) for j in range(63)])
    assert report.ttft_s["p50"] == pytest.approx(costs.prefill(1024), rel=0.01)
    assert report.tpot_s["p50"] == pytest.approx(decode, rel=0.01)
    assert report.e2e_latency_s["p50"] == pytest.approx(costs.prefill(1024) + 63 * decode, rel=0.01)


def test_low_load_with_pipeline_stages(serve):
    scn = serve(arrivals={"rate": 0.01, "count": 10}, layout={"tp": 4, "pp": 2})
    report = run(scn).report
    costs = step_costs(scn)
    assert report.ttft_s["p50"] == pytest.approx(costs.prefill(1024), rel=0.01)
    assert report.tpot_s["p50"] == pytest.approx(costs.decode_step(1, 1056), rel=0.01)


def _implied_capacity(scn) -> float:
    """Output tokens/s of a replica that keeps `batch` requests running: a cycle prefills `batch` prompts
    and decodes output - 1 tokens for each."""
    w = scn.workload
    costs = step_costs(scn)
    b, p, o = w.batch, w.prompt_len, w.output_len
    cycle = costs.prefill(p, b) + sum(costs.decode_step(b, p + j) for j in range(o - 1))
    return b * o / cycle


def _steady_output_rate(tl) -> float:
    """Tokens emitted per second of the steps run in the middle half of the run (ramp-up and drain out)."""
    st = tl.steps
    mid = (st["start"] > 0.25 * tl.end_time) & (st["start"] < 0.75 * tl.end_time)
    return st["sampled"][mid].sum() / (st["end"][mid] - st["start"][mid]).sum()


def test_throughput_saturates_where_step_times_say_and_p99_grows(serve):
    """Deep overload keeps the batch full and admits whole batches: throughput is the cycle's. Nearer
    capacity, prefill-first scheduling admits a few requests at a time and re-reads the weights for each
    small prefill, so throughput sits a few percent below. Latency grows with the length of the run."""
    base = dict(prompt_len=128, output_len=256, batch=32, max_batch_tokens=4096)
    capacity = _implied_capacity(serve(**base))  # output tokens/s
    runs = {}
    for load, count in ((0.5, 400), (0.9, 400), (1.5, 400), (1.5, 800), (10.0, 800), (20.0, 800)):
        scn = serve(arrivals={"rate": load * capacity / 256, "count": count, "seed": 3}, **base)
        runs[load, count] = run(scn)
    steady = {k: _steady_output_rate(r.timeline) for k, r in runs.items()}
    assert steady[10.0, 800] == pytest.approx(capacity, rel=0.02)
    assert steady[20.0, 800] == pytest.approx(capacity, rel=0.02)
    assert 0.9 * capacity < steady[1.5, 800] <= 1.001 * capacity
    p99 = {k: r.report.e2e_latency_s["p99"] for k, r in runs.items()}
    assert p99[0.5, 400] < p99[0.9, 400] < p99[1.5, 400]
    assert p99[1.5, 800] > 1.6 * p99[1.5, 400]  # over capacity the queue, and p99, grow with the run
    assert p99[20.0, 800] > p99[10.0, 800] > p99[1.5, 800]
    below = runs[0.5, 400].report
    assert below.output_tokens_per_s == pytest.approx(0.5 * capacity, rel=0.15)  # below capacity: keeps up


def test_requests_are_conserved_with_rejections(serve):
    rows = ["arrival_s,prompt_len,output_len"] + [f"{0.05 * i},{2048 if i % 7 else 3_000_000},{32}"
                                                  for i in range(60)]
    scn = serve(arrivals={"trace": "trace.csv"}, files={"trace.csv": "\n".join(rows) + "\n"})
    report = run(scn).report
    too_long = sum(1 for i in range(60) if i % 7 == 0)
    assert report.rejected == too_long
    assert report.completed + report.rejected == report.requests == 60


@pytest.mark.parametrize("admission", ["reserve", "preempt"])
@pytest.mark.parametrize("chunked", [False, True])
def test_full_cache_waits_or_preempts_and_every_request_completes(serve, admission, chunked):
    """20 GB H100s: ~46K KV tokens a replica, 64 running requests would need 98K."""
    topo = {"preset": "dgx-h100-superpod", "domains": 1, "device": {"preset": "h100-sxm", "hbm": "20 GB"}}
    scn = serve(topology=topo, prompt_len=1024, output_len=512, admission=admission, chunked_prefill=chunked,
                max_batch_tokens=2048, arrivals={"rate": 50.0, "count": 150, "seed": 2})
    res = run(scn)
    r, tl = res.report, res.timeline
    assert r.completed == r.requests == 150 and r.rejected == 0
    assert r.kv_cache_tokens_capacity < 64 * 1536
    assert tl.kv_tokens_peak.max() <= r.kv_cache_tokens_capacity
    assert r.fits_in_memory and r.memory_bytes["total"] <= r.memory_bytes["capacity"]
    assert (r.preemptions > 0) == (admission == "preempt")
    lat = request_latencies(tl)
    assert np.all(lat["ttft"] > 0) and np.all(lat["e2e"] >= lat["ttft"])


@pytest.mark.parametrize("admission", ["reserve", "preempt"])
def test_pipeline_engines_share_the_cache_and_conserve_requests(serve, admission):
    """PP2: two virtual engines take turns on the stages and draw on one KV cache of the replica."""
    topo = {"preset": "dgx-h100-superpod", "domains": 1, "device": {"preset": "h100-sxm", "hbm": "20 GB"}}
    scn = serve(topology=topo, layout={"tp": 4, "pp": 2}, prompt_len=1024, output_len=512, admission=admission,
                arrivals={"rate": 50.0, "count": 120, "seed": 5})
    res = run(scn)
    r, st = res.report, res.timeline.steps
    assert r.completed + r.rejected == r.requests == 120 and r.rejected == 0
    assert set(st["engine"]) == {0, 1}
    assert res.timeline.kv_tokens_peak.max() <= r.kv_cache_tokens_capacity + 2  # + a token per engine in flight
    # a stage runs one engine's step at a time: each engine's steps never overlap themselves
    for e in (0, 1):
        mine = np.argsort(st["start"][st["engine"] == e])
        start, end = st["start"][st["engine"] == e][mine], st["end"][st["engine"] == e][mine]
        assert np.all(start[1:] >= end[:-1] - 1e-12)


def test_offline_batch_by_default(serve):
    res = run(serve(batch=16))
    assert res.report.requests == res.report.completed == 16
    # 16 prompts at t = 0; max_batch_tokens 8192 prefills 8 of 1024 tokens a step
    costs = step_costs(serve(batch=16))
    ttft = request_latencies(res.timeline)["ttft"]
    assert ttft.min() == pytest.approx(costs.prefill(1024, 8), rel=1e-9)
    assert ttft.max() == pytest.approx(2 * costs.prefill(1024, 8), rel=1e-9)


def test_chunked_prefill_protects_tpot(serve):
    """Sarathi-Serve: in prefill-first scheduling a decode waits whole 8K-token prefills; with chunks no step holds
    more than max_num_tokens tokens, so no TPOT exceeds the step of every running decode plus one 512-token chunk at
    the prompt's end (the cost model's, a bound: 64 sequences at 8K context), while prefill-first's p99 does."""
    common = dict(prompt_len=8192, output_len=128, batch=64, arrivals={"rate": 1.5, "count": 120, "seed": 4})
    first = run(serve(**common)).report
    scn = serve(chunked_prefill=True, max_num_tokens=512, **common)
    chunked = run(scn).report
    new, ctx = np.append(np.ones(63), 512.0), np.append(np.full(63, 8192.0 + 128), 8192.0 - 512)
    bound = step_costs(scn).step_time(new, ctx, 63)
    assert chunked.tpot_s["p99"] <= bound < first.tpot_s["p99"]
    assert chunked.completed == first.completed == 120


def test_disaggregated_pools_move_kv_over_the_fabric(serve):
    topo = {"preset": "dgx-h100-superpod", "domains": 2}
    scn = serve(topology=topo, layout={"tp": 8, "dp": 2}, disaggregated={"prefill_replicas": 1},
                arrivals={"rate": 0.01, "count": 12, "seed": 0})
    res = run(scn)
    r, tl = res.report, res.timeline
    costs = step_costs(scn)
    assert r.completed == 12 and len(tl.transfers["request"]) == 12
    per_request = 1024 * kv_bytes_per_token(scn.model, "bf16")  # 8 KV heads over 8 ranks: split exactly
    np.testing.assert_allclose(tl.transfers["bytes"], per_request)
    assert r.traffic_bytes["scaleout"] == pytest.approx(12 * per_request)  # the pools sit in two nodes
    assert r.ttft_s["p50"] == pytest.approx(costs.prefill(1024), rel=0.01)
    transfer = float(np.median(tl.transfers["end"] - tl.transfers["start"]))
    # TPOT spans the KV transfer and 63 decode steps
    decode = np.mean([costs.decode_step(1, 1024 + j) for j in range(63)])
    assert r.tpot_s["p50"] == pytest.approx((transfer + 63 * decode) / 63, rel=0.01)
    assert set(tl.roles) == {"prefill", "decode"}


def test_same_seed_same_bytes(serve):
    scn = serve(arrivals={"rate": 20.0, "count": 300, "seed": 7}, chunked_prefill=True)
    assert to_json(run(scn).report) == to_json(run(scn).report)
    other = serve(arrivals={"rate": 20.0, "count": 300, "seed": 8}, chunked_prefill=True)
    assert to_json(run(other).report) != to_json(run(scn).report)


def test_slo(serve):
    loose = run(serve(arrivals={"rate": 1.0, "count": 30}, slo={"ttft": "2 s", "tpot": "100 ms"})).report
    tight = run(serve(arrivals={"rate": 1.0, "count": 30}, slo={"ttft": "1 ms"})).report
    assert loose.slo_met is True and loose.slo_attainment == 1.0
    assert tight.slo_met is False and tight.slo_attainment == 0.0
    assert run(serve(arrivals={"rate": 1.0, "count": 5})).report.slo_met is None


def test_report_renders_as_table_json_csv_and_trace(serve):
    res = run(serve(arrivals={"rate": 5.0, "count": 40}))
    report = res.report
    assert isinstance(report, ServeReport)
    data = json.loads(to_json(report))
    for key in ("scenario", "kind", "gpus", "ttft_s", "tpot_s", "e2e_latency_s", "requests_per_s",
                "output_tokens_per_s", "tokens_per_s", "tokens_per_s_per_gpu", "kv_cache_bytes_peak",
                "memory_bytes", "fits_in_memory", "slo_met", "rejected", "completed", "cost_per_million_tokens",
                "mfu"):
        assert key in data
    assert set(data["ttft_s"]) >= {"p50", "p90", "p99"} and data["kind"] == "serve"
    header, row = to_csv([report]).splitlines()
    assert "ttft_s.p99" in header.split(",") and len(row.split(",")) == len(header.split(","))
    buf = io.StringIO()
    print_table(report, Console(file=buf, width=120))
    assert "TTFT" in buf.getvalue()
    trace = json.loads(chrome_trace(res.plan, res.timeline))
    slices = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert len(slices) == len(res.timeline.steps["start"]) == report.extra["steps"]
    assert {e["name"] for e in slices} <= {"prefill", "decode", "mixed"}


def test_cost_per_million_output_tokens(serve):
    r = run(serve(arrivals={"rate": 5.0, "count": 50})).report
    tokens = 50 * 64
    assert r.cost_per_million_tokens == pytest.approx(8 * 2.0 / 3600 * r.makespan_s / tokens * 1e6)
    assert 0 < r.mfu < 1


@pytest.mark.parametrize("override, field", [
    (["workload.arrivals={count: 10}"], "workload.arrivals.rate"),
    (["workload.disaggregated={prefill_replicas: 1}"], "workload.disaggregated.prefill_replicas"),
    (["layout.cp=2", "layout.tp=4"], "layout.cp"),
    (["workload.kv_dtype=fp4"], "workload.kv_dtype"),
])
def test_bad_serve_fields_are_one_line(serve, override, field):
    scn = serve()
    with pytest.raises(ScenarioError) as err:
        load_scenario(scn.source, override)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(scn.source) and field in msg


@pytest.mark.parametrize("text, detail", [
    ("prompt,output_len\n1,2\n", "lacks column(s) prompt_len"),
    ("prompt_len,output_len\n12,x\n", "line 2"),
    ("prompt_len,output_len\n12,4\n", "need workload.arrivals.rate"),
])
def test_bad_trace_is_one_line(serve, text, detail):
    scn = serve(arrivals={"trace": "t.csv"}, files={"t.csv": text})
    with pytest.raises(ScenarioError) as err:
        run(scn)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(scn.source) and "workload.arrivals.trace" in msg and detail in msg


def test_missing_trace_file(serve):
    scn = serve(arrivals={"trace": "nowhere.csv"})
    with pytest.raises(ScenarioError, match="workload.arrivals.trace: cannot read"):
        run(scn)


def test_a_million_requests_are_within_the_size_limits():
    """Issue 17's workload, a million Llama 3 70B requests on 8 H100 at 12 a second, passes the size limits: its
    decode steps are estimated at about 3.2 million (the benchmark simulates 3.4 million; the estimate counts the
    share of each replica's time the prompts' prefill takes) against 4,194,304. At a tenth of the rate each step
    runs about a tenth of the sequences: ten times the steps, refused in one line."""
    path = Path(__file__).resolve().parents[1] / "scenarios" / "serve-llama3-70b-h100.yaml"
    assert len(make_requests(load_scenario(path, ["workload.arrivals.count=1000000"]))) == 1_000_000
    with pytest.raises(ScenarioError, match=r"sequences a step at 1\.2 arrivals/s a replica: about [\d,]+ is over"):
        make_requests(load_scenario(path, ["workload.arrivals.count=1000000", "workload.arrivals.rate=1.2"]))
