""" "Updates on papers you were sent": which events a subscriber is to be told, and how.

An event is told to a subscriber who was sent its paper in a digest that went out, who has
not opted out of updates, and who was not told it before (``delivery_events``: each
(subscriber, event) is told once, fixed when the digest is planned, like its papers). Events
withdrawn since (a retraction notice itself retracted) are not told.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from crawler.db.models import (
    Delivery,
    DeliveryEvent,
    DeliveryPaper,
    PaperEventRow,
    PaperRow,
    Subscriber,
)
from crawler.events import PUBLISHED, label_of
from digests.model import doi_url, paper_url, pubmed_url
from digests.works import published_journals


@dataclass(frozen=True)
class Update:
    """One event as a digest tells it."""

    event_id: int
    paper_id: int
    title: str
    paper_url: str
    label: str  # "Retracted", "Expression of concern", ...
    kind: str  # the event type (retracted, concern, corrected, updated, withdrawn, published)
    sent_on: date | None  # when the subscriber was sent the paper
    notice_url: str | None
    notice_title: str | None
    date: date | None


def event_ids_for(session: Session, subscriber: Subscriber, cutoff: datetime) -> list[int]:
    """Ids of the events this subscriber's digest at ``cutoff`` should tell, oldest first."""
    if not getattr(subscriber, "updates", True) or subscriber.id is None:
        return []
    mine = select(Delivery.id).where(Delivery.subscriber_id == subscriber.id)
    sent_papers = (
        select(DeliveryPaper.paper_id)
        .join(Delivery, Delivery.id == DeliveryPaper.delivery_id)
        .where(Delivery.subscriber_id == subscriber.id, Delivery.state == "sent")
    )
    told = select(DeliveryEvent.event_id).where(DeliveryEvent.delivery_id.in_(mine))
    stmt = (
        select(PaperEventRow.id)
        .where(
            PaperEventRow.paper_id.in_(sent_papers),
            PaperEventRow.id.not_in(told),
            PaperEventRow.withdrawn_at.is_(None),
            PaperEventRow.detected_at < cutoff,
        )
        .order_by(PaperEventRow.detected_at, PaperEventRow.id)
    )
    return list(session.scalars(stmt))


def event_ids_by_subscriber(
    session: Session, subscribers: Sequence[Subscriber], cutoffs: dict[int, datetime]
) -> dict[int, list[int]]:
    """:func:`event_ids_for` of each of ``subscribers`` (at its own cutoff), for a page of
    planning in two queries per distinct cutoff instead of one per subscriber."""
    found: dict[int, list[int]] = {s.id: [] for s in subscribers}
    groups: dict[datetime, list[int]] = {}
    for sub in subscribers:
        if getattr(sub, "updates", True) and sub.id is not None:
            groups.setdefault(cutoffs[sub.id], []).append(sub.id)
    for cutoff, ids in groups.items():
        rows = session.execute(
            select(Delivery.subscriber_id, PaperEventRow.id, PaperEventRow.detected_at)
            .join(DeliveryPaper, DeliveryPaper.delivery_id == Delivery.id)
            .join(PaperEventRow, PaperEventRow.paper_id == DeliveryPaper.paper_id)
            .where(
                Delivery.subscriber_id.in_(ids),
                Delivery.state == "sent",
                PaperEventRow.withdrawn_at.is_(None),
                PaperEventRow.detected_at < cutoff,
            )
            .distinct()
            .order_by(PaperEventRow.detected_at, PaperEventRow.id)
        ).all()
        if not rows:
            continue
        told = set(
            session.execute(
                select(Delivery.subscriber_id, DeliveryEvent.event_id)
                .join(DeliveryEvent, DeliveryEvent.delivery_id == Delivery.id)
                .where(Delivery.subscriber_id.in_(ids))
            ).tuples()
        )
        for sid, event_id, _at in rows:
            if (sid, event_id) not in told:
                found[sid].append(event_id)
    return found


def updates_for(session: Session, subscriber_id: int, event_ids: Sequence[int]) -> list[Update]:
    """The events ``event_ids`` as this subscriber's digest tells them."""
    if not event_ids:
        return []
    rows = session.execute(
        select(PaperEventRow, PaperRow)
        .join(PaperRow, PaperRow.id == PaperEventRow.paper_id)
        .where(PaperEventRow.id.in_(list(event_ids)))
        .order_by(PaperEventRow.detected_at, PaperEventRow.id)
    ).all()
    sent_on = _sent_on(session, subscriber_id, [paper.id for _event, paper in rows])
    journals = published_journals(session, [p.id for e, p in rows if e.type == PUBLISHED])
    return [
        Update(
            event_id=event.id,
            paper_id=paper.id,
            title=paper.title or paper.doi or f"PMID {paper.pmid}",
            paper_url=paper_url(paper.doi, paper.pmid) or "",
            label=_label(event, journals.get(paper.id)),
            kind=event.type,
            sent_on=sent_on.get(paper.id),
            notice_url=event.notice_url
            or (doi_url(event.notice_doi) if event.notice_doi else None)
            or pubmed_url(event.notice_pmid),
            notice_title=event.notice_title,
            date=event.date,
        )
        for event, paper in rows
    ]


def _label(event: PaperEventRow, journal: str | None) -> str:
    """ "Retracted", ...; for a preprint's journal version "Now published in <journal>"."""
    if event.type == PUBLISHED and (journal or event.notice_title):
        return f"{label_of(event.type)} in {journal or event.notice_title}"
    return label_of(event.type)


def _sent_on(session: Session, subscriber_id: int, paper_ids: Sequence[int]) -> dict[int, date]:
    rows = session.execute(
        select(DeliveryPaper.paper_id, Delivery.period)
        .join(Delivery, Delivery.id == DeliveryPaper.delivery_id)
        .where(
            Delivery.subscriber_id == subscriber_id,
            Delivery.state == "sent",
            DeliveryPaper.paper_id.in_(list(paper_ids)),
        )
        .order_by(Delivery.period)
    )
    first: dict[int, date] = {}
    for pid, period in rows:
        first.setdefault(pid, period)
    return first
