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

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, delete, func, insert, select, text, update
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session

from crawler import normalise
from crawler.db import events, versions
from crawler.db.engine import insert_ignore, transaction
from crawler.db.identity import (
    KEYS,
    LIST_FIELDS,
    SCALAR_FIELDS,
    Index,
    column_width,
    compatible,
    merge_into,
    prepare,
    same_paper,
)
from crawler.db.models import DeliveryPaper, PaperRow, PaperTopic, Sighting, utcnow
from crawler.items import Paper

log = logging.getLogger(__name__)
#: Arbitrary constant naming litwatch's store lock among PostgreSQL advisory locks.
PG_STORE_LOCK = 0x6C697477  # "litw"
#: A sighting URL longer than its column is dropped, not cut: a cut URL leads elsewhere.
_URL_WIDTH = column_width(Sighting, "url")
#: Values per IN (...): one look-up per key for a default batch of 500 records, well under the
#: 999 bound parameters of SQLite before 3.32.
_IN_CHUNK = 500


@dataclass
class UpsertResult:
    """What one batch did."""

    new_paper_ids: list[int] = field(default_factory=list)
    #: Items that matched a paper already stored or another item of the same batch.
    merged: int = 0
    #: Stored papers folded into another because they turned out to be the same paper.
    collapsed: int = 0
    new_sightings: int = 0
    #: Paper id for each stored item, in input order (``events_only`` items and refused
    #: items have none).
    paper_ids: list[int] = field(default_factory=list)
    #: Events the batch's records reported that were new (crawler.db.events).
    events: int = 0
    #: Preprint-to-journal links the batch's records reported that were new.
    links: int = 0
    #: Items the database refused, by position in the batch, with its reason.
    rejected: list[tuple[int, str]] = field(default_factory=list)


def upsert(engine: Engine, items: Sequence[Paper], *, now: datetime | None = None) -> UpsertResult:
    """Store a batch of items in one transaction; see the module docstring.

    Values are bounded to their columns first (``identity.prepare``). Should the database
    still refuse a value (``DataError``: one this module does not know to bound), the batch is
    stored again item by item and only the refused items are lost, each logged and listed in
    ``rejected``: one bad item costs that item, never its batch (issue 12 A3).
    """
    if not items:
        return UpsertResult()
    now = now or utcnow()
    try:
        return _upsert_batch(engine, items, now)
    except DataError:
        if len(items) == 1:
            raise
    return _upsert_each(engine, items, now)


def _upsert_each(engine: Engine, items: Sequence[Paper], now: datetime) -> UpsertResult:
    """Store ``items`` one transaction each, skipping those the database refuses."""
    total = UpsertResult()
    for position, item in enumerate(items):
        try:
            one = _upsert_batch(engine, [item], now)
        except DataError as exc:
            reason = f"{type(exc.orig or exc).__name__}: {exc.orig or exc}".splitlines()[0]
            log.warning("item refused by the database: source=%s url=%s %s",
                        item.source_id, item.url, reason)  # fmt: skip
            total.rejected.append((position, reason))
            continue
        total.new_paper_ids += one.new_paper_ids
        total.merged += one.merged
        total.collapsed += one.collapsed
        total.new_sightings += one.new_sightings
        total.paper_ids += one.paper_ids
        total.events += one.events
        total.links += one.links
    return total


def _upsert_batch(engine: Engine, items: Sequence[Paper], now: datetime) -> UpsertResult:
    papers = [item for item in items if not item.events_only]
    records = [prepare(item) for item in papers]
    learned = [event for item in items for event in item.events]
    with transaction(engine) as session:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_STORE_LOCK})
        result = _upsert_locked(session, papers, records, now) if papers else UpsertResult()
        if learned:
            # After the papers: an event may be about a record of this very batch.
            result.events = events.learn(session, learned, now)
        links = [link for item in items for link in item.versions]
        if links:
            result.links = versions.record(session, links, now).links
        if result.new_paper_ids:  # a preprint whose journal version was known before it
            fresh = set(result.new_paper_ids)
            keys = [r["doi_key"] for r, pid in zip(records, result.paper_ids, strict=True)
                    if pid in fresh and r["doi_key"]]  # fmt: skip
            versions.announce(session, keys, now)
        return result


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
    other row is title-compatible (``identity.title_compatible``) only if, for each identifier, the
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
    index = Index()
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
            if same_paper(primary, other, rec):
                index.remove(other)
                _absorb(session, primary, other, result)
        if not compatible(primary, rec):  # identifiers disagree: keep the stored ones
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
        if len(url) > _URL_WIDTH:  # PostgreSQL would refuse the whole batch (issue 12 A3)
            url = ""
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
    insert_ignore(session, PaperTopic, list(topics.values()))
    result.new_sightings = insert_ignore(
        session, Sighting, list(sightings.values()), returning="paper_id"
    )
