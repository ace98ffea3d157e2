"""Export format names and the record shape every writer reads (light: the CLI's option
choices come from here)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, get_args

Record = Mapping[str, Any]
ExportFormat = Literal["jsonl", "csv", "ris", "bibtex"]
FORMATS: tuple[str, ...] = get_args(ExportFormat)
