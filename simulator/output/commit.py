"""Writing every output of one command, all or nothing.

`commit(outputs)` takes the outputs of a command, each (option, path, content): content is the
rendered text, or a function that draws into the path it is given (a plot). Then:

1. Every target is checked before anything is written: the same file twice, a directory in the way.
2. Every regular file is written to a hidden temporary file beside it (mode 0666 & ~umask), flushed
   to the disk; a plot is drawn into one. Missing folders are created, and recorded.
3. Only when all of them are complete, special files (/dev/null, a terminal, a FIFO with a reader:
   anything that is not a regular file) are written in place, never replaced, and `-` goes to
   standard output; then, with SIGINT and SIGTERM held (simulator.signals), the temporary files are
   renamed over their targets, and a later signal no longer interrupts the command.

Any failure before the renames (a read-only folder, a full disk, a file size limit, a FIFO without
a reader, an interrupt) removes every temporary file and every folder it created, and raises
OutputError: one line naming the option, the file and what went wrong (what a special file or
standard output received cannot be taken back). A target that is a symbolic link is written through.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from .. import signals
from ..scenario.files import clip, one_line

Content = str | Callable[[Path], None]


class OutputError(Exception):
    """An output that cannot be written; `str()` is one line naming the option and the file."""


def file_mode() -> int:
    """Mode of a new file under the ordinary umask: 0666 & ~umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def is_stdout(path: Path | None) -> bool:
    return path is not None and str(path) == "-"


_DESCRIPTOR = re.compile(r"/dev/(stdout|stderr|fd/\d+)|/proc/(self|thread-self|\d+)/fd/\d+")


def _special(path: Path) -> bool:
    """Whether `path` is written in place: an existing file that is not a regular one (/dev/null, a
    FIFO, a terminal), or a descriptor of this process (/dev/stdout: renaming over what it points to
    would cut the shell's redirection off)."""
    if _DESCRIPTOR.fullmatch(os.path.abspath(path)):
        return True
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False  # missing, or unreadable: the write below says why


def _cannot_write(opt: str, path: Path, err: OSError) -> OutputError:
    """The one-line error of an output that failed to write."""
    return OutputError(f"{opt} {clip(str(path))}: cannot write: {_reason(err)}")


def _reason(err: OSError) -> str:
    if err.errno == errno.EISDIR:
        return "a directory is in the way"
    if err.errno == errno.ENXIO:
        return "a FIFO with no reader"
    return err.strerror or str(err)


class _Transaction:
    """The temporary files and folders of one commit, removed unless it completes."""

    def __init__(self) -> None:
        self.temps: list[str] = []
        self.folders: list[Path] = []

    def folder(self, path: Path) -> None:
        """Create the missing folders above `path`, recording each."""
        missing = []
        parent = path.parent
        while not parent.exists() and parent != parent.parent:
            missing.append(parent)
            parent = parent.parent
        for folder in reversed(missing):
            folder.mkdir()
            self.folders.append(folder)

    def temp(self, target: Path) -> str:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp" + target.suffix)
        self.temps.append(tmp)
        try:
            os.fchmod(fd, file_mode())
        finally:
            os.close(fd)
        return tmp

    def discard(self) -> None:
        for tmp in self.temps:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        for folder in reversed(self.folders):
            try:
                folder.rmdir()
            except OSError:
                pass


def _write_file(name: str, text: str) -> None:
    with open(name, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        try:
            os.fsync(fh.fileno())
        except OSError as err:
            if err.errno not in (errno.EINVAL, errno.ENOTSUP):
                raise


def _write_special(path: Path, text: str) -> None:
    """Write to an existing non-regular file in place, appending (opened without blocking on a FIFO)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        os.set_blocking(fd, True)
        with os.fdopen(fd, "w", encoding="utf-8", closefd=False) as fh:
            fh.write(text)
    finally:
        os.close(fd)


def _check_targets(todo) -> None:
    """OutputError if two outputs name the same file or a directory stands where a file goes."""
    seen: dict[str, str] = {}
    for opt, path, _ in todo:
        if is_stdout(path):
            continue
        key = os.path.realpath(path)
        if key in seen:
            raise OutputError(f"{seen[key]} and {opt} name the same file {clip(str(path))}")
        seen[key] = opt
        if os.path.isdir(path):
            raise OutputError(f"{opt} {clip(str(path))}: cannot write: a directory is in the way")


def _stage(todo, work: _Transaction) -> tuple[list, list, list]:
    """Each regular file written (or drawn) into a temporary file beside its target: (staged (option, temporary,
    target), special files (option, path, text) to write in place later, standard output's texts)."""
    staged, special, std = [], [], []
    for opt, path, content in todo:
        if is_stdout(path):
            std.append(content)
            continue
        try:
            if _special(path):
                if callable(content):
                    raise OutputError(f"{opt} {clip(str(path))}: cannot draw into a special file")
                special.append((opt, path, content))
                continue
            target = Path(os.path.realpath(path))
            work.folder(target)
            tmp = work.temp(target)
            if callable(content):
                try:
                    content(Path(tmp))
                except ValueError as err:  # a format the plotting library lacks, nothing to draw
                    detail = one_line(str(err), 300).removeprefix(f"{opt}: ")
                    raise OutputError(f"{opt} {clip(str(path))}: cannot draw: {detail}") from None
            else:
                _write_file(tmp, content)
            staged.append((opt, tmp, target))
        except OSError as err:
            raise _cannot_write(opt, path, err) from None
    return staged, special, std


def commit(outputs: Sequence[tuple[str, Path | None, Content]], stdout: Callable[[str], None] | None = None) -> None:
    """Write every output or none (see the module docstring); OutputError on failure. Outputs whose
    path is None are skipped; `stdout` writes the `-` output (default: sys.stdout)."""
    todo = [(opt, Path(path), content) for opt, path, content in outputs if path is not None]
    _check_targets(todo)
    work = _Transaction()
    done = False
    try:
        staged, special, std = _stage(todo, work)
        for opt, path, text in special:  # interruptible: a FIFO's reader may take its time
            try:
                _write_special(path, text)
            except OSError as err:
                raise _cannot_write(opt, path, err) from None
        for text in std:
            (stdout or sys.stdout.write)(text)
        signals.raise_pending()
        with signals.held():  # the renames, together
            for opt, tmp, target in staged:
                try:
                    os.replace(tmp, target)
                except OSError as err:
                    raise _cannot_write(opt, target, err) from None
                work.temps.remove(tmp)
            done = True
            signals.settle()  # written: the command has done its work, a late signal changes nothing
    finally:
        if not done:
            work.discard()
