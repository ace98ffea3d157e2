"""The one owner of ``paper_events``: what happened to each paper, stored once.

Parsers report :class:`crawler.events.PaperEvent` values about a target (a DOI or PMID). Here
they are matched to stored papers (an event about a paper litwatch does not hold is not kept),
folded to the paper-side type (a notice's ``retraction_of`` is its target's ``retracted``), and
merged with what is known already: the same event learned again, from the same source or
another one (PubMed names the notice by PMID, Crossref by DOI), fills in the row it matches
instead of adding one. Two events match when they are about the same paper, of the same type,
and share a notice identifier, or one of them names no notice at all (PubMed's "Retracted
Publication" type, learned before its notice).

A notice can itself be retracted or withdrawn (a retraction notice issued in error): a
retraction or withdrawal whose target is the notice of a stored event marks that event
withdrawn (``withdrawn_at``). It is then no longer the paper's status nor told to anyone;
what was already told is not told again.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from crawler.db.engine import insert_ignore
from crawler.db.models import PaperEventRow, PaperRow
from crawler.events import (
    CONCERN,
    CORRECTED,
    CURRENT,
    PUBLISHED,
    RETRACTED,
    WITHDRAWN,
    PaperEvent,
    status_of,
)
from crawler.normalise import squash

_FILLED = ("notice_doi", "notice_pmid", "notice_title", "notice_url", "date")
#: What happens to a paper at most once: a second report of it is the same event, whatever
#: notice identifier it carries (PubMed names the notice by PMID, Crossref by DOI). Errata and
#: updates come many to a paper and are told apart by their notices.
SINGULAR = frozenset({RETRACTED, WITHDRAWN, CONCERN, PUBLISHED})


def resolve(session: Session, events: Iterable[PaperEvent]) -> list[tuple[int, PaperEvent]]:
    """Each event whose target is a stored paper, with that paper's id (others are dropped)."""
    events = list(events)
    dois = {e.target_doi for e in events if e.target_doi}
    pmids = {e.target_pmid for e in events if e.target_pmid}
    by_doi: dict[str, int] = {}
    by_pmid: dict[str, int] = {}
    if dois:
        rows = session.execute(
            select(PaperRow.doi_key, PaperRow.id).where(PaperRow.doi_key.in_(dois))
        )
        by_doi = {key: pid for key, pid in rows if key}
    if pmids:
        rows = session.execute(select(PaperRow.pmid, PaperRow.id).where(PaperRow.pmid.in_(pmids)))
        by_pmid = {key: pid for key, pid in rows if key}
    found = []
    by_title = _by_title(session, {e.target_title_key for e in events if e.target_title_key})
    for event in events:
        pid = by_doi.get(event.target_doi or "") or by_pmid.get(event.target_pmid or "")
        pid = pid or by_title.get(event.target_title_key or "")
        if pid is not None:
            found.append((pid, event))
    return found


def _by_title(session: Session, keys: set[str]) -> dict[str, int]:
    """The paper of each title fingerprint that names exactly one stored paper (never a guess)."""
    if not keys:
        return {}
    rows = session.execute(
        select(PaperRow.title_key, PaperRow.id).where(PaperRow.title_key.in_(keys))
    )
    found: dict[str, list[int]] = defaultdict(list)
    for key, pid in rows:
        found[key].append(pid)
    return {key: ids[0] for key, ids in found.items() if len(ids) == 1}


def learn(session: Session, events: Sequence[PaperEvent], now: datetime) -> int:
    """Store what ``events`` say (:func:`withdraw_notices`, then :func:`record`); how many
    events were new."""
    withdraw_notices(session, events, now)
    return record(session, resolve(session, events), now)


def withdraw_notices(session: Session, events: Iterable[PaperEvent], now: datetime) -> int:
    """Mark withdrawn each stored event whose notice ``events`` retract or withdraw; how many."""
    undone = [e for e in events if e.paper_type in (RETRACTED, WITHDRAWN)]
    dois = {e.target_doi for e in undone if e.target_doi}
    pmids = {e.target_pmid for e in undone if e.target_pmid}
    if not (dois or pmids):
        return 0
    named = PaperEventRow.notice_doi.in_(dois) | PaperEventRow.notice_pmid.in_(pmids)
    # Only notices: an ``updated`` or ``published`` event names a newer version, not a notice.
    noticed = PaperEventRow.type.in_((RETRACTED, WITHDRAWN, CONCERN, CORRECTED))
    live = PaperEventRow.withdrawn_at.is_(None)
    rows = session.scalars(select(PaperEventRow).where(named, noticed, live))
    count = 0
    for row in rows:
        row.withdrawn_at = now
        count += 1
    return count


def record(session: Session, found: Sequence[tuple[int, PaperEvent]], now: datetime) -> int:
    """Store events about stored papers; how many were new (the rest filled in known rows)."""
    known: dict[int, list[PaperEventRow]] = defaultdict(list)
    ids = {pid for pid, _ in found}
    if ids:
        for row in session.scalars(select(PaperEventRow).where(PaperEventRow.paper_id.in_(ids))):
            known[row.paper_id].append(row)
    new = 0
    for pid, event in found:
        match = next((r for r in known[pid] if _same(r, event)), None)
        if match is not None:
            _fill(match, event)
            continue
        values = _values(pid, event, now)
        if insert_ignore(session, PaperEventRow, [values], returning="id"):
            new += 1
            added = session.scalar(select(PaperEventRow).where(PaperEventRow.key == values["key"]))
            if added is not None:
                known[pid].append(added)
    return new


def _same(row: PaperEventRow, event: PaperEvent) -> bool:
    if row.type != event.paper_type:
        return False
    if row.type in SINGULAR:
        return True
    row_ids = {("doi", row.notice_doi), ("pmid", row.notice_pmid)} - {("doi", None), ("pmid", None)}
    new_ids = {("doi", event.notice_doi), ("pmid", event.notice_pmid)}
    new_ids -= {("doi", None), ("pmid", None)}
    if not row_ids or not new_ids:
        return not (row_ids and new_ids) and _titles_agree(row.notice_title, event.notice_title)
    return bool(row_ids & new_ids)


def _titles_agree(stored: str | None, given: str | None) -> bool:
    # Without identifiers, two titled notices of one type are one only if the titles agree
    # (a paper may have several errata, each cited by its own RefSource).
    if stored is None or given is None:
        return True
    return _notice_title(stored) == _notice_title(given)


def _notice_title(title: str) -> str:
    # Not the papers' title fingerprint: it drops the numbers that tell citations apart.
    return (squash(title) or "").casefold()


def _fill(row: PaperEventRow, event: PaperEvent) -> None:
    for name in _FILLED:
        if getattr(row, name) is None and getattr(event, name) is not None:
            setattr(row, name, getattr(event, name))


def _values(pid: int, event: PaperEvent, now: datetime) -> dict[str, object]:
    return {
        "paper_id": pid,
        "type": event.paper_type,
        "key": event_key(pid, event),
        "notice_doi": event.notice_doi,
        "notice_pmid": event.notice_pmid,
        "notice_title": event.notice_title,
        "notice_url": event.notice_url,
        "source": event.source,
        "date": event.date,
        "detected_at": now,
        "withdrawn_at": None,
    }


def event_key(pid: int, event: PaperEvent) -> str:
    """The row's unique key: the paper, the paper-side type and the notice's identity."""
    if event.paper_type in SINGULAR:
        return f"{pid}:{event.paper_type}"
    notice = (
        (f"doi:{event.notice_doi}" if event.notice_doi else None)
        or (f"pmid:{event.notice_pmid}" if event.notice_pmid else None)
        or (f"title:{_notice_title(event.notice_title)}" if event.notice_title else None)
        or "-"
    )
    return f"{pid}:{event.paper_type}:{notice}"[:400]


def events_of(session: Session, ids: Iterable[int]) -> dict[int, list[PaperEventRow]]:
    """Each paper's standing events (withdrawn ones left out), oldest first."""
    out: dict[int, list[PaperEventRow]] = defaultdict(list)
    ids = list(ids)
    if not ids:
        return out
    rows = session.scalars(
        select(PaperEventRow)
        .where(PaperEventRow.paper_id.in_(ids), PaperEventRow.withdrawn_at.is_(None))
        .order_by(PaperEventRow.detected_at, PaperEventRow.id)
    )
    for row in rows:
        out[row.paper_id].append(row)
    return out


def statuses(session: Session, ids: Iterable[int]) -> dict[int, str]:
    """Each paper's status: its gravest standing event, else ``current``."""
    ids = list(ids)
    events = events_of(session, ids)
    return {pid: status_of(r.type for r in events.get(pid, [])) if pid in events else CURRENT
            for pid in ids}  # fmt: skip


def watchlist(session: Session, since: datetime | None) -> tuple[list[str], int]:
    """The PMIDs to re-check, in ascending order, and how many watched papers have a DOI.

    Papers delivered to anyone since ``since`` (every paper when None).
    """
    from crawler.db.models import Delivery, DeliveryPaper

    stmt = select(PaperRow.pmid, PaperRow.doi_key)
    if since is not None:
        sent = (
            select(DeliveryPaper.paper_id)
            .join(Delivery, Delivery.id == DeliveryPaper.delivery_id)
            .where(Delivery.state == "sent", Delivery.sent_at >= since)
        )
        stmt = stmt.where(PaperRow.id.in_(sent))
    pmids, with_doi = [], 0
    for pmid, doi_key in session.execute(stmt):
        if pmid:
            pmids.append(pmid)
        with_doi += bool(doi_key)
    return sorted(set(pmids), key=int), with_doi
