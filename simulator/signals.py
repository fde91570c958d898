"""SIGINT and SIGTERM end a command cleanly: nothing half-written left, status 130 or 143.

`install()` (the `simrack` entry point calls it before importing anything heavy) makes both signals
raise `Interrupted`, a BaseException, so no `except Exception` swallows it and every `finally` on the
way out runs: temporary output files are removed, worker processes killed, cluster clients closed.
`simulator.entry.main` then prints one line and exits with 128 + the signal's number. Outputs are
committed inside `held()`: the signals wait while the files are renamed into place, and once a
command has committed (`settle()`), a late signal no longer interrupts it: it has finished.

Worker processes call `worker_init()`: SIGINT ignored (a terminal's Ctrl-C reaches the whole process
group; the parent decides), SIGTERM back to its default, and on Linux a SIGTERM when the parent dies.
This module imports nothing from simrack and nothing heavy.
"""

from __future__ import annotations

import _thread
import ctypes
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_state = {"installed": False, "raised": None, "lost": None, "settled": False}


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; `signum` says which, `status` is the conventional exit status."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    def __str__(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def status(self) -> int:
        return 128 + self.signum


def _handler(signum: int, frame) -> None:  # noqa: ARG001 - the signal module's signature
    if _state["settled"] or _state["raised"] is not None:
        return  # finished (outputs committed), or already on the way out: let the cleanup run
    _state.update(raised=signum, lost=None)
    raise Interrupted(signum)


def _unraisable(hook):
    """A sys.unraisablehook that sends a swallowed Interrupted again. Python cannot raise out of a
    weak-reference callback or a destructor (the import machinery runs such callbacks at start-up):
    the exception would be printed as "Exception ignored" and lost. A thread re-sends the signal
    instead, so that it interrupts the main thread's next ordinary line; anything else goes to `hook`."""

    def unraisable(info) -> None:
        if isinstance(info.exc_value, Interrupted) and not _state["settled"]:
            _state.update(raised=None, lost=info.exc_value.signum)
            _thread.start_new_thread(os.kill, (os.getpid(), info.exc_value.signum))  # returns at once
            return
        hook(info)

    return unraisable


def raise_pending() -> None:
    """Raise Interrupted for a signal that arrived but has not interrupted the command yet (see
    _unraisable): called before outputs are committed and before the command counts as finished."""
    signum = _state["raised"] or _state["lost"]
    if signum is not None and not _state["settled"]:
        _state.update(raised=signum, lost=None)
        raise Interrupted(signum)


def install() -> None:
    """Make SIGINT and SIGTERM raise Interrupted in the main thread (once per process)."""
    for signum in SIGNALS:
        signal.signal(signum, _handler)
    if not installed():
        sys.unraisablehook = _unraisable(sys.unraisablehook)
    _state.update(installed=True, raised=None, lost=None, settled=False)


def installed() -> bool:
    """Whether install() ran in this process (the command line; not the Python API)."""
    return _state["installed"]


@contextmanager
def held() -> Iterator[None]:
    """SIGINT and SIGTERM wait (blocked) inside the block; delivered when it ends."""
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - not POSIX
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def settle() -> None:
    """The command's outputs are in place: a signal from now on does not interrupt it."""
    _state["settled"] = True


def worker_init(parent: int | None = None) -> None:
    """Signal dispositions of a worker process forked by process `parent` (see the module docstring)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _state.update(installed=False, raised=None, lost=None, settled=False)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: end with the parent, never orphaned
            if parent is not None and os.getppid() != parent:  # it died before prctl took effect
                os._exit(0)
        except (OSError, AttributeError):  # pragma: no cover - no libc symbol
            pass
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)  # forked inside held(): the mask came along
