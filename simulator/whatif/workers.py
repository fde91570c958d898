"""Work split over processes forked from this one (simulator.whatif.analytic's pass uses it).

The forked processes inherit the state instead of receiving it pickled, take the next task from a
shared counter (so that the work balances itself; give the largest tasks first), and can receive
one value the parent computes after forking (a Late), so that the parent's last preparations overlap
the workers' first tasks. Results can land in shared arrays instead of travelling back.
"""

from __future__ import annotations

import mmap
import multiprocessing as mp
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager

import numpy as np

from .. import signals

_FORKED: tuple = ()
"""(state, fn, tasks, counter) that the forked processes read: set before they fork, never pickled."""


def state() -> tuple:
    """The `state` given to run(), in whichever process runs a task."""
    return _FORKED[0]


def run(fn, tasks: list, shared: tuple, workers: int, late=None) -> list:
    """[fn(task) for task in tasks], computed by this process and workers - 1 processes forked from
    it (fn reads `shared` through state()).

    late: a function this process calls once the workers run; every process reads its value by
    calling shared[-1], a Late (workers receive it through a pipe at their first call)."""
    global _FORKED
    ctx = mp.get_context("fork")
    held = shared[-1] if late is not None else None
    if held is not None:
        held.pipe = ctx.SimpleQueue()
    _FORKED = (shared, fn, tasks, ctx.Value("l", 0))
    try:
        with worker_pool(workers - 1, ctx) as pool:
            with signals.held():  # the workers fork here and start with SIGINT and SIGTERM held
                futures = [pool.submit(_take) for _ in range(workers - 1)]
            if held is not None:  # computed while the workers start on their first tasks
                try:
                    held.value = late()
                finally:  # on an error the workers get None, fail, and the pool can close
                    sender = threading.Thread(target=lambda: [held.pipe.put(held.value) for _ in futures],
                                              daemon=True)  # a worker that died cannot block the exit
                    sender.start()
            done = _take()
            for f in futures:
                done.update(f.result())
            if held is not None:
                sender.join()
    finally:
        _FORKED = ()
    return [done[i] for i in range(len(tasks))]


@contextmanager
def worker_pool(workers: int, ctx) -> Iterator[ProcessPoolExecutor]:
    """A ProcessPoolExecutor of `workers` processes from the multiprocessing context `ctx`, whose workers
    leave SIGINT to this process and end with it (simulator.signals.worker_init); shut down when the block
    ends, its workers killed at once, not awaited, when the block raises (an interrupt included)."""
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=signals.worker_init, initargs=(os.getpid(),))
    try:
        yield pool
    except BaseException:
        stop_pool(pool)
        raise
    pool.shutdown()


class Late:
    """A value of run()'s shared state that the parent computes after forking: a forked process reads
    it from the pipe exactly once, whenever it was forked."""

    def __init__(self):
        self.pipe, self.value, self.parent, self.received = None, None, os.getpid(), False

    def __call__(self):
        if os.getpid() != self.parent and not self.received:
            self.value, self.received = self.pipe.get(), True
        return self.value


def _take() -> dict:
    """{task index: fn(task)} of the tasks this process took from the shared counter (a worker that
    never asked for the late value reads it on leaving, so that the parent's sends all complete)."""
    shared, fn, tasks, taken = _FORKED
    done = {}
    while True:
        with taken.get_lock():
            i = taken.value
            taken.value += 1
        if i >= len(tasks):
            if isinstance(shared[-1], Late):
                shared[-1]()
            return done
        done[i] = fn(tasks[i])


def shared_array(n: int) -> np.ndarray:
    """(n,) float array, zeros, in memory that forked processes share (an anonymous shared mapping)."""
    return np.frombuffer(mmap.mmap(-1, max(n, 1) * 8), dtype=float)[:n]


def stop_pool(pool) -> None:
    """Kill a ProcessPoolExecutor's processes now and drop its queued work."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # no public handle on them
    for proc in processes:
        try:
            proc.kill()
        except (OSError, AttributeError, ValueError):
            pass
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        try:
            proc.join(5)
        except (OSError, AttributeError, ValueError, AssertionError):
            pass
