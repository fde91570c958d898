"""The names a preset answers to: its file's (devices.yaml entry's) and the `aliases` it lists, matched ignoring case
and punctuation ("H100 SXM" = "h100-sxm"). Read from the preset folders; the loader expands what they name."""

from __future__ import annotations

import re
from pathlib import Path

import yaml


def preset_key(name: str) -> str:
    """The spelling presets are matched by: lower case, letters and digits only."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


def spelled(name: object, candidates: dict[str, list]) -> str | None:
    """The key of `candidates` ({key: aliases}) that `name` spells, ignoring case and punctuation; None if none."""
    if not isinstance(name, str):
        return None
    wanted = preset_key(name)
    return next((key for key, aliases in candidates.items()
                 if wanted in {preset_key(str(n)) for n in (key, *aliases)}), None)


def preset_aliases(folder: Path) -> dict[str, list]:
    """{preset: the other names it answers to (its file's `aliases`)} for `folder/*.yaml` but devices.yaml."""
    return {path.stem: entry_aliases(_read(path)) for path in sorted(folder.glob("*.yaml")) if path.stem != "devices"}


def device_aliases(folder: Path) -> dict[str, list]:
    """{entry of folder/devices.yaml: the other names it answers to}, in the file's order ({} without one)."""
    data = _read(folder / "devices.yaml")
    return {key: entry_aliases(entry) for key, entry in data.items()} if isinstance(data, dict) else {}


def entry_aliases(entry: object) -> list:
    """The `aliases` list of a preset mapping ([] if none)."""
    aliases = entry.get("aliases") if isinstance(entry, dict) else None
    return [str(a) for a in aliases] if isinstance(aliases, list) else []


def _read(path: Path) -> object:
    """The YAML in `path`; None if missing or malformed (the loader reports it when the preset is asked for)."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
