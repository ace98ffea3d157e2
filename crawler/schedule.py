"""Pure scheduling decisions for the daemon: triggers, first runs, missed digests.

Kept free of threads and clocks so the rules can be tested with fixed times (a DST week, a
missed week) without running a scheduler.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger


def digest_trigger(cron: str, timezone: str) -> CronTrigger:
    """The digest's trigger: a 5-field crontab in an IANA zone (wall-clock, DST-aware)."""
    return CronTrigger.from_crontab(cron, timezone=ZoneInfo(timezone))


def fire_times(trigger: CronTrigger, start: datetime, end: datetime) -> list[datetime]:
    """Every fire time of ``trigger`` in ``(start, end]``."""
    out: list[datetime] = []
    previous = None
    now = start + timedelta(microseconds=1)
    while True:
        nxt = trigger.get_next_fire_time(previous, now)
        if nxt is None or nxt > end:
            return out
        out.append(nxt)
        previous, now = nxt, nxt + timedelta(microseconds=1)


def missed_digest(
    trigger: CronTrigger, now: datetime, last_done: datetime | None, grace: timedelta
) -> datetime | None:
    """The scheduled time of a digest missed while the daemon was down, if one is due.

    Only the latest missed fire time within ``grace`` counts: a daemon down for three weeks
    sends one digest when it returns, not three (the digest itself covers every paper not yet
    sent, so nothing is lost).
    """
    missed = fire_times(trigger, now - grace, now)
    if not missed:
        return None
    latest = missed[-1]
    if last_done is not None and last_done >= latest:
        return None
    return latest


def crawl_trigger(interval: timedelta, jitter: timedelta) -> IntervalTrigger:
    """A source's trigger: every ``interval``, each run moved by up to ``jitter`` (at most a
    quarter of the interval, so a short interval is not swamped by its jitter)."""
    bounded = min(jitter, interval / 4)
    return IntervalTrigger(
        seconds=interval.total_seconds(), jitter=int(bounded.total_seconds()) or None
    )


def first_crawl(
    now: datetime,
    last_success: datetime | None,
    interval: timedelta,
    jitter: timedelta,
    rng: random.Random | None = None,
) -> datetime:
    """When a source is first crawled after the daemon starts.

    A source polled within its interval waits for the rest of it (restarts do not hammer
    sites); an overdue or never-polled one runs soon, spread over a short random delay so
    that sources do not all fire at once.
    """
    rng = rng or random.Random()
    spread = min(jitter, interval / 4, timedelta(seconds=60)).total_seconds()
    soon = now + timedelta(seconds=rng.uniform(0, spread))
    if last_success is None:
        return soon
    due = last_success + interval
    return max(due, soon)
