"""A fresh clone and an installed wheel both work: simrack reads only its own files, found through the
package, and says which version wrote a report."""

from __future__ import annotations

import re
from pathlib import Path

import simulator
from simulator import data

ROOT = Path(__file__).resolve().parents[1]
# a path into the folder of reference material kept beside some checkouts (a fresh clone has none)
OUTSIDE = re.compile(r"\.\./shared|/\s*[\"']shared[\"']|[\"']shared[\"']\s*/|[\"']reference[\"']\s*/\s*[\"']published")
SOURCES = ("simulator", "topologies", "tests", "benchmarks", "scenarios", ".ci")


def test_nothing_reads_the_folder_beside_the_checkout():
    files = [p for top in SOURCES for p in sorted((ROOT / top).rglob("*"))
             if p.is_file() and (p.suffix in {".py", ".yaml", ".yml", ".toml", ""}) and "__pycache__" not in p.parts]
    assert any(p.name == "conftest.py" for p in files) and any(p.suffix == ".yaml" for p in files)
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in files
            for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if OUTSIDE.search(line)]
    assert not hits, "\n".join(hits)


def test_published_figures_ship_inside_the_package():
    package = Path(simulator.__file__).resolve().parent
    assert data.PUBLISHED.resolve().is_relative_to(package)
    cases = data.reference()
    assert "korthikanti2022_iteration_times" in cases and "hw_h100_sxm" in cases
    for key, case in cases.items():
        assert case["id"] == key
        assert isinstance(case["source"]["title"], str) and case["source"]["title"].strip(), key
        assert isinstance(case["verified"], bool), key
        assert "reported" in case or "test_points" in case or "derived" in case, key


def test_reference_is_a_copy():
    first = data.reference()
    first["korthikanti2022_iteration_times"]["reported"] = None
    assert data.reference()["korthikanti2022_iteration_times"]["reported"] is not None
