"""Identity rules of the paper store, without SQL: how an item becomes a record, when two
records are one paper, and how fields merge (a more authoritative origin wins; nothing known
is ever blanked). :mod:`crawler.db.store` applies them inside its transaction.

Every value is bounded to its column here, before any SQL: one over-long field from the
network must cost at most that field, never the batch it came in (issue 12 A3).
"""

from __future__ import annotations

from typing import Any

from crawler import normalise
from crawler.db.models import PaperRow
from crawler.items import Paper

SCALAR_FIELDS = ("title", "abstract", "journal", "published")
LIST_FIELDS = ("authors", "publication_types", "mesh", "keywords")
KEYS = ("doi_key", "pmid", "pmcid")


def _no_nul(text: str) -> str:
    # PostgreSQL text cannot hold NUL (SQLite can): drop it from network text before storing.
    return text.replace("\x00", "") if "\x00" in text else text


def _no_nul_list(texts: list[str]) -> list[str]:
    # One search of the joined texts instead of one per text (a PubMed record has ~10 authors).
    if "\x00" not in "".join(texts):
        return list(texts)
    return [_no_nul(t) for t in texts]


def column_width(model: Any, name: str) -> int:
    """The declared width of a ``String(n)`` column of ``model``."""
    width = model.__table__.c[name].type.length
    assert isinstance(width, int), f"{model.__tablename__}.{name} has no width"
    return width


_JOURNAL_WIDTH = column_width(PaperRow, "journal")


def fit(text: str | None, width: int) -> str | None:
    """``text`` cut to ``width`` characters (an ellipsis marks the cut), for display fields.

    PostgreSQL refuses a value longer than its ``String(n)`` column, failing the whole
    batch that holds it (SQLite stores it); a display field such as a journal name is still
    worth its first words (issue 12 A3). Identifiers are never cut: see ``clean_doi``.
    """
    if text is None or len(text) <= width:
        return text
    return text[: width - 1].rstrip() + "\u2026"


def prepare(item: Paper) -> dict[str, Any]:
    """A paper row (as a dict) from an item: identifiers normalised, fingerprint computed."""
    doi = normalise.clean_doi(item.doi)
    return {
        "doi": doi,
        "doi_key": normalise.doi_key(doi),
        "pmid": normalise.pmid(item.pmid),
        "pmcid": normalise.pmcid(item.pmcid),
        "title": normalise.squash(item.title),
        "title_key": normalise.title_fingerprint(item.title),
        "abstract": _no_nul(item.abstract).strip() or None if item.abstract else None,
        "journal": fit(normalise.squash(item.journal), _JOURNAL_WIDTH),
        "published": item.published,
        "year": item.published.year if item.published else None,
        "authors": _no_nul_list(item.authors),
        "publication_types": _no_nul_list(item.publication_types),
        "mesh": _no_nul_list(item.mesh),
        "keywords": _no_nul_list(item.keywords),
        "rank": item.rank,
    }


def merge_into(row: dict[str, Any], rec: dict[str, Any], rec_rank: int) -> bool:
    """Fill ``row`` from ``rec``; return whether anything changed.

    A value from a record at least as authoritative as anything merged so far replaces the
    stored one; a weaker record only fills what is empty. Empty values never blank anything.
    """
    changed = False
    stronger = rec_rank >= row.get("rank", 0)
    for name in (*SCALAR_FIELDS, *LIST_FIELDS):
        value = rec.get(name)
        if value in (None, "", []):
            continue
        if row.get(name) in (None, "", []) or (stronger and row.get(name) != value):
            row[name] = value
            changed = True
    for key in ("doi", "doi_key", "pmid", "pmcid"):
        if rec.get(key) and not row.get(key):
            row[key] = rec[key]
            changed = True
    if changed:
        row["title_key"] = normalise.title_fingerprint(row.get("title")) or row.get("title_key")
        published = row.get("published")
        row["year"] = published.year if published else row.get("year")
    if rec_rank > row.get("rank", 0):
        row["rank"] = rec_rank
        changed = True
    return changed


class Index:
    """In-memory view of the rows a batch can touch, indexed by every identity key."""

    def __init__(self) -> None:
        self.by_key: dict[tuple[str, str], dict[str, Any]] = {}
        self.by_title: dict[str, list[dict[str, Any]]] = {}

    def add(self, row: dict[str, Any]) -> None:
        for key in KEYS:
            if row.get(key):
                self.by_key[(key, row[key])] = row
        if row.get("title_key"):
            bucket = self.by_title.setdefault(row["title_key"], [])
            if all(r is not row for r in bucket):
                bucket.append(row)

    def remove(self, row: dict[str, Any]) -> None:
        for key in KEYS:
            if row.get(key) and self.by_key.get((key, row[key])) is row:
                del self.by_key[(key, row[key])]
        if row.get("title_key"):
            bucket = self.by_title.get(row["title_key"], [])
            self.by_title[row["title_key"]] = [r for r in bucket if r is not row]

    def holder(self, key: str, value: str | None) -> dict[str, Any] | None:
        return self.by_key.get((key, value)) if value else None

    def matches(self, rec: dict[str, Any]) -> list[dict[str, Any]]:
        """Rows that are this record, strongest evidence first, without repeats."""
        found: list[dict[str, Any]] = []
        for key in KEYS:
            row = self.by_key.get((key, rec[key])) if rec.get(key) else None
            if row is not None and all(row is not r for r in found):
                found.append(row)
        if rec.get("title_key"):
            for row in self.by_title.get(rec["title_key"], []):
                if title_compatible(row, rec) and all(row is not r for r in found):
                    found.append(row)
        return found


def title_compatible(row: dict[str, Any], rec: dict[str, Any]) -> bool:
    """A title match counts only when no identifier or year contradicts it."""
    for key in KEYS:
        if row.get(key) and rec.get(key) and row[key] != rec[key]:
            return False
    return not (row.get("year") and rec.get("year") and row["year"] != rec["year"])


def compatible(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(not (a.get(k) and b.get(k) and a[k] != b[k]) for k in KEYS)


def same_paper(primary: dict[str, Any], other: dict[str, Any], rec: dict[str, Any]) -> bool:
    """Whether ``other``, also matched by ``rec``, is the same paper as ``primary``.

    An identifier ``rec`` shares with ``other`` is proof enough (print and online years may
    differ). A bare title match is not: a record without a year matches every stored paper
    of that title, and papers of different years must not be folded together through it.
    """
    if not (compatible(primary, other) and compatible(other, rec)):
        return False
    if any(rec.get(k) and other.get(k) == rec[k] for k in KEYS):
        return True
    return title_compatible(primary, other)
