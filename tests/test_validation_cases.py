"""The development set of `simrack validate` (simulator/data/validation/cases.yml) agrees with the published
figures it cites (simulator/data/published.yaml): every case id exists, every figure is transcribed as the
case prints it, every derived value is the source's own arithmetic, every scenario loads and states the
published configuration where the source gives one. simrack's errors on these cases are not asserted
here (the physics is being rewritten); tests/validation/test_korthikanti.py keeps the calibration's bar.
"""

from __future__ import annotations

from collections import Counter

import pytest
import yaml

from simulator import load_scenario
from simulator.output.validation import DEFAULT_DIR, GROUPS, KINDS, load_cases, published_figure

CASES = load_cases()
BY_SCENARIO = {c.scenario.name: c for c in CASES}


def _ids(cases):
    return [c.scenario.name for c in cases]


@pytest.fixture(scope="module")
def scenarios():
    return {c.scenario.name: load_scenario(c.scenario) for c in CASES}


def test_every_scenario_file_is_a_case_once():
    assert Counter(_ids(CASES)) == Counter({p.name: 1 for p in DEFAULT_DIR.glob("*.yaml")})
    assert len({c.label for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_case_agrees_with_published(case, reference):
    published = reference(case.case)
    figure = published_figure(published, case.reported)
    assert float(figure) == pytest.approx(case.source_value if case.source_value is not None else case.value)
    assert case.verified == published["verified"]
    assert case.group in GROUPS and case.kind in KINDS and case.dtype
    assert case.expressible or case.why


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_scenario_loads_and_is_of_the_case_kind(case, scenarios):
    scn = scenarios[case.scenario.name]
    assert scn.workload.kind == case.kind
    assert (scn.model.moe is not None) == case.moe


def test_groups_follow_the_device():
    generation = {"A100": "ampere", "H100": "hopper", "H200": "hopper", "H800": "hopper", "B200": "blackwell",
                  "GB200": "blackwell", "tpu": "tpu"}
    for c in CASES:
        device = load_scenario(c.scenario).topology.device.name
        assert generation[next(k for k in generation if device.startswith(k))] == c.group, c.label


def test_no_case_is_in_sample():
    """The device model is fitted on kernel measurements only (simulator/data/kernels.yaml): no
    end-to-end figure of the development set sets a parameter."""
    assert not [c.scenario.name for c in CASES if c.fitted]


def test_not_expressible_cases_say_why():
    names = {c.scenario.name for c in CASES if not c.expressible}
    zero3 = {f"megatron2021-t2-zero3-{s}.yaml" for s in ("175b-384", "175b-768", "175b-1536", "530b-640",
                                                          "530b-1120", "530b-2240")}
    assert names == zero3 | {"mlperf-i41-llama2-70b-h200cts.yaml",
                     "deepseek-v3-online-decode.yaml", "palm540b-low-latency-prefill.yaml",
                     "palm540b-low-latency-decode.yaml", "palm540b-throughput-prefill.yaml",
                     "palm540b-throughput-decode.yaml"}
    assert all("fp4" in c.why for c in CASES if c.dtype == "fp4" and not c.expressible)
    assert all(c.expressible for c in CASES if c.dtype == "nvfp4")  # workload.dtype nvfp4 expresses them


# --- derived values: the source's own arithmetic -----------------------------------------------------

S, V = 2048, 51200


def _eq3(batch, layers, hidden, constant=96):
    """Narayanan et al. 2021 Eq. 3 (96: with activation recompute) or Korthikanti et al.'s model FLOP (72)."""
    return constant * batch * S * layers * hidden ** 2 * (1 + S / (6 * hidden) + V / (16 * layers * hidden))


def _table(published, part):
    return [dict(zip(published[part]["columns"], row)) for row in published[part]["rows"]]


def _megatron_t1(published, case):
    (row,) = [r for r in _table(published, "config") if f"params_B={r['params_B']:g}" in case.reported]
    return _eq3(row["global_batch"], row["layers"], row["hidden"]) / (row["gpus"] * case.source_value * 1e12)


def _megatron_t2(published, case):
    (row,) = [r for r in _table(published, "config")
              if f"scheme={r['scheme']},params_B={r['params_B']:g},gpus={r['gpus']}]" in case.reported]
    model = published["config"]["models"]["mtnlg_530b" if row["params_B"] == 529.6 else "gpt3_175b"]
    return _eq3(row["global_batch"], model["layers"], model["hidden"]) / (row["gpus"] * case.source_value * 1e12)


def _korthikanti_2240(published, case):
    # batch 2240 is the scenario's assumption (the abstract gives none); the peak is the paper's 312 TFLOP/s
    return _eq3(2240, 105, 20480, 72) / (published["config"]["gpus"] * 312e12 * case.source_value / 100)


def _llama3(published, case):
    (row,) = [r for r in _table(published, "config") if f"gpus={r['gpus']},cp={r['cp']}]" in case.reported]
    tokens = row["dp"] * row["batch_per_dp"] * row["seq_len"]
    flops = 6 * 405e9 + 12 * 126 * 16384 * row["seq_len"]  # PaLM's MFU definition (Meta's is not stated)
    return tokens * flops / (row["gpus"] * case.source_value * 1e12)


def _mcore_deepseek_v3(published, case):
    """Megatron-Core's num_floating_point_operations for DeepSeek-V3 (no MTP): 3 passes x 2 FLOP a multiply-add."""
    cfg, h, ffn, s = published["config"], 7168, 18432, published["config"]["seq_len"]
    mlp = h * (ffn * 3 * 3 + 2048 * 8 * 3 * 58 + 2048 * 3 * 58)  # 3 dense layers, 58 MoE: routed top-8 and shared
    mla = 1536 * (h + 128 * 192 + 1) + 512 * (h + 128 * 256 + 1) + h * 64 + 128 * 128 * h
    core = s * 61 * (128 * 192 / 2 + 128 * 128 / 2)  # causal: half the score matrix
    per_token = 6 * (mlp + 61 * mla + h * cfg["padded_vocab"] + core)
    assert per_token == pytest.approx(published["derived"]["flop_per_token"], rel=1e-5)
    return case.source_value * 1e12 / per_token


def _mcore_r08(published, case):
    """Megatron-LM's num_floating_point_operations for GPT with a 4h GeLU MLP: 12 B s L h^2 (6 + s/h + V/(2 L h))
    a step (full attention counted), over the row's GPUs at the printed TFLOP/s."""
    (row,) = [r for r in _table(published, "reported") if f"params_B={r['params_B']:g}]" in case.reported]
    s, vocab, h, layers = 4096, 131072, row["hidden"], row["layers"]
    flops = 12 * row["global_batch"] * s * layers * h * h * (6 + s / h + vocab / (2 * layers * h))
    return flops / (row["gpus"] * case.source_value * 1e12)


LONG_SEQUENCE_SHAPES = {"nemo_long_sequence_llama2_7b_h100": (32, 4096, 1.0, 11008, 32000),  # Llama 2 7B
                        "nemo_long_sequence_llama3_8b_b200": (32, 4096, 8 / 32, 14336, 128256)}  # Llama 3 8B
"""Layers, hidden, KV heads over heads, FFN width, vocabulary."""


def _nemo_long_sequence(published, case):
    """NeMo's Llama FLOP count (nemo/utils/flops_formulas.py): L h^2 (12 + 12 kv/a + 18 f/h + 12 s/h + 6 V/(L h))
    a token, attention not halved for the causal mask, over the GPUs of the printed TP x PP x DP x CP (the H100
    table's GPU column; a quarter of the B200 table's, published.yaml says why)."""
    (row,) = [r for r in _table(published, "reported") if f"seq_len_k={r['seq_len_k']}]" in case.reported]
    layers, h, kv, f, vocab = LONG_SEQUENCE_SHAPES[case.case]
    s, gpus = row["seq_len_k"] * 1024, row["tp"] * row["pp"] * row["dp"] * row["cp"]
    per_token = layers * h * h * (12 + 12 * kv + 18 * f / h + 12 * s / h + 6 * vocab / (layers * h))
    return row["global_batch"] * s * per_token / (gpus * case.source_value * 1e12)


DERIVE = {
    "nemo_long_sequence_llama2_7b_h100": _nemo_long_sequence,
    "nemo_long_sequence_llama3_8b_b200": _nemo_long_sequence,
    "mcore_deepseek_v3_gb200_mxfp8": _mcore_deepseek_v3,
    "megatron2021_table1_weak_scaling": _megatron_t1,
    "megatron_core_0_8_weak_scaling_h100": _mcore_r08,
    "megatron2021_table2_ptdp_vs_zero3": _megatron_t2,
    "korthikanti2022_530b_2240gpus": _korthikanti_2240,
    "llama3_405b_table4_pretraining_mfu": _llama3,
    "deepseek_v3_training_config_and_cost": lambda p, c: 1e12 / (c.source_value * 3600),
    "deepseek_v3_r1_online_inference_stats": lambda p, c: c.source_value / 8,  # 8 H800 a node
    "esti2022_palm540b_table2": lambda p, c: c.source_value / 64,  # 64 generated tokens
    "scalingbook_llama2_13b_v5e_decode_table": lambda p, c: c.source_value * 1e-3,
    "scalingbook_llama3_70b_v5e_decode_int8": lambda p, c: c.source_value * 1e-3,
    "scalingbook_30b_v5e_decode_popquiz": lambda p, c: c.source_value * 1e-3,
}
DERIVED = [c for c in CASES if c.source_value is not None]


@pytest.mark.parametrize("case", DERIVED, ids=_ids(DERIVED))
def test_derived_value_is_the_sources_arithmetic(case, reference):
    published = reference(case.case)
    assert case.value == pytest.approx(DERIVE[case.case](published, case), rel=6e-5)  # 5 significant digits


def test_derived_values_match_the_references_own(reference):
    """Where the reference set derived the same figure, it agrees."""
    t1 = reference("megatron2021_table1_weak_scaling")["derived"]["iteration_time_s"]
    for c in CASES:
        if c.case == "megatron2021_table1_weak_scaling":
            params = float(c.reported.split("params_B=")[1].split("]")[0])
            assert c.value == pytest.approx(t1[params], abs=0.006), c.label
    r08 = reference("megatron_core_0_8_weak_scaling_h100")["derived"]["iteration_time_s"]
    for c in CASES:
        if c.case == "megatron_core_0_8_weak_scaling_h100":
            params = yaml.safe_load(c.reported.split("params_B=")[1].split("]")[0])
            assert c.value == pytest.approx(r08[params], abs=1e-3), c.label
    ds = reference("deepseek_v3_training_config_and_cost")["derived"]["tokens_per_s_per_gpu"]
    assert BY_SCENARIO["deepseek-v3-train-2048.yaml"].value == pytest.approx(ds, abs=0.5)


# --- scenarios state the published configurations -----------------------------------------------------

def _shape(scn):
    lay, w = scn.layout, scn.workload
    return {"gpus": scn.gpus, "tp": lay.tp, "pp": lay.pp, "cp": lay.cp, "dp": lay.dp, "global_batch": w.global_batch,
            "micro_batch": w.micro_batch, "seq_len": w.seq_len, "chunks": lay.chunks, "layers": scn.model.layers,
            "hidden": scn.model.hidden, "heads": scn.model.heads}


def test_mcore_r08_weak_scaling_configs(reference, scenarios):
    """Each scenario runs its row's layout and shape, and the row's parameter count (untied embeddings)."""
    published = reference("megatron_core_0_8_weak_scaling_h100")
    for row in _table(published, "reported"):
        scn = scenarios[f"mcore08-h100-gpt-{row['params_B']:g}b.yaml"]
        got = _shape(scn)
        want = {k: row[k] for k in ("gpus", "tp", "pp", "dp", "global_batch", "layers", "hidden", "heads")}
        assert {k: got[k] for k in want} == want
        h, layers = row["hidden"], row["layers"]
        assert 12 * layers * h * h + 2 * 131072 * h == pytest.approx(row["params_B"] * 1e9, rel=0.03)
        assert (scn.workload.seq_len, scn.model.vocab, scn.workload.dtype) == (4096, 131072, "bf16")


def test_megatron_tables_configs(reference, scenarios):
    for row in _table(reference("megatron2021_table1_weak_scaling"), "config"):
        got = _shape(scenarios[f"megatron2021-t1-{row['params_B']:g}b.yaml"])
        want = {k: row[k] for k in ("gpus", "tp", "pp", "dp", "global_batch", "layers", "hidden", "heads")}
        assert {k: got[k] for k in want} == want
    for row in _table(reference("megatron2021_table2_ptdp_vs_zero3"), "config"):
        size = "530b" if row["params_B"] == 529.6 else "175b"
        got = _shape(scenarios[f"megatron2021-t2-{row['scheme'].lower().replace('-', '')}-{size}-{row['gpus']}.yaml"])
        assert (got["gpus"], got["global_batch"], got["micro_batch"], got["tp"] * got["pp"]) == \
            (row["gpus"], row["global_batch"], row["microbatch"], row["model_parallel_size"])
        assert scenarios[f"megatron2021-t2-{row['scheme'].lower().replace('-', '')}-{size}-{row['gpus']}.yaml"] \
            .layout.zero == (3 if row["scheme"] == "ZeRO-3" else 0)


def test_mlperf_training_configs(reference, scenarios):
    c = reference("mlperf_training_v3_1_gpt3_175b_nvidia_eos")
    par = c["config"]["parallel"]
    for row in _table(c, "config"):
        got = _shape(scenarios[f"mlperf-t31-gpt3-{row['gpus']}.yaml"])
        assert (got["gpus"], got["dp"], got["global_batch"], got["tp"], got["pp"], got["chunks"], got["micro_batch"]) \
            == (row["gpus"], row["dp"], row["global_batch_seqs"], par["tp"], par["pp"], par["virtual_pipeline"],
                par["microbatch"])
        micro_batches = row["global_batch_seqs"] // (row["dp"] * par["microbatch"])
        assert micro_batches == row["grad_accum_microbatches_per_pipeline"]
    c = reference("mlperf_training_v4_0_gpt3_175b_nvidia")
    for key in ("large", "small"):
        g = c["config"][key]
        got = _shape(scenarios[f"mlperf-t40-gpt3-{g['gpus']}.yaml"])
        assert (got["gpus"], got["tp"], got["pp"], got["chunks"], got["micro_batch"], got["dp"], got["global_batch"]) \
            == (g["gpus"], g["tp"], g["pp"], g["virtual_pipeline"], g["microbatch"], g["dp"], g["global_batch_seqs"])
    c = reference("mlperf_training_v5_1_llama31_405b_gb200_gb300")
    for key in ("gb200_5120", "gb200_2560"):
        run = c["config"]["runs"][key]
        scn = scenarios[f"mlperf-t51-llama31-405b-{run['gpus']}.yaml"]
        got = _shape(scn)
        assert (got["gpus"], got["tp"], got["pp"], got["cp"], got["global_batch"]) == \
            (run["gpus"], run["tp"], run["pp"], run["cp"], run["global_batch_seqs"])
        assert scn.micro_batches == run["grad_accum"]


def test_llama3_configs(reference, scenarios):
    for row in _table(reference("llama3_405b_table4_pretraining_mfu"), "config"):
        name = f"llama3-405b-t4-{row['gpus']}{'-cp16' if row['cp'] > 1 else ''}.yaml"
        got = _shape(scenarios[name])
        assert {k: got[k] for k in ("gpus", "tp", "cp", "pp", "dp", "seq_len")} == \
            {k: row[k] for k in ("gpus", "tp", "cp", "pp", "dp", "seq_len")}
        assert got["global_batch"] == row["dp"] * row["batch_per_dp"]
        assert got["global_batch"] * got["seq_len"] == 16 * 2 ** 20  # "16M" tokens a step
        stages = scenarios[name].layout.stage_layers
        assert stages[0] == stages[-1] == min(stages) == max(stages) - 1  # one layer fewer first and last


def test_nemo_configs(reference, scenarios):
    """The NeMo scenarios run the layouts their tables print (GPUs, TP, PP, CP, virtual stages, batches); the B200
    long-sequence ones on the printed TP x PP x DP x CP, a quarter of the GPU column."""
    names = {("GPT3-175B", 128): "gpt3-175b-128", ("GPT3-175B", 512): "gpt3-175b-512", ("LLAMA2-7B", 8): "llama2-7b",
             ("LLAMA2-13B", 16): "llama2-13b", ("LLAMA2-70B", 64): "llama2-70b",
             ("Nemotron-340B", 128): "nemotron4-340b", ("LLAMA3-8B", 8): "llama3-8b", ("LLAMA3-70B", 64): "llama3-70b",
             ("GPT3-5B", 64): "gpt3-5b", ("GPT3-20B", 64): "gpt3-20b", ("Nemotron-8B", 64): "nemotron3-8b",
             ("Nemotron-22B", 64): "nemotron3-22b"}
    for row in _table(reference("nemo_24_07_pretraining_h100"), "reported"):
        got = _shape(scenarios[f"nemo2407-h100-{names[row['model'], row['gpus']]}.yaml"])
        assert {k: got[k] for k in ("gpus", "global_batch", "micro_batch", "seq_len", "tp", "pp", "cp")} == \
            {k: row[k] for k in ("gpus", "global_batch", "micro_batch", "seq_len", "tp", "pp", "cp")}
        assert got["chunks"] == row["vp"]
    for row in _table(reference("nemo_long_sequence_llama2_7b_h100"), "reported"):
        got = _shape(scenarios[f"nemo-longseq-h100-llama2-7b-{row['seq_len_k']}k.yaml"])
        assert {k: got[k] for k in ("gpus", "global_batch", "tp", "pp", "dp", "cp")} == \
            {k: row[k] for k in ("gpus", "global_batch", "tp", "pp", "dp", "cp")}
        assert got["seq_len"] == row["seq_len_k"] * 1024 and got["global_batch"] * got["seq_len"] == 4 * 2 ** 20
    for row in _table(reference("nemo_long_sequence_llama3_8b_b200"), "reported"):
        got = _shape(scenarios[f"nemo-longseq-b200-llama3-8b-{row['seq_len_k']}k.yaml"])
        assert {k: got[k] for k in ("global_batch", "tp", "pp", "dp", "cp")} == \
            {k: row[k] for k in ("global_batch", "tp", "pp", "dp", "cp")}
        assert got["gpus"] * 4 == row["gpus"] and got["seq_len"] == row["seq_len_k"] * 1024
        assert got["global_batch"] * got["seq_len"] == 4 * 2 ** 20


def test_nemo_gb200_configs(reference, scenarios):
    """NeMo 25.04's GB200 scenarios run the printed layouts (FSDP as ZeRO-3)."""
    for row in _table(reference("nemo_25_04_pretraining_gb200"), "reported"):
        name = {"GPT3-175B": "gpt3-175b", "LLAMA3-8B": "llama3-8b", "LLAMA3-70B": "llama3-70b",
                "LLAMA3-405B": "llama31-405b", "Nemotron-15B": "nemotron4-15b", "Nemotron-340B": "nemotron4-340b",
                "Mixtral-8x7B": "mixtral-8x7b"}[row["model"]]
        scn = scenarios[f"nemo2504-gb200-{name}.yaml"]
        got = _shape(scn)
        assert {k: got[k] for k in ("gpus", "global_batch", "micro_batch", "seq_len", "tp", "pp", "cp")} == \
            {k: row[k] for k in ("gpus", "global_batch", "micro_batch", "seq_len", "tp", "pp", "cp")}
        assert (got["chunks"], scn.layout.ep, scn.layout.zero == 3) == (row["vp"], row["ep"], row["fsdp"] == 1)
        assert scn.micro_batches == row["ga"]


def test_bridge_2509_configs(reference, scenarios):
    """Megatron-Bridge 25.09's H100 MoE scenarios run the printed layouts, experts folded to expert-TP 1."""
    names = {"DeepSeekV3": "deepseek-v3", "Qwen3_235B_a22B": "qwen3-235b", "Qwen3_30B_a3B": "qwen3-30b-a3b"}
    for row in _table(reference("megatron_bridge_25_09_pretraining_h100"), "reported"):
        if row["model"] not in names:
            continue
        scn = scenarios[f"bridge2509-h100-{names[row['model']]}-fp8.yaml"]
        got = _shape(scn)
        assert {k: got[k] for k in ("gpus", "global_batch", "micro_batch", "seq_len", "tp", "pp", "cp", "chunks")} == \
            {**{k: row[k] for k in ("gpus", "global_batch", "micro_batch", "seq_len", "tp", "pp", "cp")},
             "chunks": row["vp"]}
        assert (scn.layout.ep, scn.layout.etp, scn.micro_batches) == (row["ep"], 1, row["ga"])


def test_serving_configs(reference, scenarios):
    c = reference("mlperf_inference_v4_1_llama2_70b")
    files = {"dgx_h100_x8": "h100x8", "h200_x8": "h200x8", "h200_cts_x1": "h200cts", "b200_x1": "b200"}
    for key, tag in files.items():
        scn = scenarios[f"mlperf-i41-llama2-70b-{tag}.yaml"]
        system = c["config"]["systems"][key]
        assert scn.gpus == system["gpus"] and scn.model.name == "llama2-70b"
        if "gpu_batch_size" in system:
            assert scn.workload.batch == system["gpu_batch_size"]
        assert scn.workload.output_len == round(c["reported"]["offline_tokens_per_s"][key]
                                                / c["reported"]["offline_samples_per_s"][key])
    decode = reference("deepseek_v3_r1_online_inference_stats")["config"]["decode"]
    scn = scenarios["deepseek-v3-online-decode.yaml"]
    assert (scn.layout.ep, scn.layout.redundant_experts, scn.gpus // 8) == \
        (decode["ep"], decode["redundant_experts"], decode["unit_nodes"])
    assert scn.workload.prompt_len + scn.workload.output_len / 2 == \
        reference("deepseek_v3_r1_online_inference_stats")["reported"]["avg_kv_length_per_output_token"]


def test_scalingbook_decode_context_is_8192(scenarios):
    """decode_step_s is the decode step at prompt_len + output_len / 2: the tables' 8192."""
    for c in CASES:
        if c.case.startswith("scalingbook_"):
            w = scenarios[c.scenario.name].workload
            assert w.prompt_len + w.output_len // 2 == 8192 and c.metric == "decode_step_s"
