"""Start-up: `simrack run` on the quick-start scenario as a process (issue 17: under 0.4 s, 0.6 s before).

Side by side with the base commit (benchmarks/sidebyside.py): the wall-clock seconds of the whole
process (interpreter start, imports, load, simulate, the report table) running the command on each
tree, alternately, ten times each; the fastest run of each is compared, as timeit advises on a shared
machine. `python -X importtime` splits the imports, and the modules `simrack run` must not load (the
what-if machinery, the trace writer, plotting, cluster libraries) are checked.

What is asserted is what this branch achieves, not the issue's target: at most 0.85 of the base's
time (measured 0.77-0.80: 0.38-0.41 s against 0.48-0.51 s on the 2-core machine). The issue asks for
0.4 / 0.6 = 0.67; extra_info records `target_ratio_met`. What remains is mostly other libraries'
imports that `run` needs: networkx for the fabric (about 65 ms), numpy (60 ms), pydantic and the
scenario models (70 ms), typer and rich (25 ms).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest
from sidebyside import ROOT, require_base

pytestmark = pytest.mark.benchmark
QUICK_START = "scenarios/gpt3-175b-selene.yaml"
COMMAND = "import sys; from simulator.cli import main; sys.argv = ['simrack', 'run', sys.argv[1]]; main()"
NOT_FOR_RUN = ("simulator.whatif", "simulator.output.trace", "simulator.output.plots", "matplotlib", "distributed",
               "dask", "multiprocessing")


def _once(tree, extra=()) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-P", *extra, "-c", COMMAND, QUICK_START], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=60)
    seconds = time.perf_counter() - t
    assert out.returncode == 0, out.stderr[-2000:]
    return seconds, out.stderr


def _imports(tree) -> dict[str, float]:
    """Seconds of each top-level module's imports (python -X importtime, self times summed)."""
    _, err = _once(tree, ("-X", "importtime"))
    total: dict[str, float] = {}
    for line in err.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+\d+ \| (\s*)(\S+)", line)
        if m:
            name = m.group(3)
            key = ".".join(name.split(".")[:2]) if name.startswith("simulator") else name.split(".")[0]
            total[key] = total.get(key, 0.0) + int(m.group(1)) / 1e6
    return total


def _side_by_side(rounds: int = 10):
    base = require_base()
    new_s, base_s = [], []
    for _ in range(rounds):
        new_s.append(_once(ROOT)[0])
        base_s.append(_once(base)[0])
    return min(new_s), min(base_s), _imports(ROOT), _imports(base)


@pytest.mark.benchmark(group="start-up")
def test_simrack_run_quick_start_against_the_base(benchmark):
    new, base, new_imports, base_imports = benchmark.pedantic(_side_by_side, rounds=1, iterations=1)
    top = lambda d: dict(sorted(d.items(), key=lambda kv: -kv[1])[:12])  # noqa: E731
    benchmark.extra_info.update(new_s=new, base_s=base, ratio=new / base, target_ratio_met=new / base <= 0.4 / 0.6,
                                new_imports_s=sum(new_imports.values()),
                                base_imports_s=sum(base_imports.values()), new_top=top(new_imports),
                                base_top=top(base_imports))
    loaded = [m for m in new_imports if m.startswith(NOT_FOR_RUN)]
    assert not loaded, f"simrack run imported {loaded}"
    assert new / base <= 0.85, f"{base:.3f} s -> {new:.3f} s"
