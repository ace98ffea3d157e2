"""The paper identity store: one record per paper, however many places it was seen.

``upsert`` takes a batch of normalised :class:`~crawler.items.Paper` items and, in one
transaction, matches each against the database by DOI, else PMID, else PMCID, else title
fingerprint plus year; fills in fields (a more authoritative origin wins whatever the order of
arrival, nothing known is ever blanked); merges two stored papers that turn out to be one;
and records every sighting.

Concurrency: identity needs a read across four keys followed by a write, which ``INSERT ...
ON CONFLICT`` on one key cannot express. So writers are serialised for the length of one
batch: ``BEGIN IMMEDIATE`` on SQLite (see crawler.db.engine) and a transaction-scoped advisory
lock on PostgreSQL. Unique constraints on doi_key, pmid and pmcid remain the last guard.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, delete, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from crawler import normalise
from crawler.db.engine import transaction
from crawler.db.models import DeliveryPaper, PaperRow, PaperTopic, Sighting, utcnow
from crawler.items import Paper

#: Arbitrary constant naming litwatch's store lock among PostgreSQL advisory locks.
PG_STORE_LOCK = 0x6C697477  # "litw"
#: Values per IN (...): one look-up per key for a default batch of 500 records, well under the
#: 999 bound parameters of SQLite before 3.32.
_IN_CHUNK = 500

SCALAR_FIELDS = ("title", "abstract", "journal", "published")
LIST_FIELDS = ("authors", "publication_types", "mesh", "keywords")
KEYS = ("doi_key", "pmid", "pmcid")


@dataclass
class UpsertResult:
    """What one batch did."""

    new_paper_ids: list[int] = field(default_factory=list)
    #: Items that matched a paper already stored or another item of the same batch.
    merged: int = 0
    #: Stored papers folded into another because they turned out to be the same paper.
    collapsed: int = 0
    new_sightings: int = 0
    #: Paper id for each input item, in input order.
    paper_ids: list[int] = field(default_factory=list)


def _no_nul(text: str) -> str:
    # PostgreSQL text cannot hold NUL (SQLite can): drop it from network text before storing.
    return text.replace("\x00", "") if "\x00" in text else text


def _no_nul_list(texts: list[str]) -> list[str]:
    # One search of the joined texts instead of one per text (a PubMed record has ~10 authors).
    if "\x00" not in "".join(texts):
        return list(texts)
    return [_no_nul(t) for t in texts]


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
        "journal": normalise.squash(item.journal),
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


class _Index:
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
                if _title_compatible(row, rec) and all(row is not r for r in found):
                    found.append(row)
        return found


def _title_compatible(row: dict[str, Any], rec: dict[str, Any]) -> bool:
    """A title match counts only when no identifier or year contradicts it."""
    for key in KEYS:
        if row.get(key) and rec.get(key) and row[key] != rec[key]:
            return False
    return not (row.get("year") and rec.get("year") and row["year"] != rec["year"])


def _compatible(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(not (a.get(k) and b.get(k) and a[k] != b[k]) for k in KEYS)


def _same_paper(primary: dict[str, Any], other: dict[str, Any], rec: dict[str, Any]) -> bool:
    """Whether ``other``, also matched by ``rec``, is the same paper as ``primary``.

    An identifier ``rec`` shares with ``other`` is proof enough (print and online years may
    differ). A bare title match is not: a record without a year matches every stored paper
    of that title, and papers of different years must not be folded together through it.
    """
    if not (_compatible(primary, other) and _compatible(other, rec)):
        return False
    if any(rec.get(k) and other.get(k) == rec[k] for k in KEYS):
        return True
    return _title_compatible(primary, other)


def upsert(engine: Engine, items: Sequence[Paper], *, now: datetime | None = None) -> UpsertResult:
    """Store a batch of items in one transaction; see the module docstring."""
    if not items:
        return UpsertResult()
    now = now or utcnow()
    records = [prepare(item) for item in items]
    with transaction(engine) as session:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_STORE_LOCK})
        return _upsert_locked(session, items, records, now)


def _load_candidates(session: Session, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every stored row a record of the batch could match, by identifier or by title."""
    wanted: dict[str, set[str]] = {k: set() for k in KEYS}
    # Title look-ups grouped by the identifiers the records carry (see _load_by_title).
    titles: dict[tuple[str, ...], set[str]] = {}
    for rec in records:
        for key in KEYS:
            if rec.get(key):
                wanted[key].add(rec[key])
        if rec.get("title_key"):
            shape = tuple(k for k in KEYS if rec.get(k))
            titles.setdefault(shape, set()).add(rec["title_key"])
    rows: dict[int, dict[str, Any]] = {}
    for key, values in wanted.items():
        _load_into(rows, session, getattr(PaperRow, key), values)
    for shape, keys in titles.items():
        _load_by_title(rows, session, shape, keys)
    return list(rows.values())


def _load_by_title(
    rows: dict[int, dict[str, Any]], session: Session, shape: tuple[str, ...], titles: set[str]
) -> None:
    """Rows of these titles that a record carrying the identifiers ``shape`` can match by title.

    A stored row sharing an identifier with a record was loaded by identifier already; any
    other row is title-compatible (``_title_compatible``) only if, for each identifier, the
    row or the record lacks it. So only rows lacking all of the record's identifiers are
    asked for. Without this, a common title ("Erratum", "Reply", "Editorial") brought back
    every stored paper of that title with every batch: quadratic in the size of the store.
    """
    unknown = [getattr(PaperRow, key).is_(None) for key in shape]
    _load_into(rows, session, PaperRow.title_key, titles, *unknown)


def _load_into(
    rows: dict[int, dict[str, Any]],
    session: Session,
    column: Any,
    values: set[str],
    *conditions: Any,
) -> None:
    cols = list(PaperRow.__table__.columns)
    ordered = sorted(values)
    for start in range(0, len(ordered), _IN_CHUNK):
        chunk = ordered[start : start + _IN_CHUNK]
        stmt = select(*cols).where(column.in_(chunk), *conditions)
        for r in session.execute(stmt).mappings():
            rows.setdefault(r["id"], dict(r))


def _upsert_locked(
    session: Session, items: Sequence[Paper], records: list[dict[str, Any]], now: datetime
) -> UpsertResult:
    result = UpsertResult()
    index = _Index()
    rows: list[dict[str, Any]] = []  # every row the batch touches, stored or new
    for row in _load_candidates(session, records):
        row["_orig"] = _row_values(row)
        index.add(row)
    targets: list[dict[str, Any]] = []
    for rec in records:
        found = index.matches(rec)
        if not found:
            row = {**rec, "first_seen": now}
            index.add(row)
            rows.append(row)
            targets.append(row)
            continue
        result.merged += 1
        primary = found[0]
        index.remove(primary)
        for other in found[1:]:
            if _same_paper(primary, other, rec):
                index.remove(other)
                _absorb(session, primary, other, result)
        if not _compatible(primary, rec):  # identifiers disagree: keep the stored ones
            rec = {k: v for k, v in rec.items() if k not in KEYS}
        # An identifier held by another paper stays there (unique keys; no silent stealing).
        rec = {k: v for k, v in rec.items() if k not in KEYS or not index.holder(k, v)}
        merge_into(primary, rec, rec["rank"])
        index.add(primary)
        rows.append(primary)
        targets.append(primary)
    live = [r for r in _unique(rows) if "_into" not in r]
    updates = [
        _row_values(r) | {"id": r["id"], "updated": now}
        for r in live
        if "id" in r and _row_values(r) != r["_orig"]
    ]
    if updates:
        session.execute(update(PaperRow), updates)
    fresh = [r for r in live if "id" not in r]
    if fresh:
        ids = _insert_papers(session, [_row_values(r) for r in fresh], now)
        for row, new_id in zip(fresh, ids, strict=True):
            row["id"] = new_id
            result.new_paper_ids.append(new_id)
    result.paper_ids = [_resolve(row)["id"] for row in targets]
    _store_children(session, items, records, result.paper_ids, now, result)
    return result


def _insert_papers(session: Session, values: list[dict[str, Any]], now: datetime) -> list[int]:
    """Insert new paper rows; return their ids in the order given.

    ``INSERT ... RETURNING`` with ``sort_by_parameter_order`` would give the ids, but SQLite
    offers SQLAlchemy no way to keep RETURNING rows in parameter order, so it falls back to
    one statement per row (and re-splices the results after each): a third of an ingest's
    time. The ids are therefore taken first, then inserted in one executemany.
    """
    for v in values:  # fresh dicts (from _row_values): filled in place
        v["first_seen"] = v["updated"] = now
    ids = _allocate_ids(session, len(values))
    if ids is None:  # another dialect: let the database number the rows
        stmt = insert(PaperRow).returning(PaperRow.id, sort_by_parameter_order=True)
        return list(session.scalars(stmt, values).all())
    for v, i in zip(values, ids, strict=True):
        v["id"] = i
    session.connection().execute(insert(PaperRow), values)
    return ids


def _allocate_ids(session: Session, count: int) -> list[int] | None:
    """``count`` unused paper ids, or None where this is not known to be safe.

    SQLite numbers an INTEGER PRIMARY KEY (no AUTOINCREMENT) max(id) + 1, and writers are
    serialised (BEGIN IMMEDIATE): taking the same numbers first changes nothing. PostgreSQL
    draws them from the column's own sequence, as its DEFAULT would.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        top = session.scalar(select(func.max(PaperRow.id))) or 0
        return list(range(top + 1, top + 1 + count))
    if dialect == "postgresql":
        draw = text(
            "SELECT nextval(pg_get_serial_sequence('papers', 'id')) FROM generate_series(1, :n)"
        )
        return [int(i) for i in session.scalars(draw, {"n": count})]
    return None


def _absorb(
    session: Session, into: dict[str, Any], other: dict[str, Any], result: UpsertResult
) -> None:
    """Fold row ``other`` into ``into`` (they are one paper), in memory and in the database."""
    merge_into(into, other, other.get("rank", 0))
    other["_into"] = into
    if "id" not in other:
        return  # a row new in this batch: nothing stored yet
    if "id" not in into:
        # ``into`` is new in this batch: it takes over the stored row instead of adding one.
        into.update(id=other["id"], first_seen=other["first_seen"], _orig=other["_orig"])
        return
    _move_children(session, other["id"], into["id"])
    # Free the unique keys before ``into`` takes them over in the UPDATE that follows.
    session.execute(delete(PaperRow).where(PaperRow.id == other["id"]))
    result.collapsed += 1


def _resolve(row: dict[str, Any]) -> dict[str, Any]:
    while "_into" in row:
        row = row["_into"]
    return row


def _unique(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    seen: set[int] = set()
    for row in rows:
        if id(row) not in seen:
            seen.add(id(row))
            out.append(row)
    return out


_COLUMNS = (
    "doi", "doi_key", "pmid", "pmcid", "title", "title_key", *SCALAR_FIELDS[1:], "year",
    *LIST_FIELDS, "rank",
)  # fmt: skip


def _row_values(row: dict[str, Any]) -> dict[str, Any]:
    return {name: row.get(name) for name in _COLUMNS}


def _move_children(session: Session, old: int, new: int) -> None:
    """Re-point everything that refers to paper ``old`` at paper ``new``, dropping repeats."""
    model: Any
    for model, cols in (
        (Sighting, ("source_id", "url")),
        (PaperTopic, ("topic",)),
        (DeliveryPaper, ("delivery_id",)),
    ):
        existing = {
            tuple(r)
            for r in session.execute(
                select(*[getattr(model, c) for c in cols]).where(model.paper_id == new)
            )
        }
        for r in session.execute(select(model).where(model.paper_id == old)).scalars():
            if tuple(getattr(r, c) for c in cols) in existing:
                session.delete(r)
            else:
                r.paper_id = new
        session.flush()


def _insert_ignore(
    session: Session, model: type[Any], rows: list[dict[str, Any]], *, count: bool = True
) -> int:
    """INSERT ... ON CONFLICT DO NOTHING for the dialect in use; return rows inserted.

    Without ``count`` nothing is counted (0 is returned): the statement then needs no
    RETURNING and runs as a plain executemany, cheaper per row.
    """
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
    ins = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table = model.__table__
    stmt = ins(table).on_conflict_do_nothing()
    if not count:
        session.connection().execute(stmt, rows)
        return 0
    # RETURNING yields only the rows actually inserted, on both dialects.
    return len(session.connection().execute(stmt.returning(table.c.paper_id), rows).all())


def _store_children(
    session: Session,
    items: Sequence[Paper],
    records: list[dict[str, Any]],
    paper_ids: list[int],
    now: datetime,
    result: UpsertResult,
) -> None:
    topics: dict[tuple[int, str], dict[str, Any]] = {}
    sightings: dict[tuple[int, str, str], dict[str, Any]] = {}
    for item, rec, pid in zip(items, records, paper_ids, strict=True):
        for topic in item.topics:
            topics[(pid, topic)] = {"paper_id": pid, "topic": topic}
        url = item.url or ""
        key = (pid, item.source_id, url)
        if key in sightings:
            continue
        seen = item.seen_title or item.title
        sightings[key] = {
            "paper_id": pid,
            "source_id": item.source_id,
            "kind": item.sighting_kind,
            "url": url,
            # The record's title is that text squashed already (the usual case: PubMed's).
            "title": rec["title"] if seen is item.title else normalise.squash(seen),
            "seen_at": now,
        }
    _insert_ignore(session, PaperTopic, list(topics.values()), count=False)
    result.new_sightings = _insert_ignore(session, Sighting, list(sightings.values()))
