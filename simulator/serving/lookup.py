"""Lookup tables over token counts: a function of M tabulated once, grown on demand.

The serving simulator prices a step at the token count M it runs; the cost of every token-proportional
part is a function of M alone, so it is computed for M = 0, 1, 2, ... once and read thereafter.
"""

from __future__ import annotations

import numpy as np


def tabulated(tables: dict, name: str, fn, upto: int) -> np.ndarray:
    """The table `name` of fn(np.arange(size)) with size > upto, grown (doubled) on demand."""
    tab = tables.get(name)
    if tab is None or len(tab) <= upto:
        size = max(upto + 1, 2 * (0 if tab is None else len(tab)), 1024)
        tab = fn(np.arange(size))
        tables[name] = tab
    return tab
