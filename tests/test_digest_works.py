"""digests.works: a preprint and its journal version are one work in every digest."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Engine, select

from crawler.db.engine import transaction
from crawler.db.models import Delivery, DeliveryPaper, PaperRow, Subscriber
from crawler.db.store import upsert
from crawler.db.versions import record
from crawler.events import VersionLink
from crawler.items import Paper
from digests.selection import entries_for
from digests.updates import event_ids_for, updates_for
from digests.works import one_per_work

NOW = datetime(2026, 6, 1, tzinfo=UTC)
PREPRINT = "10.1101/2025.01.02.25300001"
ARTICLE = "10.1016/j.pain.2026.01.001"


def _papers(engine: Engine) -> tuple[int, int]:
    upsert(engine, [
        Paper(source_id="medrxiv", origin="feed", sighting_kind="preprint", doi=PREPRINT,
              title="IgG transfers fibromyalgia pain", journal="medRxiv",
              published=date(2025, 1, 2), publication_types=["Preprint"], topics=["fibromyalgia"]),
        Paper(source_id="pubmed", origin="pubmed", pmid="40000010", doi=ARTICLE, journal="Pain",
              title="IgG transfers fibromyalgia pain", published=date(2026, 1, 20),
              topics=["fibromyalgia"]),
    ])  # fmt: skip
    with transaction(engine) as session:
        ids = {p.doi_key: p.id for p in session.scalars(select(PaperRow))}
    return ids[PREPRINT], ids[ARTICLE.lower()]


def _link(engine: Engine) -> None:
    with transaction(engine) as session:
        record(session, [VersionLink(preprint_doi=PREPRINT, published_doi=ARTICLE,
                                     source="crossref")], NOW - timedelta(days=1))  # fmt: skip


def _subscriber(session: object, email: str) -> Subscriber:
    sub = Subscriber(email=email, email_key=email, token=email * 2, topics=["fibromyalgia"],
                     created_at=NOW)  # fmt: skip
    session.add(sub)  # type: ignore[attr-defined]
    session.flush()  # type: ignore[attr-defined]
    return sub


def _send(session: object, sub: Subscriber, paper_ids: list[int]) -> None:
    delivery = Delivery(
        subscriber_id=sub.id, period=date(2026, 3, 2), cutoff=NOW - timedelta(days=90),
        state="sent", message_id=f"<{sub.id}@x>", created_at=NOW, sent_at=NOW,
    )  # fmt: skip
    session.add(delivery)  # type: ignore[attr-defined]
    session.flush()  # type: ignore[attr-defined]
    for pid in paper_ids:
        session.add(DeliveryPaper(delivery_id=delivery.id, paper_id=pid))  # type: ignore[attr-defined]


def test_without_a_link_both_versions_are_papers(engine: Engine) -> None:
    preprint, article = _papers(engine)
    with transaction(engine) as session:
        assert one_per_work(session, {1: [preprint, article]}) == {1: [preprint, article]}


def test_one_entry_per_work_and_none_for_who_had_a_version(engine: Engine) -> None:
    preprint, article = _papers(engine)
    _link(engine)
    with transaction(engine) as session:
        ada = _subscriber(session, "ada@example.org")  # was sent the preprint
        cy = _subscriber(session, "cy@example.org")  # never was
        _send(session, ada, [preprint])
        chosen = one_per_work(session, {ada.id: [article], cy.id: [preprint, article]})
        assert chosen == {ada.id: [], cy.id: [article]}
        told = event_ids_for(session, ada, NOW)
        assert event_ids_for(session, cy, NOW) == []
        (update,) = updates_for(session, ada.id, told)
        assert update.kind == "published" and update.label == "Now published in Pain"
        assert update.notice_url == f"https://doi.org/{ARTICLE.lower()}"
        by_id = {e.paper_id: e for e in entries_for(session, [preprint, article])}
    shown = by_id[article]
    assert (shown.preprint_posted, shown.preprint_server) == (date(2025, 1, 2), "medRxiv")
    old = by_id[preprint]
    assert old.published_in == "Pain" and old.published_url == f"https://doi.org/{ARTICLE.lower()}"
    assert all(b.key != "preprint" for b in old.badges)


def test_an_unpublished_preprint_is_badged_and_a_withdrawn_one_says_so(engine: Engine) -> None:
    preprint, _article = _papers(engine)
    with transaction(engine) as session:
        (entry,) = entries_for(session, [preprint])
    assert [b.label for b in entry.badges] == ["Preprint (not peer reviewed)"]
    from crawler.db.events import record as record_events
    from crawler.db.events import resolve
    from crawler.events import PaperEvent

    with transaction(engine) as session:
        gone = PaperEvent(type="withdrawn", source="biorxiv", target_doi=PREPRINT)
        record_events(session, resolve(session, [gone]), NOW)
        (entry,) = entries_for(session, [preprint])
    assert entry.status == "withdrawn"
    assert "Withdrawn" in [b.label for b in entry.badges]
