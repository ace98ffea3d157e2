"""Where the shared real-world corpus is: ``$LITWATCH_CORPUS``, else ``../shared/corpus`` next to
the checkout (how CI lays it out), else the developers' ``/work/shared/corpus``.

Tests read these files by path and skip when they are absent, so a fresh clone still passes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[2]


def _find() -> Path:
    candidates = [
        os.environ.get("LITWATCH_CORPUS"),
        _REPO.parent / "shared" / "corpus",
        "/work/shared/corpus",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return _REPO.parent / "shared" / "corpus"


CORPUS = _find()


def corpus_path(relative: str) -> Path:
    """The corpus file ``relative`` (e.g. ``pubmed/esearch1_biopython.xml``), or skip the test."""
    path = CORPUS / relative
    if not path.is_file():
        pytest.skip(f"corpus file {relative} not found under {CORPUS} (set LITWATCH_CORPUS)")
    return path
