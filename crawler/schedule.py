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

_TICK = timedelta(microseconds=1)
#: Cron fire times fall on whole seconds, so two distinct ones are at least this far apart.
_CRON_RESOLUTION = timedelta(seconds=1)
#: The first crawl of an overdue source is spread over at most this much.
_FIRST_SPREAD = timedelta(seconds=60)


def digest_trigger(cron: str, timezone: str) -> CronTrigger:
    """The digest's trigger: a 5-field crontab in an IANA zone (wall-clock, DST-aware)."""
    fields = cron.split()
    if len(fields) != 5:
        raise ValueError(f"expected 5 crontab fields, got {len(fields)}: {cron!r}")
    minute, hour, day, month, dow = fields
    return CronTrigger(
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=crontab_day_of_week(dow),
        timezone=ZoneInfo(timezone),
    )


def seconds_trigger(spec: str, timezone: str) -> CronTrigger:
    """A 6-field cron (``SECOND MINUTE HOUR DAY MONTH DAY_OF_WEEK``) for end-to-end tests.

    Production schedules are 5-field crontabs validated by the settings; this exists only
    so that a test daemon can send a digest every few seconds (``litwatch run
    --test-digest-cron``).
    """
    fields = spec.split()
    if len(fields) != 6:
        raise ValueError(f"expected 6 cron fields (seconds first), got {len(fields)}: {spec!r}")
    trigger = digest_trigger(" ".join(fields[1:]), timezone)
    return CronTrigger(
        second=fields[0],
        **{f.name: str(f) for f in trigger.fields if f.name in _CRONTAB_FIELDS},
        timezone=trigger.timezone,
    )


_CRONTAB_FIELDS = ("minute", "hour", "day", "month", "day_of_week")
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def crontab_day_of_week(field: str) -> str:
    """Translate crontab's day-of-week field (0 or 7 = Sunday) into day names.

    APScheduler 3 numbers days from Monday = 0 (its ``from_crontab`` documents the mismatch,
    issue 286), so a standard "0 7 * * 1" would fire on Tuesdays. Names mean the same in
    both, so every day is spelt out: "1-5" becomes "mon,tue,wed,thu,fri".
    """
    if field == "*":
        return field
    days: set[int] = set()
    for item in field.lower().split(","):
        days |= _expand_days(item)
    return ",".join(_DAY_NAMES[d] for d in sorted(days))


def _expand_days(item: str) -> set[int]:
    body, slash, step_text = item.partition("/")
    if slash and not (step_text.isdigit() and int(step_text) > 0):
        raise ValueError(f"invalid day-of-week step in {item!r}")
    step = int(step_text) if slash else 1
    if body == "*":
        first, last = 0, 6
    elif "-" in body:
        low, high = body.split("-", 1)
        # "fri-sun" and "5-7" end on Sunday, which closes a range as 7.
        first, last = _day_number(low), _day_number(high) or 7
    else:
        first = _day_number(body)
        last = 6 if slash else first  # "1/2": from Monday on, every other day
    if first > last:
        raise ValueError(f"invalid day-of-week range {item!r}")
    return {d % 7 for d in range(first, last + 1, step)}


def _day_number(token: str) -> int:
    if token in _DAY_NAMES:
        return _DAY_NAMES.index(token)
    if token.isdigit() and int(token) <= 7:
        return int(token)
    raise ValueError(f"invalid day of week {token!r}")


def next_fire(trigger: CronTrigger, after: datetime) -> datetime | None:
    """The first fire time of ``trigger`` strictly after ``after``."""
    fire: datetime | None = trigger.get_next_fire_time(None, after + _TICK)
    return fire


def fire_times(trigger: CronTrigger, start: datetime, end: datetime) -> list[datetime]:
    """Every fire time of ``trigger`` in ``(start, end]`` (for short windows: it walks them)."""
    out: list[datetime] = []
    nxt = next_fire(trigger, start)
    while nxt is not None and nxt <= end:
        out.append(nxt)
        nxt = next_fire(trigger, nxt)
    return out


def latest_fire(trigger: CronTrigger, after: datetime, until: datetime) -> datetime | None:
    """The latest fire time of ``trigger`` in ``(after, until]``, or None.

    Found by bisection rather than by walking every fire time: a per-minute (or, in tests,
    per-second) schedule has tens of thousands of fire times in a 24-hour grace window.
    """
    first = next_fire(trigger, after)
    if first is None or first > until:
        return None
    # Invariant: a fire time lies in (lo, until], none in (hi, until].
    lo, hi = after, until
    while hi - lo >= _CRON_RESOLUTION:
        mid = lo + (hi - lo) / 2
        found = next_fire(trigger, mid)
        if found is not None and found <= until:
            lo = mid
        else:
            hi = mid
    # (lo, hi] is under one second wide, so it holds exactly one (whole-second) fire time.
    return next_fire(trigger, lo)


def missed_digest(
    trigger: CronTrigger, now: datetime, last_done: datetime | None, grace: timedelta
) -> datetime | None:
    """The scheduled time of a digest missed while the daemon was down, if one is due.

    Only the latest fire time within ``grace`` counts: a daemon down for three weeks sends
    one digest when it returns, not three (the digest itself covers every paper not yet
    sent, so nothing is lost). None when that time was already done or is beyond the grace.
    """
    latest = latest_fire(trigger, now - grace, now)
    if latest is None:
        return None
    if last_done is not None and last_done >= latest:
        return None
    return latest


def bounded_jitter(interval: timedelta, jitter: timedelta) -> timedelta:
    """The jitter actually used: at most a quarter of the interval, so a short interval is
    not swamped by its jitter."""
    return max(min(jitter, interval / 4), timedelta(0))


def crawl_trigger(interval: timedelta, jitter: timedelta) -> IntervalTrigger:
    """A source's trigger: every ``interval`` plus a random delay of up to the bounded jitter
    (so that sources started together drift apart)."""
    seconds = int(bounded_jitter(interval, jitter).total_seconds())
    return IntervalTrigger(seconds=interval.total_seconds(), jitter=seconds or None)


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
    that sources do not all fire at once. A last success in the future (a clock that was
    wrong) never delays the poll by more than one interval.
    """
    rng = rng or random.Random()
    spread = min(bounded_jitter(interval, jitter), _FIRST_SPREAD).total_seconds()
    soon = now + timedelta(seconds=rng.uniform(0, spread))
    if last_success is None:
        return soon
    due = min(last_success + interval, now + interval)
    return max(due, soon)
