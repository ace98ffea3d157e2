"""Helpers every export writer shares: field values as text, dates, landing URLs."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from urllib.parse import quote, urlsplit

from crawler.export.formats import Record
from crawler.normalise import squash

# --- Shared helpers -------------------------------------------------------------------------

_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")


def _date_parts(value: object) -> tuple[str, str, str] | None:
    """("2021", "07", "01") from "2021-07-01"; missing month or day parts are ""."""
    m = _DATE.match(_text(value))
    if not m:
        return None
    month, day = m.group(2) or "", m.group(3) or ""
    if not month or not 1 <= int(month) <= 12:
        return m.group(1), "", ""
    return m.group(1), month, day if day and 1 <= int(day) <= 31 else ""


def is_preprint(record: Record) -> bool:
    """A preprint by publication type, or seen only as a preprint (never as an article)."""
    types = {t.casefold() for t in _strings(record.get("publication_types"))}
    if "preprint" in types:
        return True
    kinds = {s.get("kind") for s in record.get("sightings") or [] if isinstance(s, Mapping)}
    return "preprint" in kinds and "article" not in kinds


def is_press_only(record: Record) -> bool:
    """A stored "paper" that is only a news story naming no paper (issue 12, B1).

    Versions before issue 12 stored such stories as papers with no identifier and no title;
    exports hold papers only, so they are left out (the same rule as
    :func:`digests.selection.press_only`: nothing that names a paper, seen only as news).
    """
    if any(_text(record.get(name)).strip() for name in ("doi", "pmid", "pmcid", "title")):
        return False
    kinds = {s.get("kind") for s in record.get("sightings") or [] if isinstance(s, Mapping)}
    return kinds <= {"news"}


def landing_url(record: Record) -> str:
    """The DOI resolver URL, else the PubMed page, else the first http(s) sighting URL."""
    doi = _text(record.get("doi"))
    if doi:
        # DOI Handbook: characters such as "#", "?", "%" and "<" must be encoded in a URL.
        return "https://doi.org/" + quote(doi, safe="/():;[]")
    pmid = _text(record.get("pmid"))
    if pmid.isdigit():
        return f"https://pubmed.ncbi.nlm.nih.gov/{pmid}/"
    for url in _sighting_urls(record):
        # Only web links: a "javascript:" URL from a feed would become clickable in Zotero.
        if urlsplit(url).scheme.lower() in {"http", "https"}:
            return quote(url, safe=":/?#[]@!$&'()*+,;=%~")
    return ""


def _text(value: object) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _strings(value: object) -> list[str]:
    if not isinstance(value, list | tuple):
        return []
    return [item for item in (_text(v).strip() for v in value) if item]


def _flat(text: str) -> str:
    """One line of text: control characters dropped, white space (any line break) squashed."""
    cleaned = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text)
    return squash(cleaned) or ""


def _sighting_urls(record: Record) -> list[str]:
    urls = (s.get("url") for s in record.get("sightings") or [] if isinstance(s, Mapping))
    return list(dict.fromkeys(url for url in urls if isinstance(url, str) and url))


_STATUS_LABELS = {
    "retracted": "Retracted",
    "withdrawn": "Withdrawn",
    "concern": "Expression of concern",
    "corrected": "Corrected",
    "updated": "Updated",
}


def status_note(record: Record) -> str | None:
    """ "Status: Retracted (notice 10.x/y)" for a paper something happened to, else None: a
    note field reference managers show (Zotero shows RIS N1 and BibTeX note)."""
    label = _STATUS_LABELS.get(_text(record.get("status")))
    if label is None:
        return None
    status = record.get("status")
    notices = [
        _text(e.get("notice_doi") or (e.get("notice_pmid") and f"PMID {e['notice_pmid']}"))
        for e in record.get("events") or []
        if isinstance(e, Mapping) and e.get("type") == status
    ]
    shown = [n for n in notices if n]
    return f"Status: {label}" + (f" (notice {shown[0]})" if shown else "")
