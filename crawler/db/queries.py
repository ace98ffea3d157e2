"""Read side of the paper store: records in the export contract shape, lookups, counts."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, exists, select
from sqlalchemy.orm import Session

from crawler import normalise
from crawler.db.events import events_of
from crawler.db.models import PaperEventRow, PaperRow, PaperTopic, Sighting
from crawler.db.versions import WorkLink, links_of
from crawler.events import status_of

EXPORT_CHUNK = 500


def papers_query(
    *, since: datetime | None = None, topic: str | None = None, source: str | None = None
) -> Select[tuple[PaperRow]]:
    """Papers first seen at or after ``since``, tagged ``topic``, seen at ``source``.

    Every filter is optional.
    """
    stmt = select(PaperRow)
    if since is not None:
        stmt = stmt.where(PaperRow.first_seen >= since)
    if topic:
        stmt = stmt.where(
            exists().where(PaperTopic.paper_id == PaperRow.id, PaperTopic.topic == topic)
        )
    if source:
        stmt = stmt.where(
            exists().where(Sighting.paper_id == PaperRow.id, Sighting.source_id == source)
        )
    return stmt.order_by(PaperRow.first_seen, PaperRow.id)


def _chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    # One IN list per chunk: ``papers list --limit 100000`` must not exceed SQLite's limit on
    # bound parameters (32766) or PostgreSQL's (65535).
    for start in range(0, len(ids), EXPORT_CHUNK):
        yield ids[start : start + EXPORT_CHUNK]


def topics_of(session: Session, ids: Sequence[int]) -> dict[int, list[str]]:
    """Each paper's topics, sorted by name."""
    out: dict[int, list[str]] = defaultdict(list)
    for chunk in _chunks(ids):
        rows = session.execute(
            select(PaperTopic.paper_id, PaperTopic.topic)
            .where(PaperTopic.paper_id.in_(chunk))
            .order_by(PaperTopic.topic)
        )
        for pid, topic in rows:
            out[pid].append(topic)
    return out


def sightings_of(session: Session, ids: Sequence[int]) -> dict[int, list[Sighting]]:
    """Each paper's sightings, oldest first."""
    out: dict[int, list[Sighting]] = defaultdict(list)
    for chunk in _chunks(ids):
        rows = session.scalars(
            select(Sighting)
            .where(Sighting.paper_id.in_(chunk))
            .order_by(Sighting.seen_at, Sighting.id)
        )
        for s in rows:
            out[s.paper_id].append(s)
    return out


def record(
    paper: PaperRow,
    topics: list[str],
    sightings: list[Sighting],
    events: Sequence[PaperEventRow] = (),
    links: Sequence[WorkLink] = (),
) -> dict[str, Any]:
    """One paper in the JSONL export contract shape (``status``: its gravest standing event,
    ``current`` without any; ``events``: what happened to it, oldest first; ``versions``: the
    work's preprint(s) and journal version, None for a paper with no other version known)."""
    return {
        "doi": paper.doi_key,
        "pmid": paper.pmid,
        "pmcid": paper.pmcid,
        "title": paper.title,
        "journal": paper.journal,
        "published": paper.published.isoformat() if paper.published else None,
        "authors": list(paper.authors or []),
        "abstract": paper.abstract,
        "topics": topics,
        "publication_types": list(paper.publication_types or []),
        "first_seen": paper.first_seen.isoformat(),
        "sightings": [
            {
                "source": s.source_id,
                "kind": s.kind,
                "url": s.url or None,
                "seen_at": s.seen_at.isoformat(),
            }
            for s in sightings
        ],
        "status": status_of(e.type for e in events),
        "events": [
            {
                "type": e.type,
                "notice_doi": e.notice_doi,
                "notice_pmid": e.notice_pmid,
                "notice_title": e.notice_title,
                "source": e.source,
                "detected_at": e.detected_at.isoformat(),
                "date": e.date.isoformat() if e.date else None,
            }
            for e in events
        ],
        "versions": versions_value(links),
    }


def versions_value(links: Sequence[WorkLink]) -> dict[str, Any] | None:
    """``{"preprints": [{"doi", "server", "posted"}], "published_doi", "published_pmid",
    "published_journal"}`` for a paper with a known other version, else None."""
    if not links:
        return None
    preprints = {
        link.preprint_doi: {
            "doi": link.preprint_doi,
            "server": link.server,
            "posted": link.preprint_posted.isoformat() if link.preprint_posted else None,
        }
        for link in links
    }
    journal = links[0]
    return {
        "preprints": [preprints[doi] for doi in sorted(preprints)],
        "published_doi": journal.published_doi,
        "published_pmid": journal.published_pmid,
        "published_journal": journal.published_journal,
    }


def iter_records(session: Session, stmt: Select[tuple[PaperRow]]) -> Iterator[dict[str, Any]]:
    """Stream records in chunks: memory stays bounded however large the database."""
    last_id = 0
    while True:
        chunk = list(
            session.scalars(
                stmt.where(PaperRow.id > last_id)
                .order_by(None)
                .order_by(PaperRow.id)
                .limit(EXPORT_CHUNK)
            )
        )
        if not chunk:
            return
        ids = [p.id for p in chunk]
        topics, sightings = topics_of(session, ids), sightings_of(session, ids)
        happened, works = events_of(session, ids), links_of(session, ids)
        for paper in chunk:
            yield record(
                paper,
                topics.get(paper.id, []),
                sightings.get(paper.id, []),
                happened.get(paper.id, []),
                works.get(paper.id, []),
            )
        last_id = ids[-1]
        session.expunge_all()


def find_paper(session: Session, ident: str) -> PaperRow | None:
    """A paper by DOI (any spelling), PMID, PMCID or internal id (``#12``)."""
    ident = ident.strip()
    if ident.startswith("#") and ident[1:].isdigit():
        return session.get(PaperRow, int(ident[1:]))
    key = normalise.doi_key(ident)
    if key:
        return session.scalar(select(PaperRow).where(PaperRow.doi_key == key))
    if ident.upper().startswith("PMC"):
        return session.scalar(select(PaperRow).where(PaperRow.pmcid == normalise.pmcid(ident)))
    pmid = normalise.pmid(ident)
    if pmid:
        return session.scalar(select(PaperRow).where(PaperRow.pmid == pmid))
    return None
