"""What happened to a paper travels with it into RIS and BibTeX (a note Zotero shows)."""

from __future__ import annotations

import io
from typing import Any

from crawler.export import write_bibtex, write_ris


def _record(status: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "doi": "10.1172/jci144201", "pmid": "34196305", "pmcid": None,
        "title": "Passive transfer of fibromyalgia symptoms", "journal": "J Clin Invest",
        "published": "2021-07-01", "authors": ["Goebel A"], "abstract": None,
        "topics": ["fibromyalgia"], "publication_types": [], "first_seen": "2026-01-01",
        "sightings": [], "status": status, "events": events,
    }  # fmt: skip


RETRACTED = _record(
    "retracted",
    [{"type": "corrected", "notice_doi": None, "notice_pmid": None},
     {"type": "retracted", "notice_doi": None, "notice_pmid": "40000001"}],
)  # fmt: skip


def _out(writer: Any, records: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer(records, buffer)
    return buffer.getvalue()


def test_ris_and_bibtex_carry_the_status_and_its_notice() -> None:
    assert "N1  - Status: Retracted (notice PMID 40000001)" in _out(write_ris, [RETRACTED])
    assert "note = {Status: Retracted (notice PMID 40000001)}" in _out(write_bibtex, [RETRACTED])


def test_a_current_paper_has_no_status_note() -> None:
    current = _record("current", [])
    assert "N1  -" not in _out(write_ris, [current])
    assert "note =" not in _out(write_bibtex, [current])
