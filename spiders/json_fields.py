"""Defensive reading of JSON API answers: typed values out of untrusted, loosely typed input.

Shared by the Europe PMC and bioRxiv parsers. Every helper answers None (or an empty list)
for a value of the wrong type instead of raising, so one odd record never sinks a page.
"""

from __future__ import annotations

import json
import re
from datetime import date
from typing import Any

from crawler.normalise import squash

__all__ = ["as_date", "as_int", "as_text", "at", "items", "load_object"]

_ISO_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")


def load_object(body: bytes) -> dict[str, Any]:
    """The JSON object in ``body``; ValueError when it is empty, not JSON or not an object.

    ``json.loads`` detects UTF-8/16/32 itself. Absurdly deep nesting (RecursionError) and bad
    bytes (UnicodeDecodeError, a ValueError) are reported the same way as bad syntax.
    """
    if not body or not body.strip():
        raise ValueError("empty response body")
    try:
        data = json.loads(body)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"JSON {type(data).__name__}, not an object")
    return data


def at(obj: Any, *path: str) -> Any:
    """``obj[path[0]][path[1]]...``, or None where a step is missing or not an object."""
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def items(obj: Any, *path: str) -> list[Any]:
    """The list at ``path``; a lone value counts as a list of one, anything else as empty."""
    value = at(obj, *path)
    if isinstance(value, list):
        return value
    return [] if value is None or isinstance(value, dict) else [value]


def as_text(value: Any) -> str | None:
    """A string or a number as squashed text; anything else (objects, lists, bools) is None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    return squash(value) if isinstance(value, str) else None


def as_int(value: Any) -> int | None:
    """An int, or a string of digits ("57"); None for anything else (bools, floats, "NA")."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.isascii() and stripped.isdigit() and len(stripped) <= 18:
            return int(stripped)
    return None


def as_date(value: Any) -> date | None:
    """An ISO calendar date ("2025-06-18", or the date part of a timestamp), else None."""
    if not isinstance(value, str):
        return None
    match = _ISO_DATE.match(value.strip())
    if not match:
        return None
    try:
        return date(*map(int, match.groups()))
    except ValueError:  # "2025-02-30"
        return None
