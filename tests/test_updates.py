"""digests.updates: who is told which event, once, about papers they were actually sent."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Engine, select

from crawler.db.engine import transaction
from crawler.db.events import learn, record, resolve, statuses
from crawler.db.models import Delivery, DeliveryEvent, DeliveryPaper, PaperRow, Subscriber
from crawler.db.store import upsert
from crawler.events import PaperEvent
from crawler.items import Paper
from digests.updates import event_ids_by_subscriber, event_ids_for, updates_for

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def _subscriber(session: object, email: str, **extra: object) -> Subscriber:
    sub = Subscriber(email=email, email_key=email, token=email * 2, topics=["fibromyalgia"],
                     created_at=NOW, **extra)  # fmt: skip
    session.add(sub)  # type: ignore[attr-defined]
    session.flush()  # type: ignore[attr-defined]
    return sub


def _send(
    session: object,
    sub: Subscriber,
    paper_ids: list[int],
    state: str = "sent",
    period: date = date(2026, 3, 2),
) -> int:
    delivery = Delivery(
        subscriber_id=sub.id, period=period, cutoff=NOW - timedelta(days=90),
        state=state, message_id=f"<{sub.id}@x>", created_at=NOW, sent_at=NOW,
    )  # fmt: skip
    session.add(delivery)  # type: ignore[attr-defined]
    session.flush()  # type: ignore[attr-defined]
    for pid in paper_ids:
        session.add(DeliveryPaper(delivery_id=delivery.id, paper_id=pid))  # type: ignore[attr-defined]
    return delivery.id


def test_only_those_sent_the_paper_are_told_once(engine: Engine) -> None:
    upsert(engine, [Paper(source_id="s", origin="pubmed", pmid="34196305", doi="10.1172/JCI144201",
                          title="Passive transfer of fibromyalgia symptoms")])  # fmt: skip
    with transaction(engine) as session:
        pid = session.scalar(select(PaperRow.id))
        assert pid is not None
        ada = _subscriber(session, "ada@example.org")
        bob = _subscriber(session, "bob@example.org")
        _subscriber(session, "cy@example.org")  # never sent it
        dee = _subscriber(session, "dee@example.org", updates=False)  # opted out
        eve = _subscriber(session, "eve@example.org")  # its digest failed
        for sub in (ada, bob, dee):
            _send(session, sub, [pid])
        _send(session, eve, [pid], state="failed")
        record(session, resolve(session, [PaperEvent(
            type="retracted", source="pubmed", target_pmid="34196305", notice_pmid="40000001",
        )]), NOW - timedelta(days=1))  # fmt: skip
    with transaction(engine) as session:
        subs = {s.email: s for s in session.scalars(select(Subscriber))}
        told = {e: event_ids_for(session, s, NOW) for e, s in subs.items()}
        assert [e for e, ids in told.items() if ids] == ["ada@example.org", "bob@example.org"]
        # Planning asks for a page at once: the same answer.
        page = event_ids_by_subscriber(session, list(subs.values()), dict.fromkeys(
            (s.id for s in subs.values()), NOW))  # fmt: skip
        assert {e: page[s.id] for e, s in subs.items()} == told
        (update,) = updates_for(session, subs["ada@example.org"].id, told["ada@example.org"])
        assert update.label == "Retracted" and update.kind == "retracted"
        assert update.sent_on == date(2026, 3, 2)
        assert update.paper_url == "https://doi.org/10.1172/JCI144201"
        assert update.notice_url == "https://pubmed.ncbi.nlm.nih.gov/40000001/"
        # Ada's next digest tells it; after that, never again.
        week2 = _send(session, subs["ada@example.org"], [], period=date(2026, 6, 1))
        session.add(DeliveryEvent(delivery_id=week2, event_id=update.event_id))
    with transaction(engine) as session:
        ada = session.scalar(select(Subscriber).where(Subscriber.email == "ada@example.org"))
        assert ada is not None and event_ids_for(session, ada, NOW) == []
        # An event detected after the cutoff waits for the next digest.
        bob = session.scalar(select(Subscriber).where(Subscriber.email == "bob@example.org"))
        assert bob is not None and event_ids_for(session, bob, NOW - timedelta(days=2)) == []
        early = {ada.id: NOW, bob.id: NOW - timedelta(days=2)}
        assert event_ids_by_subscriber(session, [ada, bob], early) == {ada.id: [], bob.id: []}


def test_a_withdrawn_retraction_notice_is_no_longer_told_nor_the_status(engine: Engine) -> None:
    upsert(engine, [Paper(source_id="s", origin="pubmed", pmid="34196305", doi="10.1172/JCI144201",
                          title="Passive transfer of fibromyalgia symptoms")])  # fmt: skip
    retraction = PaperEvent(type="retracted", source="crossref", target_doi="10.1172/jci144201",
                            notice_doi="10.5555/retraction.1")  # fmt: skip
    # Crossref: a later notice retracts the retraction notice itself (issued in error).
    undone = PaperEvent(type="retracted", source="crossref", target_doi="10.5555/retraction.1",
                        notice_doi="10.5555/retraction.of.retraction")  # fmt: skip
    with transaction(engine) as session:
        pid = session.scalar(select(PaperRow.id))
        assert pid is not None
        ada = _subscriber(session, "ada@example.org")
        bob = _subscriber(session, "bob@example.org")
        for sub in (ada, bob):
            _send(session, sub, [pid])
        assert learn(session, [retraction], NOW - timedelta(days=3)) == 1
        assert statuses(session, [pid]) == {pid: "retracted"}
        # Ada was told of the retraction before it was withdrawn.
        (told,) = event_ids_for(session, ada, NOW)
        week2 = _send(session, ada, [], period=date(2026, 6, 1))
        session.add(DeliveryEvent(delivery_id=week2, event_id=told))
    with transaction(engine) as session:
        assert learn(session, [undone], NOW - timedelta(days=1)) == 0  # about no held paper
        assert statuses(session, [pid]) == {pid: "current"}
        subs = {s.email: s for s in session.scalars(select(Subscriber))}
        # Bob, not yet told, is not told a withdrawn retraction; Ada is told nothing again.
        assert event_ids_for(session, subs["bob@example.org"], NOW) == []
        assert event_ids_for(session, subs["ada@example.org"], NOW) == []
        # Learning the original retraction again does not revive it, nor add a row.
        assert learn(session, [retraction], NOW) == 0
        assert statuses(session, [pid]) == {pid: "current"}


def test_a_retracted_paper_is_marked_wherever_entries_are_shown(engine: Engine) -> None:
    from digests.selection import entries_for

    upsert(engine, [Paper(source_id="s", origin="pubmed", pmid="34196305",
                          title="Passive transfer of fibromyalgia symptoms")])  # fmt: skip
    with transaction(engine) as session:
        pid = session.scalar(select(PaperRow.id))
        assert pid is not None
        (before,) = entries_for(session, [pid])
        assert before.status == "current" and "Retracted" not in [b.label for b in before.badges]
        record(session, resolve(session, [PaperEvent(
            type="retracted", source="crossref", target_pmid="34196305",
        )]), NOW)  # fmt: skip
    with transaction(engine) as session:
        (after,) = entries_for(session, [pid])
    assert after.status == "retracted"
    assert after.badges[0].label == "Retracted" and after.badges[0].tone == "warning"
