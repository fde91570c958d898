"""Hostile cases for the command line, run where a runaway cannot take the machine down.

(As root, a regression that replaced a device node would break /dev/null for the whole machine:
cases write to private copies of devices made with mknod, DEV_NULL and DEV_FULL, instead.)

`run_cases(cases)` starts one child Python under a memory limit (RLIMIT_AS) that imports simrack
once and runs every case's command line through the CLI (typer's CliRunner), each in a folder of its
own holding the case's files, under an alarm. It returns each case's outcome: exit status, stderr,
the exception if one escaped, the seconds it took, and the files left in its folder besides its
inputs. `problems(case, outcome)` lists what is wrong with an outcome (empty: the case passed).

A case is a dict: id; args (the command line, relative paths into its folder); files {name: text,
bytes, "<fifo>", or "<dev:MAJOR,MINOR>" for a private device node, root only}; expect (exit status,
default 2); says (fragments stderr must hold); fsize (an RLIMIT_FSIZE while it runs); keep (files it may
leave, e.g. an output it writes on success).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

ROOT_USER = os.geteuid() == 0
DEV_NULL = ("null", {"null": "<dev:1,3>"}) if ROOT_USER else ("/dev/null", {})
"""(path, files): where a case writes to a null device without any risk to the machine's /dev/null."""
DEV_FULL = ("full", {"full": "<dev:1,7>"}) if ROOT_USER else ("/dev/full", {})
"""(path, files): a device that is always full (ENOSPC)."""
MEMORY_LIMIT = 1 << 30  # address space of the child: simrack needs about 0.2 GiB
CASE_SECONDS = 30  # the alarm of one case

_CHILD = r"""
import json, os, resource, shutil, signal, sys, tempfile, time
from typer.testing import CliRunner
from simulator.cli import app

class Alarm(BaseException):
    pass

def ring(signum, frame):
    raise Alarm()

signal.signal(signal.SIGALRM, ring)
cases = json.loads(sys.stdin.read())
runner = CliRunner()
fsize = resource.getrlimit(resource.RLIMIT_FSIZE)
for case in cases:
    home = tempfile.mkdtemp(prefix="hostile-")
    os.chdir(home)
    def tree():
        found = []
        for folder, dirs, names in os.walk(home):
            found += [os.path.relpath(os.path.join(folder, n), home) for n in dirs + names]
        return set(found)

    for name, text in case.get("files", {}).items():
        if os.path.dirname(name):
            os.makedirs(os.path.dirname(name), exist_ok=True)
        if text == "<fifo>":
            os.mkfifo(name)
        elif isinstance(text, str) and text.startswith("<dev:"):  # a private copy of a device (root)
            major, minor = map(int, text[5:-1].split(","))
            os.mknod(name, 0o666 | __import__("stat").S_IFCHR, os.makedev(major, minor))
        elif isinstance(text, dict):
            open(name, "wb").write(bytes.fromhex(text["hex"]) * text.get("times", 1))
        else:
            open(name, "w", encoding="utf-8").write(text)
    inputs = tree()
    kinds = {name: os.lstat(name).st_mode >> 12 for name in inputs}
    out = {"id": case["id"]}
    start = time.monotonic()
    signal.alarm(case.get("seconds", 30))
    try:
        if case.get("fsize"):
            resource.setrlimit(resource.RLIMIT_FSIZE, (case["fsize"], fsize[1]))
        result = runner.invoke(app, case["args"])
        out.update(exit=result.exit_code, stdout=result.stdout[-2000:], stderr=result.stderr,
                   exception=None if result.exception is None or isinstance(result.exception, SystemExit)
                   else f"{type(result.exception).__name__}: {result.exception}"[:500])
    except Alarm:
        out.update(exit=None, stdout="", stderr="", exception="timeout")
    except MemoryError:
        out.update(exit=None, stdout="", stderr="", exception="MemoryError")
    finally:
        signal.alarm(0)
        resource.setrlimit(resource.RLIMIT_FSIZE, fsize)
    out["seconds"] = time.monotonic() - start
    out["left"] = sorted(tree() - inputs)
    out["replaced"] = sorted(n for n, kind in kinds.items()
                             if not os.path.lexists(n) or os.lstat(n).st_mode >> 12 != kind)
    out["nonfinite"] = [name for name in out["left"] if os.path.isfile(name) and os.path.getsize(name) < 1 << 20
                        and any(word in open(name, "rb").read() for word in (b"Infinity", b"NaN"))]
    os.chdir("/")
    shutil.rmtree(home, ignore_errors=True)
    print(json.dumps(out), flush=True)
"""


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_cases(cases: list[dict], timeout: float = 600) -> dict[str, dict]:
    """{case id: outcome} of every case, run in one child process under MEMORY_LIMIT; a case the
    child did not report (it died) has exception 'child died: ...'."""
    env = dict(os.environ, PYTHONWARNINGS="default")
    done = subprocess.run([sys.executable, "-c", _CHILD], input=json.dumps(cases), capture_output=True, text=True,
                          timeout=timeout, preexec_fn=_limit, env=env)
    out = {}
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            item = json.loads(line)
            out[item["id"]] = item
    for case in cases:
        out.setdefault(case["id"], {"id": case["id"], "exit": None, "stderr": done.stderr[-3000:], "stdout": "",
                                    "exception": f"child died: {done.returncode}", "left": [], "seconds": 0,
                                    "nonfinite": [], "replaced": []})
    return out


def problems(case: dict, outcome: dict) -> list[str]:
    """What is wrong with an outcome: the exit status, stderr not one 'simrack: ' line (when failing),
    a traceback or an escaped exception, a timeout, files left behind, missing message fragments."""
    bad = []
    expect = case.get("expect", 2)
    if outcome["exception"]:
        bad.append(f"exception {outcome['exception']}")
    if outcome["exit"] != expect:
        bad.append(f"exit {outcome['exit']} != {expect}")
    err = outcome["stderr"].strip()
    if "Traceback" in outcome["stderr"] or "Warning" in outcome["stderr"]:
        bad.append("traceback or warning on stderr")
    if expect != 0:
        if "\n" in err or not err.startswith("simrack: "):
            bad.append("stderr is not one 'simrack: ' line")
        if len(err) > 1100:
            bad.append(f"message of {len(err)} characters")
    for fragment in case.get("says", ()):
        if fragment not in err:
            bad.append(f"stderr lacks {fragment!r}")
    left = [f for f in outcome["left"] if f not in case.get("keep", ())]
    if left:
        bad.append(f"left {left}")
    if outcome.get("replaced"):
        bad.append(f"replaced or removed {outcome['replaced']}")
    if outcome.get("nonfinite"):
        bad.append(f"Infinity or NaN in {outcome['nonfinite']}")
    return [*bad, f"stderr: {err[:600]}"] if bad else []
