"""The daemon's scheduling rules with fixed times: DST weeks, missed weeks, first crawls, jitter.

Everything here is pure (crawler.schedule): no scheduler thread, no clock. Expected instants
are written out by hand from the calendar: Europe/Oslo is UTC+1 in winter and UTC+2 in
summer; in 2026 summer time starts on Sunday 29 March and ends on Sunday 25 October.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from crawler.schedule import (
    bounded_jitter,
    crawl_trigger,
    crontab_day_of_week,
    digest_trigger,
    fire_times,
    first_crawl,
    latest_fire,
    missed_digest,
    seconds_trigger,
)

OSLO = ZoneInfo("Europe/Oslo")
WEEKLY = "0 7 * * mon"  # the shipped default
DAY = timedelta(days=1)
GRACE = timedelta(hours=24)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# --- Digest cron across daylight-saving changes --------------------------------------------------


def test_weekly_digest_fires_at_seven_local_both_sides_of_spring_change() -> None:
    trigger = digest_trigger(WEEKLY, "Europe/Oslo")
    fires = fire_times(trigger, utc(2026, 3, 20), utc(2026, 4, 3))
    # Monday 23 March is winter time (07:00 = 06:00 UTC); Monday 30 March, the day after the
    # change, is summer time (07:00 = 05:00 UTC).
    assert fires == [utc(2026, 3, 23, 6), utc(2026, 3, 30, 5)]
    assert [f.astimezone(OSLO).hour for f in fires] == [7, 7]
    assert fires[1].astimezone(UTC) - fires[0].astimezone(UTC) == timedelta(days=7, hours=-1)


def test_weekly_digest_fires_at_seven_local_both_sides_of_autumn_change() -> None:
    trigger = digest_trigger(WEEKLY, "Europe/Oslo")
    fires = fire_times(trigger, utc(2026, 10, 16), utc(2026, 10, 30))
    assert fires == [utc(2026, 10, 19, 5), utc(2026, 10, 26, 6)]
    assert [f.astimezone(OSLO).hour for f in fires] == [7, 7]
    assert fires[1].astimezone(UTC) - fires[0].astimezone(UTC) == timedelta(days=7, hours=1)


def test_daily_digest_on_the_change_days_keeps_wall_clock_time() -> None:
    trigger = digest_trigger("0 7 * * *", "Europe/Oslo")
    spring = fire_times(trigger, utc(2026, 3, 28), utc(2026, 3, 30, 12))
    assert spring == [utc(2026, 3, 28, 6), utc(2026, 3, 29, 5), utc(2026, 3, 30, 5)]
    autumn = fire_times(trigger, utc(2026, 10, 24), utc(2026, 10, 26, 12))
    assert autumn == [utc(2026, 10, 24, 5), utc(2026, 10, 25, 6), utc(2026, 10, 26, 6)]


# --- Crontab day-of-week numbers -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "weekdays"),
    [
        ("1", {0}),  # crontab 1 = Monday (APScheduler 3 alone would read Tuesday)
        ("0", {6}),
        ("7", {6}),
        ("1-5", {0, 1, 2, 3, 4}),
        ("mon-fri", {0, 1, 2, 3, 4}),
        ("5-7", {4, 5, 6}),
        ("*/2", {6, 1, 3, 5}),  # Sunday, Tuesday, Thursday, Saturday
        ("1,3", {0, 2}),
        ("*", set(range(7))),
    ],
)
def test_crontab_day_numbers_mean_what_crontab_means(field: str, weekdays: set[int]) -> None:
    trigger = digest_trigger(f"0 7 * * {field}", "UTC")
    # Two weeks starting on Monday 2 March 2026.
    fires = fire_times(trigger, utc(2026, 3, 1, 23), utc(2026, 3, 15, 23))
    assert {f.weekday() for f in fires} == weekdays
    assert len(fires) == 2 * len(weekdays)


@pytest.mark.parametrize("field", ["8", "fri-mon", "mon/0", "x", "1-"])
def test_bad_day_of_week_is_refused(field: str) -> None:
    with pytest.raises(ValueError, match="day"):
        crontab_day_of_week(field)


def test_digest_trigger_wants_five_fields() -> None:
    with pytest.raises(ValueError, match="5 crontab fields"):
        digest_trigger("0 0 7 * * mon", "UTC")


def test_seconds_trigger_is_a_six_field_test_schedule() -> None:
    trigger = seconds_trigger("*/3 * * * * *", "UTC")
    assert fire_times(trigger, utc(2026, 5, 4, 12), utc(2026, 5, 4, 12, 0, 10)) == [
        utc(2026, 5, 4, 12, 0, s) for s in (3, 6, 9)
    ]
    monday = seconds_trigger("30 0 7 * * 1", "Europe/Oslo")
    assert fire_times(monday, utc(2026, 3, 27), utc(2026, 4, 3)) == [utc(2026, 3, 30, 5, 0, 30)]
    with pytest.raises(ValueError, match="6 cron fields"):
        seconds_trigger("* * * * *", "UTC")


# --- latest_fire: bisection agrees with walking every fire time ----------------------------------


@pytest.mark.parametrize(
    ("cron", "longest"),
    [
        ("*/7 * * * * *", 900),  # walking a per-second schedule is slow: short windows
        ("0 */5 * * * *", 86400),
        ("0 30 7 * * 1-5", 3 * 86400),
        ("0 0 2 * * 0", 3 * 86400),  # 02:00 does not exist on the spring change day
    ],
)
def test_latest_fire_matches_brute_force(cron: str, longest: int) -> None:
    trigger = seconds_trigger(cron, "Europe/Oslo")
    rng = random.Random(5)
    for _ in range(20):
        # Windows ending anywhere in the three days around the spring change.
        end = utc(2026, 3, 28) + timedelta(seconds=rng.uniform(0, 3 * 86400))
        start = end - timedelta(seconds=rng.uniform(1, longest))
        walked = fire_times(trigger, start, end)
        assert latest_fire(trigger, start, end) == (walked[-1] if walked else None)


def test_latest_fire_window_is_half_open() -> None:
    trigger = digest_trigger("0 7 * * *", "UTC")
    seven = utc(2026, 6, 1, 7)
    assert latest_fire(trigger, seven - DAY, seven) == seven  # end included
    assert latest_fire(trigger, seven, seven + timedelta(hours=1)) is None  # start excluded


# --- Missed digests ------------------------------------------------------------------------------


def test_daemon_down_over_the_digest_time_gets_exactly_that_time() -> None:
    trigger = digest_trigger(WEEKLY, "Europe/Oslo")
    # Down from Sunday evening to Monday 30 March, 15:00 local (summer time since Sunday).
    back = utc(2026, 3, 30, 13)
    missed = missed_digest(trigger, back, last_done=utc(2026, 3, 23, 6), grace=GRACE)
    assert missed == utc(2026, 3, 30, 5)
    assert missed is not None and missed.astimezone(OSLO).hour == 7


def test_missed_digest_beyond_the_grace_is_not_sent() -> None:
    trigger = digest_trigger(WEEKLY, "Europe/Oslo")
    fire = utc(2026, 3, 30, 5)
    assert missed_digest(trigger, fire + GRACE - timedelta(seconds=1), None, GRACE) == fire
    assert missed_digest(trigger, fire + GRACE, None, GRACE) is None  # exactly the grace: out
    assert missed_digest(trigger, fire + timedelta(hours=25), None, GRACE) is None


def test_missed_digest_already_done_is_not_sent_again() -> None:
    trigger = digest_trigger(WEEKLY, "Europe/Oslo")
    back = utc(2026, 3, 30, 13)
    assert missed_digest(trigger, back, last_done=utc(2026, 3, 30, 5), grace=GRACE) is None
    # The mark may come from the same instant written in another zone.
    done_local = datetime(2026, 3, 30, 7, tzinfo=OSLO)
    assert missed_digest(trigger, back, last_done=done_local, grace=GRACE) is None


def test_no_fire_time_in_the_grace_means_nothing_missed() -> None:
    trigger = digest_trigger(WEEKLY, "Europe/Oslo")
    assert missed_digest(trigger, utc(2026, 4, 2, 12), None, GRACE) is None  # a Thursday


def test_daemon_down_three_weeks_sends_one_digest_not_three() -> None:
    trigger = digest_trigger(WEEKLY, "Europe/Oslo")
    last_done = utc(2026, 3, 16, 6)  # the last Monday sent before the outage
    back = utc(2026, 4, 6, 9)  # three Mondays later (23 Mar, 30 Mar, 6 Apr), at 11:00 local
    # Even with a grace wide enough to cover all three, only the latest is returned ...
    for grace in (GRACE, timedelta(days=30)):
        assert missed_digest(trigger, back, last_done, grace) == utc(2026, 4, 6, 5)
    # ... and once it is done (the daemon marks it), a restart finds nothing more to send.
    done = utc(2026, 4, 6, 5)
    for restart in (back + timedelta(minutes=1), back + timedelta(hours=20)):
        assert missed_digest(trigger, restart, done, timedelta(days=30)) is None


# --- First crawl after a start -------------------------------------------------------------------

NOW = utc(2026, 3, 30, 12)
SIX_HOURS = timedelta(hours=6)
FIVE_MINUTES = timedelta(minutes=5)


def test_recent_success_waits_for_the_rest_of_the_interval() -> None:
    last = NOW - timedelta(hours=1)
    assert first_crawl(NOW, last, SIX_HOURS, FIVE_MINUTES) == last + SIX_HOURS


@pytest.mark.parametrize("last", [None, NOW - timedelta(hours=7), NOW - timedelta(days=30)])
def test_never_polled_or_overdue_source_runs_soon(last: datetime | None) -> None:
    rng = random.Random(1)
    times = [first_crawl(NOW, last, SIX_HOURS, FIVE_MINUTES, rng) for _ in range(200)]
    # Spread over at most min(jitter, interval / 4, 60 s) so sources do not all fire at once.
    assert all(NOW <= t <= NOW + timedelta(seconds=60) for t in times)
    assert len(set(times)) > 100


def test_short_interval_spreads_its_first_run_over_a_quarter_interval() -> None:
    rng = random.Random(2)
    interval = timedelta(seconds=8)
    times = [first_crawl(NOW, None, interval, FIVE_MINUTES, rng) for _ in range(100)]
    assert all(NOW <= t <= NOW + timedelta(seconds=2) for t in times)


def test_success_in_the_future_delays_at_most_one_interval() -> None:
    skewed = NOW + timedelta(days=3)  # written by a machine whose clock was wrong
    assert first_crawl(NOW, skewed, SIX_HOURS, FIVE_MINUTES) == NOW + SIX_HOURS


def test_first_crawl_is_reproducible_with_a_seeded_rng() -> None:
    a = first_crawl(NOW, None, SIX_HOURS, FIVE_MINUTES, random.Random(9))
    b = first_crawl(NOW, None, SIX_HOURS, FIVE_MINUTES, random.Random(9))
    assert a == b


# --- Crawl trigger jitter ------------------------------------------------------------------------


def _gaps(interval: timedelta, jitter: timedelta, count: int = 300) -> list[timedelta]:
    trigger = crawl_trigger(interval, jitter)
    previous = NOW
    gaps = []
    for _ in range(count):
        nxt = trigger.get_next_fire_time(previous, previous)
        gaps.append(nxt - previous)
        previous = nxt
    return gaps


def test_crawl_jitter_is_bounded_by_the_configured_jitter() -> None:
    gaps = _gaps(SIX_HOURS, FIVE_MINUTES)
    assert all(SIX_HOURS <= g <= SIX_HOURS + FIVE_MINUTES for g in gaps)
    assert max(gaps) - min(gaps) > timedelta(minutes=3)  # it does vary


def test_crawl_jitter_is_bounded_by_a_quarter_of_a_short_interval() -> None:
    interval = timedelta(seconds=8)
    assert bounded_jitter(interval, FIVE_MINUTES) == timedelta(seconds=2)
    gaps = _gaps(interval, FIVE_MINUTES)
    assert all(interval <= g <= interval + timedelta(seconds=2) for g in gaps)


def test_zero_jitter_is_exact() -> None:
    assert set(_gaps(SIX_HOURS, timedelta(0), 20)) == {SIX_HOURS}
