"""Writing litwatch TOML configuration files for tests and benchmarks."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def toml_value(value: Any) -> str:
    """``value`` as a TOML value (booleans, numbers, strings and lists of them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(type(value).__name__)


def write_toml(
    path: Path,
    tables: Mapping[str, Mapping[str, Any]],
    sources: Sequence[Mapping[str, Any]] = (),
) -> Path:
    """Write ``tables`` ({"database": {...}, "email.smtp": {...}}) then ``[[sources]]``."""
    lines: list[str] = []
    for name, values in tables.items():
        lines += [f"[{name}]", *(f"{k} = {toml_value(v)}" for k, v in values.items()), ""]
    for source in sources:
        lines += ["[[sources]]", *(f"{k} = {toml_value(v)}" for k, v in source.items()), ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
