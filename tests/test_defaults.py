"""scenario.defaults: what the `auto` settings of a training scenario resolve to on each generation. Ampere takes
Megatron-LM's 2021-2022 settings (its published runs: the loss in PyTorch ops, a separate gradient-accumulation pass,
the gradient reduction after the last backward); Hopper and Blackwell Megatron-Core's; an explicit value is kept
everywhere, and the cost model reads the resolved value (a step with auto equals the step with what it resolves to)."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator import load_scenario, simulate

ROOT = Path(__file__).resolve().parents[1]
DENSE = ROOT / "scenarios" / "gpt3-175b-selene.yaml"


def _on(preset: str, *sets: str, path: Path = DENSE):
    return load_scenario(path, [f"topology={{preset: {preset}, domains: 8}}", *sets])


@pytest.mark.parametrize("preset, era", [("dgx-a100-superpod", True), ("dgx-h100-superpod", False),
                                         ("hgx-b200", False)])
def test_ampere_runs_megatron_lm_of_2021(preset, era):
    scn = _on(preset)
    assert scn.cross_entropy == ("unfused" if era else "fused")
    assert scn.grad_accumulation_fusion is (not era)
    assert scn.overlap_grad_reduce is (not era)


@pytest.mark.parametrize("preset", ["dgx-a100-superpod", "dgx-h100-superpod"])
def test_explicit_values_are_kept(preset):
    scn = _on(preset, "workload.cross_entropy=fused", "workload.grad_accumulation_fusion=true",
              "layout.overlap_grad_reduce=true")
    assert (scn.cross_entropy, scn.grad_accumulation_fusion, scn.overlap_grad_reduce) == ("fused", True, True)
    scn = _on(preset, "workload.cross_entropy=unfused", "workload.grad_accumulation_fusion=false",
              "layout.overlap_grad_reduce=false")
    assert (scn.cross_entropy, scn.grad_accumulation_fusion, scn.overlap_grad_reduce) == ("unfused", False, False)


def test_an_moe_model_keeps_fused_accumulation_on_ampere():
    """The separate accumulation pass is priced for dense models only: auto leaves an MoE model's fused."""
    scn = _on("dgx-a100-superpod", "model=mixtral-8x7b", "layout.ep=8", "layout.tp=1", "layout.pp=1",
              "layout.chunks=1", "layout.schedule=1f1b", "layout.sequence_parallel=false")
    assert scn.grad_accumulation_fusion is True and scn.cross_entropy == "unfused"


def test_auto_step_is_the_explicit_step_it_resolves_to():
    """On A100 the default step equals the one with the 2021 settings written out, and is longer than Megatron-Core's
    (the accumulation pass, the unfused loss and the reduction after the last backward all add time)."""
    auto = simulate(_on("dgx-a100-superpod"))
    old = simulate(_on("dgx-a100-superpod", "workload.cross_entropy=unfused", "workload.grad_accumulation_fusion=false",
                       "layout.overlap_grad_reduce=false"))
    new = simulate(_on("dgx-a100-superpod", "workload.cross_entropy=fused", "workload.grad_accumulation_fusion=true",
                       "layout.overlap_grad_reduce=true"))
    assert auto.step_time_s == old.step_time_s > new.step_time_s


def test_serving_resolves_to_the_training_free_values():
    scn = load_scenario(ROOT / "scenarios" / "serve-llama3-70b-h100.yaml",
                        ["topology={preset: dgx-a100-superpod, domains: 1}"])
    assert scn.cross_entropy == "fused" and scn.grad_accumulation_fusion is True and scn.tp_overlap is False


def test_the_report_names_what_auto_chose():
    """extra["defaults"] holds the settings left to auto with the values priced; the table shows a row where auto gave
    the 2021 settings (A100), none on H100 or where the scenario names them."""
    from rich.console import Console

    from simulator.output.render import print_table

    def shown(report) -> str:
        console = Console(record=True, width=200)
        print_table(report, console)
        return console.export_text()

    a100, h100 = simulate(_on("dgx-a100-superpod")), simulate(_on("dgx-h100-superpod"))
    assert a100.extra["defaults"] == {"workload.cross_entropy": "unfused", "workload.grad_accumulation_fusion": False,
                                      "layout.overlap_grad_reduce": False, "layout.tp_overlap": False}
    assert h100.extra["defaults"]["layout.tp_overlap"] is True  # sequence parallelism on Hopper
    named = simulate(_on("dgx-a100-superpod", "workload.cross_entropy=unfused",
                         "workload.grad_accumulation_fusion=false", "layout.overlap_grad_reduce=false",
                         "layout.tp_overlap=false"))
    assert named.extra["defaults"] == {} and named.step_time_s == a100.step_time_s
    assert "Megatron-LM's 2021-2022 settings" in shown(a100)
    assert "defaults " not in shown(h100) and "defaults " not in shown(named)


@pytest.mark.parametrize("preset, tp, on", [("dgx-h100-superpod", 8, True), ("gb200-nvl72", 4, True),
                                            ("dgx-h100-superpod", 1, False), ("dgx-a100-superpod", 8, False)])
def test_sequence_parallel_auto_follows_the_generation(preset, tp, on):
    """sequence_parallel auto: on at tp > 1 in Hopper and Blackwell training (every such run of the development set),
    off at tp 1, on Ampere (Megatron-LM of 2021) and in serving; resolved in the Scenario (the cost model reads a
    bool); an explicit value is kept."""
    sets = [f"layout.tp={tp}", "layout.pp=1", "layout.chunks=1", "layout.schedule=1f1b", "model=llama3-8b",
            "layout.sequence_parallel=auto", "workload.global_batch=576"]
    assert _on(preset, *sets).layout.sequence_parallel is on
    assert _on(preset, *sets, "layout.sequence_parallel=false").layout.sequence_parallel is False
    serve = load_scenario(ROOT / "scenarios" / "serve-llama3-70b-h100.yaml", ["layout.sequence_parallel=auto"])
    assert serve.layout.tp > 1 and serve.layout.sequence_parallel is False


def test_tp_overlap_true_needs_sequence_parallel_even_when_auto_leaves_it_off():
    """On A100 auto leaves sequence parallelism off: an explicit tp_overlap true is then refused in one line."""
    from simulator import ScenarioError

    with pytest.raises(ScenarioError, match="layout.tp_overlap: true overlaps sequence parallelism"):
        _on("dgx-a100-superpod", "layout.sequence_parallel=auto", "layout.tp_overlap=true")


MOE = ["model=qwen3-30b-a3b", "layout.tp=1", "layout.pp=1", "layout.chunks=1", "layout.schedule=1f1b",
       "layout.sequence_parallel=false", "workload.global_batch=576", "workload.seq_len=4096"]


@pytest.mark.parametrize("preset, ep, sets, backend", [
    ("dgx-h100-superpod", 16, [], "deepep"),  # 16 consecutive ranks: two 8-GPU nodes
    ("dgx-h100-superpod", 8, [], "nccl"),  # inside one node
    ("hgx-b200", 16, ["layout.order=[tp, cp, dp, ep, pp]"], "deepep"),  # ep outermost but pp: one GPU a node
    ("gb200-nvl72", 8, [], "hybridep"),  # inside one NVL72 rack
    ("gb200-nvl72", 16, [], "deepep"),  # 72 = 4.5 x 16: the fifth group straddles two racks
    ("dgx-a100-superpod", 16, [], "nccl"),  # DeepEP and HybridEP need Hopper's TMA
    ("dgx-h100-superpod", 16, ["layout.ep_dispatch=flat"], "nccl"),  # written flat: one copy an expert
    ("dgx-h100-superpod", 16, ["layout.ep_backend=hybridep"], "hybridep"),  # written: kept
])
def test_ep_backend_auto_follows_where_the_ep_group_lies(preset, ep, sets, backend):
    """ep_backend auto: what the development set's Hopper and Blackwell MoE runs ran where their EP group lay (DeepEP
    across NVLink domains, HybridEP inside NVL72 racks, NCCL inside 8-GPU nodes); NCCL on Ampere and where the
    scenario writes flat copies; an explicit value is kept."""
    gpus = {"gb200-nvl72": 72}.get(preset, 8) * 8
    scn = _on(preset, *MOE, f"layout.ep={ep}", f"workload.global_batch={gpus}", *sets)
    assert scn.ep_backend == backend


def test_serving_and_dense_models_resolve_to_nccl():
    serve = load_scenario(ROOT / "scenarios" / "deepseek-v3-serve-h800.yaml")
    assert serve.layout.ep > 8 and serve.layout.ep_backend == "auto" and serve.ep_backend == "nccl"
    assert _on("gb200-nvl72", "workload.global_batch=576").ep_backend == "nccl"


def test_auto_ep_backend_prices_what_it_resolves_to_and_the_report_names_it():
    """A step with auto equals the step with DeepEP written (16 ranks over two H100 nodes) and is shorter than NCCL's
    (one copy a token and rank at DeepEP's measured rates, not one an expert); the report lists the default and its
    layout row names the kernels."""
    sets = [*MOE, "layout.ep=16", "workload.global_batch=64", "topology={preset: dgx-h100-superpod, domains: 2}"]
    auto, deepep, nccl = (simulate(load_scenario(DENSE, [*sets, *more])) for more in
                          ([], ["layout.ep_backend=deepep"], ["layout.ep_backend=nccl"]))
    assert auto.step_time_s == deepep.step_time_s < nccl.step_time_s
    assert auto.extra["defaults"]["layout.ep_backend"] == "deepep" and "layout.ep_backend" not in nccl.extra["defaults"]
    assert auto.layout["ep_backend"] == "deepep" and nccl.layout["ep_backend"] == "nccl"
