"""The daemon's jobs: a crawl in a subprocess, the digest, deferred retries, and their record.

A mixin of :class:`crawler.daemon.scheduler.Daemon`, which owns the scheduler, the lock and the
attributes used here (settings, engine, children, stop, digest trigger, results).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.events import (
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobEvent,
    JobExecutionEvent,
)
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import Engine

from crawler.daemon.children import Children, crawl_command, litwatch_command
from crawler.db import WATCH_KEY, polls
from crawler.db import meta as meta_store
from crawler.db.models import utcnow
from crawler.schedule import crawl_trigger, first_crawl, latest_fire, missed_digest
from crawler.settings import Settings, SourceSettings

log = logging.getLogger("litwatch.daemon")

DIGEST_JOB = "digest"
WATCH_JOB = "lifecycle-watch"
BOUNCE_JOB = "bounces"
RETRY_JOB = "digest-retries"
MISSED_JOB = "digest:missed"


class Jobs:
    """What the daemon runs on schedule."""

    settings: Settings
    engine: Engine
    config_path: str | None
    log_level: str | None
    stop: threading.Event
    children: Children
    digest: CronTrigger
    digest_lock: threading.Lock
    meta_lock: threading.Lock
    results: dict[str, dict[str, Any]]

    def heartbeat(self) -> None:
        raise NotImplementedError

    def child_grace(self) -> float:
        raise NotImplementedError

    def crawl_job(self, source: SourceSettings) -> str:
        """Crawl one source in a subprocess; its own stats land in crawl_runs."""
        cmd = crawl_command(self.config_path, source.id, self.log_level)
        started = time.monotonic()
        proc = self.children.spawn(cmd)
        if proc is None:
            return "skipped (stopping)"
        log.info("event=crawl.start source=%s pid=%s", source.id, proc.pid)
        timeout = self.settings.daemon.crawl_timeout.total_seconds()
        result = self.children.wait(proc, timeout, self.child_grace())
        if proc.returncode is not None and proc.returncode < 0:
            closed = polls.close_runs_of(
                self.engine, source.id, proc.pid, f"interrupted ({result})"
            )
            if closed:
                log.info("event=crawl.closed_run source=%s pid=%s", source.id, proc.pid)
        seconds = time.monotonic() - started
        log.info("event=crawl.done source=%s result=%r seconds=%.1f", source.id, result, seconds)
        return result

    def add_upkeep_jobs(self, sched: Any, now: datetime) -> list[str]:
        """The lifecycle watch (``[lifecycle] interval``) and, when a mailbox is configured,
        bounce processing (``[email.bounces] interval``), each a ``litwatch`` subprocess."""
        added = []
        jitter = self.settings.daemon.jitter
        lifecycle = self.settings.lifecycle
        if lifecycle.enabled:
            record = meta_store.read(self.engine, WATCH_KEY)
            done = json.loads(record).get("finished_at") if record else None
            # Never run: nothing was sent before this daemon either, so a week from now.
            last = datetime.fromisoformat(done) if done else now
            sched.add_job(
                self.upkeep_job,
                crawl_trigger(lifecycle.interval, jitter),
                args=[WATCH_JOB, ["watch"]],
                id=WATCH_JOB,
                name="lifecycle watch",
                next_run_time=first_crawl(now, last, lifecycle.interval, jitter),
                misfire_grace_time=int(lifecycle.interval.total_seconds() / 2),
            )
            added.append(WATCH_JOB)
        bounces = self.settings.email.bounces
        if bounces.maildir or bounces.mbox or bounces.imap_host:
            sched.add_job(
                self.upkeep_job,
                crawl_trigger(bounces.interval, jitter),
                args=[BOUNCE_JOB, ["bounces", "process"]],
                id=BOUNCE_JOB,
                name="bounce processing",
                next_run_time=now,
                misfire_grace_time=int(bounces.interval.total_seconds() / 2),
            )
            added.append(BOUNCE_JOB)
        return added

    def upkeep_job(self, job: str, args: list[str]) -> str:
        """Run ``litwatch ARGS`` as a subprocess with the crawl timeout; its result line."""
        proc = self.children.spawn(litwatch_command(self.config_path, self.log_level, *args))
        if proc is None:
            return "skipped (stopping)"
        log.info("event=%s.start pid=%s", job, proc.pid)
        timeout = self.settings.daemon.crawl_timeout.total_seconds()
        result = self.children.wait(proc, timeout, self.child_grace())
        log.info("event=%s.done result=%r", job, result)
        return result

    def digest_job(self) -> str:
        """Send the digest as of its latest scheduled time (its cutoff)."""
        from digests.send import send_digests

        with self.digest_lock:
            if self.stop.is_set():
                return "skipped (stopping)"
            now = utcnow()
            grace = self.settings.digest.misfire_grace
            cutoff = latest_fire(self.digest, now - grace - timedelta(seconds=1), now) or now
            log.info("event=digest.start cutoff=%s", utc_iso(cutoff))
            report = send_digests(
                self.settings, self.engine, now=cutoff, should_stop=self.stop.is_set
            )
            # Done means every subscriber was seen: a stopped or failed run is finished by
            # the next start (missed digest) or the next fire time, never sent twice.
            if not self.stop.is_set() and report.fatal is None:
                meta_store.mark_digest_done(self.engine, cutoff)
        result = f"sent {report.sent}, pending {report.pending}, failed {report.failed}"
        if report.fatal:
            result += f"; {report.fatal}"
        log.info("event=digest.done cutoff=%s result=%r", utc_iso(cutoff), result)
        return result

    def retry_job(self) -> str:
        """Finish a digest run that was cut short, else send deferred digests now due.

        A digest run stopped by the server (unreachable, login refused) planned only the
        subscribers before the stop; the others would wait for next week's run. So while its
        fire time is within the grace and not marked done, this job runs the digest again:
        it sends what is due and plans the rest, each exactly once as always.
        """
        from digests.send import retry_pending

        grace = self.settings.digest.misfire_grace
        if (
            missed_digest(self.digest, utcnow(), meta_store.digest_done(self.engine), grace)
            is not None
        ):
            log.info("event=digest.resume reason=last_run_unfinished")
            return self.digest_job()
        with self.digest_lock:
            if self.stop.is_set():
                return "skipped (stopping)"
            report = retry_pending(self.settings, self.engine, should_stop=self.stop.is_set)
        result = f"sent {report.sent}, pending {report.pending}, failed {report.failed}"
        if report.sent or report.failed or report.fatal:
            log.info("event=digest.retries result=%r fatal=%r", result, report.fatal)
        return result

    def _on_job(self, event: JobEvent) -> None:
        job_id = DIGEST_JOB if event.job_id == MISSED_JOB else event.job_id
        if event.code == EVENT_JOB_MAX_INSTANCES:
            log.info("event=job.skipped job=%s reason=still_running", event.job_id)
            return
        assert isinstance(event, JobExecutionEvent)
        if event.code == EVENT_JOB_MISSED:
            when = utc_iso(event.scheduled_run_time)
            log.warning("event=job.missed job=%s scheduled=%s", event.job_id, when)
            return
        if event.exception is not None:
            log.error(
                "event=job.error job=%s error=%r",
                event.job_id,
                str(event.exception),
                exc_info=event.exception,
            )
            result = f"error: {event.exception!r}"
        else:
            result = str(event.retval)
        with self.meta_lock:
            self.results[job_id] = {"last_run": utcnow().isoformat(), "last_result": result}
        self.heartbeat()


def utc_iso(when: datetime | None) -> str | None:
    return when.astimezone(UTC).isoformat() if when is not None else None
