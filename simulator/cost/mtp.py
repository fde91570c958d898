"""Multi-token prediction (DeepSeek-V3 section 2.2) in a training step: where the modules sit, what each costs.

A module's transformer layer costs as the model's last layer and counts as a layer of the virtual stage that holds
the module (its FFN half, experts and all-to-all included: simulator.training.halves.layer_grid repeats the last
layer's row); besides it the module runs the embedding lookup of the shifted tokens there, its own norms and 2h -> h
projection (mtp_rows), and the shared output head and loss on the stage that holds the loss ("L"), once more per
module. The modules sit where layout.pipeline_layout puts its "m", else on the last virtual stage. A device that
holds a module but not the embedding holds a copy of the embedding (Megatron-Core shares it like tied embeddings);
the head stays on the loss's stage. Not modelled: the module's hidden states sent on to a separate loss stage.
"""

from __future__ import annotations

import numpy as np

from ..scenario import pipeline_layout
from . import roofline
from .op_table import casts_as_run, current_scaling
from .ops import OpRows, cast_rows, layer_shape
from .params import mtp_parameters, parameter_counts


def depth(model) -> int:
    """MTP modules of a model (0 without model.mtp)."""
    return model.mtp.depth if model.mtp is not None else 0


def stage_modules(scn, stages: int) -> np.ndarray:
    """(stages,) MTP modules each virtual stage holds: pipeline_layout's "m", else all on the last stage."""
    out = np.zeros(stages, dtype=int)
    lay = scn.layout
    if lay.pipeline_layout is not None:
        return np.array([st.mtp for st in pipeline_layout.parse(lay.pipeline_layout)], dtype=int)
    out[-1] = depth(scn.model)
    return out


def time_grid(grid, modules: np.ndarray, n: int):
    """(layers, embedding, head) (p, v) counts a step's passes run: stage_grid's `grid` (layers with the modules'),
    the embedding again where a module sits (`modules`: (p, v) modules per chunk), the head once more per module
    where the loss sits."""
    layers, embed, head = grid
    return layers, embed + modules, head * (1 + n)


def mtp_rows(model, tp: int, sp: bool, dtype: str, current_scaling: bool = False, arch: str | None = None) -> OpRows:
    """A module's own operators on one TP rank, besides its layer: the norms of the hidden state and of the
    embedding (RMSNorm, read and write, split by tp with sequence parallelism) and the projection of their
    concatenation, column-parallel (2h -> h/tp)."""
    h = model.hidden
    hs = h / (tp if sp else 1)
    rows = [("mtp-norms", 1, 0.0, 0.0, 4 * hs, 2.0, False), ("mtp-proj", 1, h // tp, 2 * h, 0.0, 0.0, False)]
    return OpRows.of(cast_rows(rows, dtype, True, current_scaling, arch))


def projection_seconds(scn, cal) -> np.ndarray:
    """(3,) seconds of one micro-batch through a module's norms and projection on one TP rank: F, B, W (the
    projection's input and weight gradients as any GEMM's)."""
    dev, w, lay = scn.topology.device, scn.workload, scn.layout
    rows = casts_as_run(mtp_rows(scn.model, lay.tp, lay.sequence_parallel, w.dtype, current_scaling(w), dev.arch), scn)
    m = [float(layer_shape(scn).tokens)]
    flops, nbytes = rows.flops(m)[0], rows.nbytes(m)[0]
    shapes = rows.shapes(m)[0] * rows.gemm[:, None]
    peak, hbm = dev.peak(w.dtype), dev.hbm_bandwidth
    f = roofline.op_times(flops, nbytes, shapes, peak, hbm, cal, precise=rows.precise)
    b = roofline.op_times(flops, np.where(rows.gemm, nbytes, rows.bwd * nbytes), shapes, peak, hbm, cal,
                          backward=True, precise=rows.precise)
    wg = roofline.op_times(np.where(rows.gemm, flops, 0.0), np.where(rows.gemm, nbytes, 0.0), shapes, peak, hbm, cal,
                           precise=rows.precise)
    return np.array([f.sum(), b.sum(), wg.sum()])


def projection_flops(scn) -> float:
    """Forward FLOP of one micro-batch through a module's projection on one TP rank."""
    lay = scn.layout
    return float(mtp_rows(scn.model, lay.tp, lay.sequence_parallel, "bf16").flops([layer_shape(scn).tokens]).sum())


def extra_params(model, tp: int, grid, modules: np.ndarray) -> np.ndarray:
    """(p,) parameters a module adds on one TP rank of each stage beyond its layer (counted with the layers): its
    projection and norms, and a copy of the embedding where the device does not hold the embedding itself."""
    c = parameter_counts(model)
    held = modules.sum(axis=1)
    copy = (held > 0) & ~grid[1].any(axis=1)
    return (held * mtp_parameters(model)["projection"] + copy * c["embedding"]) / tp
