"""Which papers go into whose digest: topics, cutoff, first look-back, periods, time zones.

Digests are planned and "sent" through the file backend (the embedded default) against a
real database; what each delivery holds is read back from the deliveries tables.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from crawler.db.engine import transaction
from crawler.db.models import Delivery, PaperTopic
from digests import selection as sel
from digests import subscribers as subs
from digests.planning import PagePlan, plan
from digests.send import send_digests
from tests.test_digest_send import (
    NOW,
    SQLITE_ONLY,
    base_sections,
    deliveries,
    make_settings,
    paper,
    papers_of,
    store,
    subscribe,
)

LOOKBACK = timedelta(days=7)


def selected(
    engine: Engine, email: str, cutoff: datetime, lookback: timedelta = LOOKBACK
) -> set[int]:
    with transaction(engine) as session:
        sub = subs.find(session, email)
        assert sub is not None
        return set(sel.select_paper_ids(session, sub, cutoff, lookback))


def held(engine: Engine, email: str) -> dict[date, set[int]]:
    """What each of the subscriber's deliveries holds, by period."""
    with transaction(engine) as session:
        sub = subs.find(session, email)
        assert sub is not None
        rows = list(session.scalars(select(Delivery).where(Delivery.subscriber_id == sub.id)))
    return {d.period: papers_of(engine, d.id) for d in rows}


def settings_with(tmp_path: Path, engine: Engine, **digest: Any) -> Any:
    sections = base_sections(tmp_path / "outbox")
    if digest:
        sections["digest"] = digest
    return make_settings(tmp_path, engine, sections)


def test_papers_on_the_topics_first_seen_before_the_cutoff(engine: Engine) -> None:
    subscribe(engine, "fibro@example.org", topics=["fibromyalgia"])
    [just_before] = store(engine, [paper(1, "fibromyalgia")], NOW - timedelta(seconds=1))
    [other_topic] = store(engine, [paper(2, "autoimmunity")], NOW - timedelta(hours=1))
    [at_cutoff] = store(engine, [paper(3, "fibromyalgia")], NOW)
    [after] = store(engine, [paper(4, "fibromyalgia")], NOW + timedelta(hours=1))
    [both] = store(engine, [paper(5, "fibromyalgia", "autoimmunity")], NOW - timedelta(days=1))

    assert selected(engine, "fibro@example.org", NOW) == {just_before, both}
    assert selected(engine, "fibro@example.org", NOW + timedelta(days=1)) == {
        just_before,
        both,
        at_cutoff,
        after,
    }
    assert other_topic not in selected(engine, "fibro@example.org", NOW + timedelta(days=1))


def test_a_first_digest_reaches_back_at_most_the_configured_lookback(
    engine: Engine, tmp_path: Path
) -> None:
    [old] = store(engine, [paper(1, "fibromyalgia")], NOW - timedelta(days=8))
    [recent] = store(engine, [paper(2, "fibromyalgia")], NOW - timedelta(days=6))
    subscribe(engine, "new@example.org")
    subscribe(engine, "other@example.org")

    assert selected(engine, "new@example.org", NOW) == {recent}  # default: 7 days
    assert selected(engine, "new@example.org", NOW, timedelta(days=14)) == {old, recent}

    report = send_digests(settings_with(tmp_path, engine), engine, now=NOW)
    assert report.sent == 2
    assert held(engine, "new@example.org") == {date(2026, 3, 2): {recent}}

    # The configured look-back, through the settings.
    longer = settings_with(tmp_path, engine, first_lookback="14d")
    assert longer.digest.first_lookback == timedelta(days=14)
    subscribe(engine, "late@example.org")
    send_digests(longer, engine, now=NOW)
    assert held(engine, "late@example.org") == {date(2026, 3, 2): {old, recent}}


def test_a_paper_is_never_sent_to_the_same_subscriber_twice_across_periods(
    engine: Engine, tmp_path: Path
) -> None:
    settings = settings_with(tmp_path, engine)
    subscribe(engine, "ada@example.org")
    [week1] = store(engine, [paper(1, "fibromyalgia")], NOW - timedelta(days=2))
    # Seen before the first cutoff, but only tagged with a topic after it was sent.
    [tagged_late] = store(engine, [paper(2)], NOW - timedelta(days=3))
    send_digests(settings, engine, now=NOW)
    assert held(engine, "ada@example.org") == {date(2026, 3, 2): {week1}}

    with transaction(engine) as session:
        session.add(PaperTopic(paper_id=tagged_late, topic="autoimmunity"))
    # The paper from week 1 shows up again (a second source): same paper, same id.
    assert store(engine, [paper(1, "fibromyalgia")], NOW + timedelta(days=3)) == [week1]
    [week2] = store(engine, [paper(3, "autoimmunity")], NOW + timedelta(days=3))
    send_digests(settings, engine, now=NOW + timedelta(days=7))
    assert held(engine, "ada@example.org")[date(2026, 3, 9)] == {tagged_late, week2}

    # A daily run the next day: a new period, but nothing new since the last cutoff.
    report = send_digests(settings, engine, now=NOW + timedelta(days=8))
    assert (report.sent, report.empty) == (0, 1)
    all_held = [p for ids in held(engine, "ada@example.org").values() for p in ids]
    assert sorted(all_held) == sorted(set(all_held))


def test_papers_planned_in_a_pending_digest_are_not_selected_again(
    engine: Engine, tmp_path: Path
) -> None:
    settings = settings_with(tmp_path, engine)
    sub_id = subscribe(engine, "ada@example.org")
    [first] = store(engine, [paper(1, "fibromyalgia")], NOW - timedelta(days=1))
    with transaction(engine) as session:
        sub = subs.find(session, "ada@example.org")
    assert sub is not None and sub.id == sub_id
    delivery_id, why = plan(engine, settings, sub, NOW, NOW)
    assert why == "due" and delivery_id is not None
    # Planning twice for one period keeps the one row.
    assert plan(engine, settings, sub, NOW + timedelta(hours=1), NOW) == (delivery_id, "due")
    [later] = store(engine, [paper(2, "fibromyalgia")], NOW + timedelta(days=1))
    assert selected(engine, "ada@example.org", NOW + timedelta(days=7)) == {later}
    assert papers_of(engine, delivery_id) == {first}


def test_a_delivery_planned_meanwhile_by_another_sender_is_not_planned_again(
    engine: Engine, tmp_path: Path
) -> None:
    settings = settings_with(tmp_path, engine)
    subscribe(engine, "ada@example.org")
    [first] = store(engine, [paper(1, "fibromyalgia")], NOW - timedelta(days=1))
    with transaction(engine) as session:
        sub = subs.find(session, "ada@example.org")
    assert sub is not None
    page = PagePlan(engine, settings, [sub], NOW, cutoff=NOW)  # read: nothing planned yet
    assert page.existing(sub) is None
    other_id, why = plan(engine, settings, sub, NOW, NOW)  # another sender plans it now
    assert why == "due" and other_id is not None

    assert page.plan(engine, sub) == (None, "sent")  # the insert met the unique key
    with transaction(engine) as session:
        rows = session.scalars(select(Delivery)).all()
    assert [row.id for row in rows] == [other_id]
    assert papers_of(engine, other_id) == {first}


@pytest.mark.parametrize(
    ("zone", "day", "expected_utc"),
    [
        ("Europe/Oslo", date(2026, 1, 12), datetime(2026, 1, 11, 23, 0, tzinfo=UTC)),  # UTC+1
        ("Europe/Oslo", date(2026, 7, 1), datetime(2026, 6, 30, 22, 0, tzinfo=UTC)),  # UTC+2
        ("America/Los_Angeles", date(2026, 1, 12), datetime(2026, 1, 12, 8, 0, tzinfo=UTC)),
        ("America/Los_Angeles", date(2026, 7, 1), datetime(2026, 7, 1, 7, 0, tzinfo=UTC)),
    ],
)
def test_period_end_is_the_start_of_that_day_in_the_subscribers_zone(
    zone: str, day: date, expected_utc: datetime
) -> None:
    cutoff = sel.cutoff_for(zone, period_end=day, now=NOW)
    assert cutoff == expected_utc
    assert sel.period_of(cutoff, zone) == day


def test_period_end_around_midnight_oslo_versus_los_angeles(engine: Engine, tmp_path: Path) -> None:
    subscribe(engine, "oslo@example.org", timezone="Europe/Oslo")
    subscribe(engine, "la@example.org", timezone="America/Los_Angeles")
    # Midnight starting 12 Jan 2026 is 23:00 UTC on the 11th in Oslo, 08:00 UTC in LA.
    [before_both] = store(
        engine, [paper(1, "fibromyalgia")], datetime(2026, 1, 11, 22, 59, tzinfo=UTC)
    )
    [between] = store(engine, [paper(2, "fibromyalgia")], datetime(2026, 1, 11, 23, 30, tzinfo=UTC))
    store(engine, [paper(3, "fibromyalgia")], datetime(2026, 1, 12, 8, 0, tzinfo=UTC))
    run_at = datetime(2026, 1, 13, 9, 0, tzinfo=UTC)

    report = send_digests(
        settings_with(tmp_path, engine), engine, period_end=date(2026, 1, 12), now=run_at
    )

    assert report.sent == 2
    assert held(engine, "oslo@example.org") == {date(2026, 1, 12): {before_both}}
    assert held(engine, "la@example.org") == {date(2026, 1, 12): {before_both, between}}
    cutoffs = {d.subscriber_id: d.cutoff for d in deliveries(engine)}
    assert sorted(cutoffs.values()) == [
        datetime(2026, 1, 11, 23, 0, tzinfo=UTC),
        datetime(2026, 1, 12, 8, 0, tzinfo=UTC),
    ]


@SQLITE_ONLY
def test_without_period_end_the_period_is_todays_date_where_the_subscriber_lives(
    engine: Engine, tmp_path: Path
) -> None:
    settings = settings_with(tmp_path, engine)
    subscribe(engine, "oslo@example.org", timezone="Europe/Oslo")
    subscribe(engine, "la@example.org", timezone="America/Los_Angeles")
    [early] = store(engine, [paper(1, "fibromyalgia")], datetime(2026, 1, 11, 12, tzinfo=UTC))
    # 07:30 UTC on 12 Jan: 08:30 on the 12th in Oslo, 23:30 on the 11th in Los Angeles.
    first = datetime(2026, 1, 12, 7, 30, tzinfo=UTC)
    send_digests(settings, engine, now=first)
    assert held(engine, "oslo@example.org") == {date(2026, 1, 12): {early}}
    assert held(engine, "la@example.org") == {date(2026, 1, 11): {early}}

    # An hour later it is a new day in Los Angeles only: a new period there, holding only
    # what is new since; Oslo's digest for the 12th was already sent.
    [late] = store(engine, [paper(2, "fibromyalgia")], datetime(2026, 1, 12, 7, 45, tzinfo=UTC))
    report = send_digests(settings, engine, now=first + timedelta(hours=1))
    assert (report.sent, report.already) == (1, 1)
    assert held(engine, "la@example.org") == {
        date(2026, 1, 11): {early},
        date(2026, 1, 12): {late},
    }


def test_one_digest_per_subscriber_and_period_however_often_send_runs(
    engine: Engine, tmp_path: Path
) -> None:
    settings = settings_with(tmp_path, engine)
    subscribe(engine, "ada@example.org", timezone="Europe/Oslo")
    store(engine, [paper(1, "fibromyalgia")], datetime(2026, 1, 10, tzinfo=UTC))
    runs = [datetime(2026, 1, 13, h, tzinfo=UTC) for h in (0, 6, 12, 22)]
    sent = [
        send_digests(settings, engine, period_end=date(2026, 1, 12), now=at).sent for at in runs
    ]
    assert sent == [1, 0, 0, 0]
    assert len(deliveries(engine)) == 1
    outbox = tmp_path / "outbox"
    assert len(list(outbox.glob("*.eml"))) == 1
