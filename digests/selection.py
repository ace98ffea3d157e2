"""Which papers go into whose digest, and the digest's moment (cutoff) and period.

A digest is identified by (subscriber, period), the period being the cutoff's date in the
subscriber's time zone. It holds the papers on the subscriber's topics first seen before the
cutoff that were never put in one of their digests before. A first digest reaches back
``first_lookback``; a later one reaches back ``first_lookback`` before the previous digest's
cutoff, so a paper tagged with a topic after that digest went out (a later sighting added
it), or a topic the subscriber just added, still comes once, without a flood of old papers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from crawler.db.events import statuses
from crawler.db.models import (
    Delivery,
    DeliveryNews,
    DeliveryPaper,
    NewsItem,
    PaperRow,
    PaperTopic,
    Sighting,
    Subscriber,
)
from digests.model import NEWS_SHOWN, Entry, NewsEntry, PressLink, paper_url
from digests.works import with_versions

_CHUNK = 500


def cutoff_for(subscriber_tz: str, *, period_end: date | None, now: datetime) -> datetime:
    """The digest's cutoff: the start of ``period_end`` in the subscriber's zone, else now."""
    if period_end is None:
        return now.astimezone(UTC)
    local = datetime.combine(period_end, time(0), tzinfo=ZoneInfo(subscriber_tz))
    return local.astimezone(UTC)


def period_of(cutoff: datetime, subscriber_tz: str) -> date:
    return cutoff.astimezone(ZoneInfo(subscriber_tz)).date()


def window_start(
    session: Session, subscriber: Subscriber, cutoff: datetime, lookback: timedelta
) -> datetime:
    """The earliest first-seen time this digest considers (see the module docstring)."""
    previous = session.scalar(
        select(func.max(Delivery.cutoff)).where(
            Delivery.subscriber_id == subscriber.id, Delivery.cutoff < cutoff
        )
    )
    # Papers sent before are excluded by id, so overlapping the previous window is harmless.
    return (previous if previous is not None else cutoff) - lookback


def select_paper_ids(
    session: Session, subscriber: Subscriber, cutoff: datetime, lookback: timedelta
) -> list[int]:
    """Ids of the papers this subscriber's digest at ``cutoff`` should hold."""
    start = window_start(session, subscriber, cutoff, lookback)
    already = (
        select(DeliveryPaper.paper_id)
        .join(Delivery, Delivery.id == DeliveryPaper.delivery_id)
        .where(Delivery.subscriber_id == subscriber.id)
    )
    stmt = _candidates(subscriber.topics or [], start, cutoff).where(PaperRow.id.not_in(already))
    return list(session.scalars(stmt))


def _candidates(topics: Sequence[str], start: datetime, cutoff: datetime) -> Select[tuple[int]]:
    """Ids of the papers on ``topics`` first seen in [start, cutoff), in id order."""
    on_topic = select(PaperTopic.paper_id).where(PaperTopic.topic.in_(list(topics)))
    return (
        select(PaperRow.id)
        .where(
            PaperRow.first_seen >= start, PaperRow.first_seen < cutoff, PaperRow.id.in_(on_topic)
        )
        .order_by(PaperRow.id)
    )


def previous_cutoffs(
    session: Session, subscriber_ids: Sequence[int], cutoff: datetime
) -> dict[int, datetime]:
    """The latest earlier digest cutoff of each of these subscribers (window_start in bulk)."""
    out: dict[int, datetime] = {}
    for start in range(0, len(subscriber_ids), _CHUNK):
        chunk = list(subscriber_ids[start : start + _CHUNK])
        rows = session.execute(
            select(Delivery.subscriber_id, func.max(Delivery.cutoff))
            .where(Delivery.subscriber_id.in_(chunk), Delivery.cutoff < cutoff)
            .group_by(Delivery.subscriber_id)
        )
        # A Result has keys() (its column names): dict.update would read it as a mapping.
        out.update((sid, latest) for sid, latest in rows)
    return out


def candidate_ids(
    session: Session, topics: Sequence[str], start: datetime, cutoff: datetime
) -> list[int]:
    """Ids of the papers on ``topics`` first seen in [start, cutoff), before exclusions.

    select_paper_ids minus the papers already sent: shared by every subscriber with the same
    topics and window, so a page of them needs one query instead of one each.
    """
    return list(session.scalars(_candidates(topics, start, cutoff)))


def delivered_papers(
    session: Session, subscriber_ids: Sequence[int], paper_ids: Sequence[int]
) -> dict[int, set[int]]:
    """Which of ``paper_ids`` each subscriber was already given (in any earlier delivery)."""
    out: dict[int, set[int]] = defaultdict(set)
    for start in range(0, len(paper_ids), _CHUNK):
        chunk = list(paper_ids[start : start + _CHUNK])
        for sid, pid in session.execute(
            select(Delivery.subscriber_id, DeliveryPaper.paper_id)
            .join(Delivery, Delivery.id == DeliveryPaper.delivery_id)
            .where(
                Delivery.subscriber_id.in_(list(subscriber_ids)), DeliveryPaper.paper_id.in_(chunk)
            )
        ):
            out[sid].add(pid)
    return out


def entries_for(session: Session, paper_ids: Sequence[int]) -> list[Entry]:
    """Digest entries for these papers, with their topics and press coverage."""
    out: list[Entry] = []
    for start in range(0, len(paper_ids), _CHUNK):
        ids = list(paper_ids[start : start + _CHUNK])
        topics: dict[int, list[str]] = defaultdict(list)
        for pid, topic in session.execute(
            select(PaperTopic.paper_id, PaperTopic.topic).where(PaperTopic.paper_id.in_(ids))
        ):
            topics[pid].append(topic)
        press: dict[int, list[PressLink]] = defaultdict(list)
        kinds: dict[int, set[str]] = defaultdict(set)
        seen_at: dict[int, str] = {}
        for s in session.scalars(
            select(Sighting)
            .where(Sighting.paper_id.in_(ids))
            .order_by(Sighting.seen_at, Sighting.id)
        ):
            kinds[s.paper_id].add(s.kind)
            if s.url and (s.kind != "news" or s.paper_id not in seen_at):
                seen_at.setdefault(s.paper_id, s.url)
            if s.kind == "news" and s.url:
                press[s.paper_id].append(
                    PressLink(s.title or "News story", s.url, _outlet(s.source_id))
                )
        status = statuses(session, ids)
        for paper in session.scalars(
            select(PaperRow).where(PaperRow.id.in_(ids)).order_by(PaperRow.id)
        ):
            entry = _entry(
                paper, topics[paper.id], press[paper.id], kinds[paper.id], seen_at.get(paper.id)
            )
            entry = replace(entry, status=status.get(paper.id, "current"))
            if press_only(paper, kinds[paper.id]):
                entry = replace(entry, story=_legacy_story(entry, press[paper.id]))
            out.append(entry)
    return with_versions(session, out)  # one work across its versions (issue 14)


def press_only(paper: PaperRow, kinds: set[str]) -> bool:
    """A stored "paper" that is only a news story naming no paper (issue 12, B1).

    Versions before issue 12 stored such stories as papers with no identifier and no title
    ("(untitled)"). A data migration cannot tell them apart safely later, so they are told
    apart here, by the rule that now keeps new ones out of the papers table
    (:func:`crawler.items.names_no_paper`) plus "seen only in the news".
    """
    named = paper.doi or paper.pmid or paper.pmcid or paper.title
    return not named and kinds <= {"news"}


def _legacy_story(entry: Entry, press: list[PressLink]) -> NewsEntry:
    first = press[0] if press else PressLink("News story", entry.url, "")
    return NewsEntry(
        headline=first.title,
        url=first.url,
        site=first.outlet,
        outlet=None,
        published=None,
        summary=None,
        topics=entry.topics,
        paper_id=entry.paper_id,
    )


def news_for(
    session: Session,
    subscribers: Sequence[Subscriber],
    cutoffs: dict[int, datetime],
    lookback: timedelta,
) -> dict[int, list[int]]:
    """Ids of the news stories each subscriber's digest at its cutoff should tell.

    Stories on the subscriber's topics first seen in the same window as papers (see the
    module docstring), never told to them before (``delivery_news``), newest first, at most
    :data:`digests.model.NEWS_SHOWN`. Few stories arrive per week, so the window's stories
    are read once and matched to topics here (``topics`` is a JSON list).
    """
    out: dict[int, list[int]] = {}
    if not subscribers:
        return out
    starts: dict[int, datetime] = {}
    for cutoff in set(cutoffs[s.id] for s in subscribers):
        group = [s.id for s in subscribers if cutoffs[s.id] == cutoff]
        previous = previous_cutoffs(session, group, cutoff)
        starts.update({sid: previous.get(sid, cutoff) - lookback for sid in group})
    rows = session.execute(
        select(NewsItem.id, NewsItem.topics, NewsItem.first_seen)
        .where(NewsItem.first_seen >= min(starts.values()))
        .where(NewsItem.first_seen < max(cutoffs[s.id] for s in subscribers))
        .order_by(NewsItem.first_seen.desc(), NewsItem.id.desc())
    ).all()
    told = _told_news(session, [s.id for s in subscribers], [r.id for r in rows])
    for sub in subscribers:
        wanted = set(sub.topics or ())
        start, cutoff = starts[sub.id], cutoffs[sub.id]
        ids = [
            r.id
            for r in rows
            if start <= r.first_seen < cutoff
            and wanted.intersection(r.topics or ())
            and r.id not in told.get(sub.id, set())
        ]
        out[sub.id] = sorted(ids[:NEWS_SHOWN])
    return out


def _told_news(
    session: Session, subscriber_ids: Sequence[int], news_ids: Sequence[int]
) -> dict[int, set[int]]:
    out: dict[int, set[int]] = defaultdict(set)
    for start in range(0, len(news_ids), _CHUNK):
        chunk = list(news_ids[start : start + _CHUNK])
        for sid, nid in session.execute(
            select(Delivery.subscriber_id, DeliveryNews.news_id)
            .join(Delivery, Delivery.id == DeliveryNews.delivery_id)
            .where(
                Delivery.subscriber_id.in_(list(subscriber_ids)), DeliveryNews.news_id.in_(chunk)
            )
        ):
            out[sid].add(nid)
    return out


def news_entries(session: Session, news_ids: Sequence[int]) -> list[NewsEntry]:
    """The digest entries of these stories (from ``news_items``), in id order."""
    out: list[NewsEntry] = []
    for start in range(0, len(news_ids), _CHUNK):
        chunk = list(news_ids[start : start + _CHUNK])
        for row in session.scalars(
            select(NewsItem).where(NewsItem.id.in_(chunk)).order_by(NewsItem.id)
        ):
            out.append(
                NewsEntry(
                    headline=row.headline,
                    url=row.url,
                    site=_outlet(row.source_id),
                    outlet=row.outlet,
                    published=row.published,
                    summary=row.summary,
                    topics=tuple(sorted(row.topics or ())),
                    news_id=row.id,
                )
            )
    return out


def _outlet(source_id: str) -> str:
    return "ScienceDaily" if source_id.startswith("sciencedaily") else source_id


def _entry(
    paper: PaperRow,
    topics: list[str],
    press: list[PressLink],
    kinds: set[str],
    seen_url: str | None,
) -> Entry:
    preprint = "Preprint" in (paper.publication_types or []) or (
        "preprint" in kinds and "article" not in kinds
    )
    # DOI first, then PubMed, then wherever it was seen (a story about a paper with no DOI).
    url = paper_url(paper.doi, paper.pmid, seen_url) or ""
    return Entry(
        paper_id=paper.id,
        title=paper.title or "(untitled)",
        url=url,
        doi=paper.doi,
        pmid=paper.pmid,
        pmcid=paper.pmcid,
        authors=tuple(paper.authors or ()),
        journal=paper.journal,
        published=paper.published,
        publication_types=tuple(paper.publication_types or ()),
        topics=tuple(sorted(topics)),
        abstract=paper.abstract,
        press=tuple(press),
        preprint=preprint,
    )


def active_subscribers(
    session: Session, after_id: int = 0, limit: int = _CHUNK
) -> list[Subscriber]:
    """A page of active subscribers in id order (to stream through any number of them)."""
    return list(
        session.scalars(
            select(Subscriber)
            .where(Subscriber.status == "active", Subscriber.id > after_id)
            .order_by(Subscriber.id)
            .limit(limit)
        )
    )


def utc_date_start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)
