"""Pipeline layouts as frameworks write them: Megatron-Core's layout string or an explicit list of stages, parsed
into what each virtual stage holds (transformer layers, the embedding, multi-token-prediction modules, the loss).

Megatron-Core's `pipeline_model_parallel_layout`: "E" the embedding, "t" a transformer layer, "m" a multi-token-
prediction module, "L" the loss (final norm and output head), "|" a stage boundary, "(...)*n" and "x*n" repetition;
e.g. "Et*3|(tt|)*29m|L" is 32 virtual stages: the embedding and 3 layers, 29 stages of 2 layers, the MTP module
alone, the loss alone. Virtual stage k runs on pipeline rank k mod pp, chunk k div pp (Megatron's interleaving; a
schedule's own routes in simrack). A list gives one string a stage, without "|" ("Et*3", "tt", ..., "m", "L").
Spaces and commas are ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

MAX_SYMBOLS = 1 << 16
"""Symbols of a layout once its repetitions are expanded (a model has at most 4,096 layers: limits.MAX_LAYERS)."""
_GROUP = re.compile(r"\(([^()]*)\)\*(\d+)")
_SINGLE = re.compile(r"([EtmL|])\*(\d+)")


@dataclass(frozen=True)
class Stage:
    """What one virtual stage holds."""

    layers: int  # transformer layers ("t")
    embedding: bool  # "E"
    mtp: int  # multi-token-prediction modules ("m")
    loss: bool  # "L"


def _sub(pattern: re.Pattern, s: str, text: str) -> str:
    """`s` with every match of `pattern` ((body)*n or x*n) written out; ValueError past MAX_SYMBOLS in all."""
    out, at, size = [], 0, 0
    for match in pattern.finditer(s):
        body, times = match.group(1), int(match.group(2)) if len(match.group(2)) < 7 else MAX_SYMBOLS + 1
        size += match.start() - at + len(body) * times
        if size > MAX_SYMBOLS:
            raise ValueError(f"{text[:40]!r} expands to more than {MAX_SYMBOLS:,} symbols")
        out += [s[at:match.start()], body * times]
        at = match.end()
    return "".join(out) + s[at:]


def expand(text: str) -> str:
    """`text` with its repetitions written out; ValueError for a symbol other than E t m L | ( ) * and digits, or
    an expansion of more than MAX_SYMBOLS."""
    s = re.sub(r"[\s,]", "", text)
    bad = sorted(set(re.sub(r"[EtmL|()*0-9]", "", s)))
    if bad:
        raise ValueError(f"unknown symbol {bad[0]!r} in {text[:40]!r}: use E (embedding), t (layer), m (MTP), "
                         "L (loss), | (stage boundary), (...)*n and a symbol followed by *n")
    while _GROUP.search(s):
        s = _sub(_GROUP, s, text)
    s = _sub(_SINGLE, s, text)
    if re.search(r"[()*0-9]", s) or len(s) > MAX_SYMBOLS:
        raise ValueError(f"cannot read the repetitions of {text[:40]!r}: write (...)*n or a symbol followed by *n")
    return s


@lru_cache(maxsize=64)
def parse(layout: str | tuple[str, ...]) -> tuple[Stage, ...]:
    """The virtual stages of a layout string or a tuple of stage strings, in order; ValueError naming what is
    wrong with the text (checks against the model and the schedule are `check`'s)."""
    if isinstance(layout, str):
        stages = expand(layout).split("|")
    else:
        stages = [expand(stage) for stage in layout]
        if any("|" in s for s in stages):
            raise ValueError("a list of stages holds one stage an entry: no '|' inside one")
    return tuple(Stage(layers=s.count("t"), embedding="E" in s, mtp=s.count("m"), loss="L" in s) for s in stages)


def check(layout, stages: int, layers: int, depth: int) -> tuple[Stage, ...]:
    """The parsed layout, checked against the schedule's virtual stages, the model's layers and MTP depth: the
    embedding first of the first stage, the loss last of the last, the MTP modules after every layer; ValueError."""
    parsed = parse(layout)
    text = expand(layout) if isinstance(layout, str) else "|".join(expand(s) for s in layout)
    if len(parsed) != stages:
        raise ValueError(f"{len(parsed)} stages, the schedule has {stages} virtual stages")
    order = text.replace("|", "")
    if text.count("E") != 1 or not text.startswith("E"):
        raise ValueError("the embedding (E) comes once, first of the first stage")
    if text.count("L") != 1 or not text.endswith("L"):
        raise ValueError("the loss (L) comes once, last of the last stage")
    counted = order.count("t")
    if counted != layers:
        raise ValueError(f"{counted} transformer layers (t), the model has {layers}")
    if order.count("m") != depth:
        raise ValueError(f"{order.count('m')} MTP modules (m), model.mtp has {depth}" if depth else
                         f"{order.count('m')} MTP modules (m) without model.mtp")
    if "m" in order and "t" in order[order.index("m"):]:
        raise ValueError("the MTP modules (m) come after every transformer layer (t)")
    return parsed
