"""Side-by-side measurements for the benchmarks: this checkout against the code before issue 17, in one run.

Speed on a shared machine varies by a third within minutes, so a benchmark that checks a target
measures today's code and the reference (the base commit, BASE_COMMIT) in the same run, each in a
fresh child process, and asserts their ratio; absolute figures go to extra_info. The reference tree
is $SIMRACK_BASE when set (a checkout of the base commit), else the base commit extracted once per
session with `git archive` into a temporary folder (no git state changes); without git the
side-by-side benchmarks skip. ISSUE_COMMIT, the code issue 17 timed for its "today" figures, is had
the same way ($SIMRACK_ISSUE_BASE).

A probe is Python source run in a child (`python -P`: the working directory, the repository root, is
not on sys.path) with only that tree on PYTHONPATH; it prints one JSON line. PRELUDE gives it `cpu()` (this
process's CPU seconds), `rss()` and `hwm()` (resident and peak resident bytes of this process from /proc:
ru_maxrss would report the parent's peak, kept across exec) and `cold()` (clears the fabric cache).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BASE_COMMIT = "09f18b9a17b2117fd870cbf110fdf06cfab6dad8"
"""The commit issue 17 started from: the simpy training engine, the serving loop with per-step
reductions, refinement of every top layout in worker processes, start-up importing everything."""
ISSUE_COMMIT = "e057affe7a101cc3a8ef5e1bf734d218bc752129"
"""The code issue 17 was filed against (the round's start, before the physics core of issue 13): the
commit behind the issue's "today" figures, such as the 11-14 s of the Llama 3 405B search. Its search
lives in simulator.search (simulator.whatif.search since)."""

PRELUDE = '''
import json, os, sys, time
def cpu():
    return time.process_time()
def _status(key):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
def rss():
    return _status("VmRSS:")
def hwm():
    return _status("VmHWM:")
def cold():
    from simulator.cost.fabric import _cached
    _cached.cache_clear()
def emit(**figures):
    print(json.dumps(figures))
'''


def base_tree() -> Path | None:
    """A tree of the base commit's sources, or None when it cannot be had."""
    return _tree(BASE_COMMIT, "SIMRACK_BASE")


def issue_tree() -> Path | None:
    """A tree of ISSUE_COMMIT's sources, or None when it cannot be had."""
    return _tree(ISSUE_COMMIT, "SIMRACK_ISSUE_BASE")


@lru_cache(maxsize=None)
def _tree(commit: str, variable: str) -> Path | None:
    given = os.environ.get(variable)
    if given:
        return Path(given).resolve()
    target = Path(tempfile.mkdtemp(prefix=f"simrack-{commit[:9]}-"))
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], capture_output=True, check=True,
                                 timeout=120).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return None
    return target


def require_base() -> Path:
    tree = base_tree()
    if tree is None:
        pytest.skip(f"no checkout of the base commit {BASE_COMMIT[:9]} (set SIMRACK_BASE)")
    return tree


def require_issue_base() -> Path:
    tree = issue_tree()
    if tree is None:
        pytest.skip(f"no checkout of issue 17's commit {ISSUE_COMMIT[:9]} (set SIMRACK_ISSUE_BASE)")
    return tree


def probe(code: str, tree: Path = ROOT, timeout: float = 1800, args: tuple = ()) -> dict:
    """Run PRELUDE + `code` in a fresh interpreter on `tree`'s sources; its last JSON line."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-P", "-c", PRELUDE + code, *map(str, args)], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=timeout)
    if out.returncode:
        raise RuntimeError(f"probe failed on {tree}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def both(code: str, timeout: float = 1800, args: tuple = ()) -> tuple[dict, dict]:
    """(this checkout's figures, the base commit's) of one probe."""
    base = require_base()
    return probe(code, ROOT, timeout, args), probe(code, base, timeout, args)
