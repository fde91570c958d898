"""SIGINT and SIGTERM to the real program (`python -m simulator`, what the `simrack` script runs): at
start-up, while it writes its outputs, and to a sweep with worker processes. Each ends with status
130 or 143 and one line on stderr, no traceback, no output or temporary file, no orphan process;
each process runs under a memory limit."""

from __future__ import annotations

import fcntl
import os
import resource
import signal
import stat
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

ROOT = Path(__file__).resolve().parents[1]
GPT3 = str(ROOT / "scenarios" / "gpt3-175b-selene.yaml")  # its trace is 400 KiB: more than a pipe holds
PROGRAM = [sys.executable, "-m", "simulator"]
STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def start(args: list[str], cwd: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen([*PROGRAM, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_limit, **kw)


def wait_for(test, proc: subprocess.Popen, seconds: float = 60) -> None:
    end = time.monotonic() + seconds
    while not test():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.005)


def catches_sigterm(pid: int) -> bool:
    """Whether the process has installed simrack's handlers (Python alone catches only SIGINT)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def ended(proc: subprocess.Popen, sig: int) -> str:
    """The stderr of a process that should have ended on `sig`: status and one line checked."""
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == STATUS[sig], (proc.returncode, err)
    assert "Traceback" not in err and err.strip() == f"simrack: interrupted by {signal.Signals(sig).name}", err
    return err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_start_up(tmp_path, sig):
    """Sent as soon as the handlers are in, while numpy, pydantic and simpy still load."""
    proc = start(["run", GPT3, "-q", "--json", "a.json"], tmp_path)
    wait_for(lambda: catches_sigterm(proc.pid), proc)
    proc.send_signal(sig)
    ended(proc, sig)
    assert not list(tmp_path.iterdir())


SWALLOWED = """
import os, signal, weakref
from simulator import signals
signals.install()
class Thing: pass
thing = Thing()
ref = weakref.ref(thing, lambda _: os.kill(os.getpid(), signal.SIG{name}))  # raised inside the callback
try:
    del thing
    for _ in range(10**7):
        pass
    print("not interrupted")
except signals.Interrupted as stop:
    print("interrupted by", stop)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_inside_a_weakref_callback_still_interrupts(sig):
    """Python swallows an exception raised in a weak-reference callback (the import machinery runs
    them at start-up): the signal still interrupts the next ordinary line, and nothing is printed."""
    name = signal.Signals(sig).name.removeprefix("SIG")
    done = subprocess.run([sys.executable, "-c", SWALLOWED.format(name=name)], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert done.stdout.strip() == f"interrupted by SIG{name}" and done.stderr == "", done


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_while_writing_leaves_no_output(tmp_path, sig):
    """The trace goes to a FIFO whose reader never reads: the write blocks once the pipe is full, with
    the JSON and CSV staged as hidden temporary files. The signal then leaves none of the three."""
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    reader = os.open(gate, os.O_RDONLY | os.O_NONBLOCK)
    try:
        proc = start(["run", GPT3, "-q", "--json", "a.json", "--csv", "a.csv", "--trace", "gate"], tmp_path)

        def pipe_full() -> bool:  # the writer is blocked (a pipe holds 64 KiB)
            return struct.unpack("i", fcntl.ioctl(reader, termios.FIONREAD, b"\0\0\0\0"))[0] >= 65536

        wait_for(pipe_full, proc)
        staged = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
        assert len(staged) == 2, staged  # the JSON and the CSV, complete, waiting for the trace
        proc.send_signal(sig)
        ended(proc, sig)
    finally:
        os.close(reader)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gate"]


@pytest.mark.parametrize("group", [False, True], ids=["SIGTERM-to-parent", "SIGINT-to-group"])
def test_interrupted_sweep_leaves_no_worker(tmp_path, group):
    """SIGTERM to the parent of `sweep -j 2` (or Ctrl-C: SIGINT to the whole process group): the
    workers are killed with it, not orphaned, and no output is written."""
    grid = ["--grid", "layout.pp=1,2,4,8", "--grid", "layout.tp=1,2,4,8", "--grid",
            "workload.recompute=none,selective,full", "--grid", "workload.global_batch=512,1024"]
    proc = start(["sweep", GPT3, *grid, "-j", "2", "-q", "--json", "s.json"], tmp_path, start_new_session=True)
    wait_for(lambda: len(children(proc.pid)) == 2, proc)
    workers = children(proc.pid)
    time.sleep(0.3)  # the workers are simulating
    if group:
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGTERM)
    ended(proc, signal.SIGINT if group else signal.SIGTERM)
    end = time.monotonic() + 10
    while any(alive(w) for w in workers) and time.monotonic() < end:
        time.sleep(0.05)
    assert not [w for w in workers if alive(w)]
    assert not list(tmp_path.iterdir())


def test_null_device_output_stays_a_device(tmp_path):
    """As root, `--json /dev/null` once replaced the device node with a regular file (here a private
    copy of the device, made with mknod, so that a regression cannot break the machine's)."""
    null = "/dev/null"
    if os.geteuid() == 0:
        null = str(tmp_path / "null")
        os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    done = subprocess.run([*PROGRAM, "run", GPT3, "-q", "--json", null, "--csv", "b.csv"], cwd=tmp_path,
                          capture_output=True, text=True, preexec_fn=_limit)
    assert done.returncode == 0 and not done.stderr, done.stderr
    assert Path(null).is_char_device()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["b.csv"] + (["null"] if null != "/dev/null" else []))
