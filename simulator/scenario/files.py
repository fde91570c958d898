"""Reading the files a scenario names, and quoting values in messages, within bounds.

`read_text(path, limit)` reads a regular file of at most `limit` bytes as UTF-8; anything else (a
missing file, a directory, a device such as /dev/zero, a FIFO, a file over the limit, bytes that are
not UTF-8) raises FileProblem, whose detail is one line without the path, for the caller to put
after the file and the field. `quote(value)` is repr() cut to simulator.scenario.limits.MAX_QUOTE
characters without first building the whole text (an alias bomb's value, a 4,000-digit integer).
"""

from __future__ import annotations

import os
import re
import reprlib
import stat
from pathlib import Path

from .limits import MAX_QUOTE

__all__ = ["FileProblem", "clip", "one_line", "quote", "read_bytes", "read_text", "resolve"]

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))


class FileProblem(Exception):
    """A file that cannot be read as simrack input; `detail` is one line."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _size(n: int) -> str:
    return f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n:,} bytes"


def read_bytes(path: str | os.PathLike, limit: int) -> bytes:
    """The bytes of the regular file at `path`, at most `limit`; FileProblem otherwise. Never blocks
    on a FIFO and never reads more than limit + 1 bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FileProblem("file not found") from None
    except PermissionError:
        raise FileProblem("cannot read it (permission denied)") from None
    except OSError as exc:
        raise FileProblem(f"cannot read it ({exc.strerror or exc})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
            raise FileProblem(f"is {kind}, not a regular file")
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise FileProblem(f"larger than {_size(limit)}, the most simrack reads from such a file")
        return b"".join(chunks)
    except OSError as exc:
        raise FileProblem(f"cannot read it ({exc.strerror or exc})") from None
    finally:
        os.close(fd)


def read_text(path: str | os.PathLike, limit: int) -> str:
    """The UTF-8 text of the regular file at `path`, at most `limit` bytes; FileProblem otherwise
    (a byte that is not UTF-8 is named with its line)."""
    data = read_bytes(path, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise FileProblem(f"line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x})") from None


def resolve(name: str, base: str | os.PathLike) -> Path:
    """A data file a scenario names: absolute as given, else relative to the scenario's folder."""
    return Path(name) if Path(name).is_absolute() else Path(base) / name


class _Quote(reprlib.Repr):
    """reprlib.Repr with limits on every kind of value, huge integers included."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxlist, self.maxtuple, self.maxdict, self.maxset = 3, 6, 6, 6, 6
        self.maxstring = self.maxother = self.maxlong = MAX_QUOTE

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 3 * MAX_QUOTE:  # str() of a 4,301-digit integer raises; this one is long anyway
            return f"<an integer of {int(x.bit_length() * 0.30103) + 1} digits>"
        return super().repr_int(x, level)


_QUOTE = _Quote()


_LONG_NUMBER = re.compile(r"\d{40,}")
MAX_MESSAGE = 1000
"""Characters of one message line."""


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text` as one line of at most `limit` characters, numbers of 40 digits or more shortened."""
    text = _LONG_NUMBER.sub(lambda m: f"<a {len(m.group()):,}-digit number>", " ".join(text.split()))
    return clip(text, limit)


def clip(text: str, limit: int = 200) -> str:
    """`text` in at most `limit` characters (a path or a field path in a message)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def quote(value: object, limit: int = MAX_QUOTE) -> str:
    """repr(value) in at most `limit` characters (cut with '...'), built without expanding the value."""
    text = _QUOTE.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
