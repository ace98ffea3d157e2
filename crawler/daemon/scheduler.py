"""``litwatch run``: one long-lived process that keeps crawls and digests on schedule.

- APScheduler 3 (background scheduler, in-memory jobs built from the configuration at start).
  Crawls run as ``litwatch crawl ID`` subprocesses with a timeout (Scrapy's reactor cannot
  restart inside one process); the digest runs in-process on its cron, in its time zone.
  Crawls and the digest have separate thread pools, so four long crawls never hold back
  the digest.
- One daemon per database (crawler.locks: an advisory lock on PostgreSQL, a lock file next to
  a SQLite database); ``--standby`` waits and takes over when the holder dies.
- Restarts: a source polled within its interval is not polled again at once; a digest whose
  time passed while the daemon was down is sent once on return, within ``misfire_grace``.
- Every 10 minutes, deferred deliveries whose backoff has passed are sent, and a digest run
  the SMTP server cut short is run again (within ``misfire_grace``).
- SIGTERM / SIGINT: stop scheduling, let the digest stop between two messages, ask crawl
  subprocesses to stop (Scrapy closes gracefully on SIGTERM), exit 0 within a bounded time
  (``child_grace``: the download timeout plus 10 s, at least 20 s, for crawls; the SMTP
  timeout for a message in flight; 40 s with the shipped defaults).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from types import FrameType
from typing import Any

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine

from crawler.daemon.children import Children
from crawler.daemon.jobs import DIGEST_JOB, MISSED_JOB, RETRY_JOB, Jobs, utc_iso
from crawler.db import meta as meta_store
from crawler.db import polls
from crawler.db.engine import describe_url
from crawler.db.models import utcnow
from crawler.locks import CHECK_EVERY, DAEMON_LOCK, NamedLock, crawl_lock
from crawler.schedule import crawl_trigger, digest_trigger, first_crawl, missed_digest
from crawler.settings import Settings

log = logging.getLogger("litwatch.daemon")

#: How often deferred digest deliveries are looked at.
RETRY_EVERY = timedelta(minutes=10)
#: Seconds between two heartbeats (the daemon record that ``litwatch status`` reads).
HEARTBEAT = 15.0
#: After SIGTERM, crawl subprocesses get at least this long to close before SIGKILL ...
CHILD_GRACE = 20.0
#: ... and at least the download timeout plus this: Scrapy's graceful stop lets the requests
#: in flight finish, and a crawl killed mid-run leaves its crawl_runs row "running".
CHILD_GRACE_MARGIN = 10.0
#: How long a start waits for the daemon lock before calling the database busy: a
#: ``litwatch status`` probing the lock holds it for a moment.
LOCK_PROBE_WAIT = 1.0
#: How often a standby daemon tries the lock.
STANDBY_POLL = 1.0
CRAWL_WORKERS = 4
#: How long a daemon that lost its lock tries to take it back (a PostgreSQL restart is
#: back within seconds) before it stops.
LOCK_REGAIN_WAIT = 30.0
#: The exit status of a daemon that lost its lock and stopped (EX_TEMPFAIL: try again;
#: systemd's Restart=on-failure and a container's --restart on-failure start it again).
EXIT_LOCK_LOST = 75


class DaemonBusy(Exception):
    """Another daemon already holds this database."""


class Daemon(Jobs):
    """The scheduler, its jobs and the one-daemon lock of one database."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        config_path: str | None,
        *,
        log_level: str | None = None,
        digest: CronTrigger | None = None,
    ) -> None:
        """``digest`` replaces the configured digest trigger (end-to-end tests only)."""
        self.settings = settings
        self.engine = engine
        self.config_path = config_path
        self.log_level = log_level
        self.stop = threading.Event()
        self.children = Children(self.stop)
        self.digest_lock = threading.Lock()  # one digest run at a time (regular or missed)
        self.meta_lock = threading.Lock()
        self.lock = NamedLock(engine, DAEMON_LOCK)
        self.scheduler: BackgroundScheduler | None = None
        self.started_at = utcnow()
        self.job_ids: list[str] = []
        self.results: dict[str, dict[str, Any]] = {}
        self.digest = digest or digest_trigger(settings.digest.cron, settings.digest.timezone)
        #: Extra services (the web pages) started once the lock is held, stopped with us.
        self.services: list[Callable[[], threading.Thread]] = []
        self.extra_threads: list[threading.Thread] = []
        #: Why the daemon stopped on its own (None: asked to stop), and its exit status.
        self.exit_reason: str | None = None
        self.exit_code = 0

    # ---- lifecycle -------------------------------------------------------------------------

    def install_signals(self) -> None:
        """SIGTERM and SIGINT ask the daemon to stop (the main loop does the stopping)."""

        def handler(signum: int, _frame: FrameType | None) -> None:
            log.info("event=daemon.signal signal=%s", signal.Signals(signum).name)
            self.stop.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def acquire(self, *, standby: bool) -> bool:
        """Take the one-daemon lock; with ``standby`` wait for it. False: stopped while waiting."""
        if self.lock.acquire(blocking=True, timeout=LOCK_PROBE_WAIT):
            return True
        if not standby:
            raise DaemonBusy(self._holder_message())
        log.info(
            "event=daemon.standby database=%s holder=%r",
            describe_url(self.engine),
            self._holder_message(),
        )
        while not self.stop.wait(STANDBY_POLL):
            if self.lock.acquire():
                log.info("event=daemon.takeover pid=%s", os.getpid())
                return True
        return False

    def _holder_message(self) -> str:
        info = meta_store.read_daemon_record(self.engine)
        # A record saying "not running" belongs to an earlier daemon, not to the holder.
        where = (
            f" (pid {info.get('pid')} on {info.get('host')}, since {info.get('started_at')})"
            if info.get("running")
            else ""
        )
        return f"another litwatch daemon is running against {describe_url(self.engine)}{where}"

    def run(self, *, standby: bool = False) -> int:
        """Run until SIGTERM/SIGINT (exit status 0) or a lost lock (:data:`EXIT_LOCK_LOST`,
        the reason in :attr:`exit_reason`)."""
        self.install_signals()
        if not self.acquire(standby=standby):
            return 0
        try:
            self.started_at = utcnow()
            self._start_scheduler()
            self.extra_threads = [start() for start in self.services]
            log.info(
                "event=daemon.started pid=%s host=%s database=%s",
                os.getpid(),
                socket.gethostname(),
                describe_url(self.engine),
            )
            self.heartbeat()
            beat = time.monotonic()
            while not self.stop.wait(CHECK_EVERY):
                self.check_lock()
                if not self.stop.is_set() and time.monotonic() - beat >= HEARTBEAT:
                    self.heartbeat()
                    beat = time.monotonic()
        finally:
            self._shutdown()
        return self.exit_code

    def _start_scheduler(self) -> None:
        sched = BackgroundScheduler(
            timezone="UTC",
            executors={
                "default": ThreadPoolExecutor(max_workers=CRAWL_WORKERS),
                "digest": ThreadPoolExecutor(max_workers=1),
            },
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 60},
        )
        now = utcnow()
        self._add_crawl_jobs(sched, now)
        self.job_ids += self.add_upkeep_jobs(sched, now)
        self._add_digest_jobs(sched, now)
        sched.add_listener(
            self._on_job,
            EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES,
        )
        # APScheduler's own lines are free text; its events are logged here as key=value.
        logging.getLogger("apscheduler").setLevel(logging.ERROR)
        logging.getLogger("apscheduler.executors").setLevel(logging.CRITICAL)
        sched.start()
        self.scheduler = sched
        for job in sched.get_jobs():
            log.info("event=job.planned job=%s next_run=%s", job.id, utc_iso(job.next_run_time))

    def _add_crawl_jobs(self, sched: BackgroundScheduler, now: datetime) -> None:
        states = polls.last_successes(self.engine)
        jitter = self.settings.daemon.jitter
        for src in self.settings.sources:
            if not src.enabled:
                continue
            job_id = crawl_lock(src.id)
            sched.add_job(
                self.crawl_job,
                crawl_trigger(src.interval, jitter),
                args=[src],
                id=job_id,
                name=f"crawl {src.id}",
                next_run_time=first_crawl(now, states.get(src.id), src.interval, jitter),
                # A run delayed past half its interval is dropped: the next one comes soon.
                misfire_grace_time=int(max(src.interval.total_seconds() / 2, 1)),
            )
            self.job_ids.append(job_id)

    def _add_digest_jobs(self, sched: BackgroundScheduler, now: datetime) -> None:
        grace = self.settings.digest.misfire_grace
        # coalesce (job default): a daemon suspended over several fire times sends once.
        sched.add_job(
            self.digest_job,
            self.digest,
            id=DIGEST_JOB,
            name="digest",
            executor="digest",
            misfire_grace_time=int(grace.total_seconds()),
        )
        self.job_ids.append(DIGEST_JOB)
        # Deferred deliveries (a 4xx, a dropped connection) go out after their backoff, not
        # at next week's digest run.
        sched.add_job(
            self.retry_job,
            IntervalTrigger(seconds=RETRY_EVERY.total_seconds()),
            id=RETRY_JOB,
            name="digest retries",
            executor="digest",
        )
        self.job_ids.append(RETRY_JOB)
        missed = missed_digest(self.digest, now, meta_store.digest_done(self.engine), grace)
        if missed is None:
            return
        log.info("event=digest.missed scheduled=%s", utc_iso(missed))
        # The grace applies here too: APScheduler's default (1 s) could drop this run when
        # the scheduler thread starts a moment late.
        sched.add_job(
            self.digest_job,
            id=MISSED_JOB,
            name="digest (missed)",
            executor="digest",
            next_run_time=now,
            misfire_grace_time=int(grace.total_seconds()),
        )

    def _shutdown(self) -> None:
        log.info("event=daemon.stopping")
        self.stop.set()
        try:
            if self.scheduler is not None:
                self.scheduler.pause()  # no new runs from here on
            self.children.stop_all(self.child_grace())
            for thread in self.extra_threads:
                thread.join(timeout=10)
            if self.scheduler is not None:
                # Running jobs see ``stop`` (the digest stops between messages; crawl jobs
                # return once their subprocess is gone), so this wait is short.
                self.scheduler.shutdown(wait=True)
            self.write_meta(running=False)
        except Exception as exc:  # the database may be gone (the reason we stop): one line
            log.warning("event=daemon.stop_record_failed error=%r", first_line(exc))
        finally:
            self.lock.release()
        log.info("event=daemon.stopped")

    def child_grace(self) -> float:
        """Seconds a crawl subprocess gets between SIGTERM and SIGKILL."""
        return max(CHILD_GRACE, self.settings.crawl.timeout.total_seconds() + CHILD_GRACE_MARGIN)

    def _jobs(self, running: bool) -> list[dict[str, Any]]:
        next_runs: dict[str, datetime | None] = {}
        if running and self.scheduler is not None and self.scheduler.running:
            next_runs = {job.id: job.next_run_time for job in self.scheduler.get_jobs()}
        with self.meta_lock:
            results = {k: dict(v) for k, v in self.results.items()}
        return [
            {"id": job_id, "next_run": utc_iso(next_runs.get(job_id)), **results.get(job_id, {})}
            for job_id in self.job_ids
        ]

    def meta(self, *, running: bool = True) -> dict[str, Any]:
        """The daemon record ``litwatch status`` shows (times in UTC, ISO 8601)."""
        info: dict[str, Any] = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": self.started_at.isoformat(),
            "heartbeat": utcnow().isoformat(),
            "running": running,
            "jobs": self._jobs(running),
        }
        if not running:
            info["stopped_at"] = info["heartbeat"]
        return info

    def write_meta(self, *, running: bool) -> None:
        """Store the daemon record (serialised: jobs finish on several threads)."""
        info = self.meta(running=running)
        with self.meta_lock:
            meta_store.write_daemon_record(self.engine, info)

    def heartbeat(self) -> None:
        """Refresh the daemon record; a failure is logged, never fatal."""
        try:
            self.write_meta(running=True)
            log.debug("event=daemon.heartbeat")
        except Exception as exc:  # a locked or unreachable database must not kill the daemon
            log.warning("event=daemon.heartbeat_failed error=%r", first_line(exc))

    def check_lock(self) -> None:
        """Make sure the one-daemon lock is still ours (main loop only).

        Two schedulers must never run against one database, and a PostgreSQL advisory lock
        dies silently with its connection (a server restart, a network cut). A lost lock is
        taken back at once when the database answers and nobody else took it: no job starts
        meanwhile (the scheduler is paused). Otherwise the daemon stops with
        :data:`EXIT_LOCK_LOST` and one line saying why, for systemd or the container engine
        to start it again.
        """
        if not self.lock.held or self.lock.alive():
            return
        log.error("event=daemon.lock_lost action=regaining wait=%.0fs", LOCK_REGAIN_WAIT)
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.pause()
        outcome = self.lock.regain(LOCK_REGAIN_WAIT, self.stop)
        if outcome == "regained":
            log.warning("event=daemon.lock_regained")
            if self.scheduler is not None and self.scheduler.running and not self.stop.is_set():
                self.scheduler.resume()
            return
        if outcome != "stopped":
            self.exit_reason = "lost the daemon lock (database connection lost) and " + (
                "another daemon holds it now"
                if outcome == "taken"
                else f"the database did not answer for {LOCK_REGAIN_WAIT:.0f}s"
            )
            self.exit_code = EXIT_LOCK_LOST
            log.error("event=daemon.lock_lost action=stopping outcome=%s", outcome)
        self.stop.set()


def first_line(exc: BaseException) -> str:
    """The first line of a database error (the driver's, without SQLAlchemy's SQL and links)."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
