"""Pareto fronts and their pictures (matplotlib, no display).

Training: step time against GPUs or cost per million tokens, both to minimize. Serving: throughput
per GPU (to maximize) against latency per user (to minimize). `front` works on any two columns,
vectorized: sort by x, keep the points whose y beats every point before them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def front(x, y, *, maximize_y: bool = False) -> np.ndarray:
    """Indices of the points no other point beats on both x (smaller) and y (smaller, or larger when
    maximize_y), sorted by x; ties in x keep the best y only."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    yy = -y if maximize_y else y
    order = np.lexsort((yy, x))
    best = np.minimum.accumulate(yy[order])
    keep = np.ones(len(order), bool)
    keep[1:] = yy[order][1:] < best[:-1]
    return order[keep]


def plot_front(points: list[dict], x_key: str, y_key: str, path: Path, *, title: str, x_label: str,
               y_label: str, chosen: dict | None = None, maximize_y: bool = False, log_x: bool = False,
               log_y: bool = False) -> None:
    """Scatter every point, draw the front, label the front's points and the chosen one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = np.array([p[x_key] for p in points], float)
    ys = np.array([p[y_key] for p in points], float)
    keep = front(xs, ys, maximize_y=maximize_y)
    fig, ax = plt.subplots(figsize=(9, 5.5))
    ax.scatter(xs, ys, s=10, color="#B0B7C3", label="layouts")
    ax.step(xs[keep], ys[keep], where="post", color="#4C72B0", linewidth=1.5)
    ax.scatter(xs[keep], ys[keep], s=28, color="#4C72B0", label="Pareto front", zorder=3)
    for i in [i for i in keep if points[i].get("label")][:12]:
        ax.annotate(points[i]["label"], (xs[i], ys[i]), fontsize=6, xytext=(4, 4),
                    textcoords="offset points")
    if chosen is not None:
        ax.scatter([chosen[x_key]], [chosen[y_key]], s=90, marker="*", color="#DD8452", zorder=4,
                   label=f"chosen: {chosen.get('label', '')}")
    if log_x:
        ax.set_xscale("log", base=2)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(title, loc="left", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, metadata={"Date": None} if Path(path).suffix == ".svg" else None)
    plt.close(fig)
