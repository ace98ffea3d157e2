"""``litwatch run``: one long-lived process that keeps crawls and digests on schedule.

- APScheduler 3 (background scheduler, in-memory jobs built from the configuration at start).
  Crawls run as ``litwatch crawl ID`` subprocesses with a timeout (Scrapy's reactor cannot
  restart inside one process); the digest runs in-process on its cron, in its time zone.
- One daemon per database (crawler.locks: an advisory lock on PostgreSQL, a lock file next to
  a SQLite database); ``--standby`` waits and takes over when the holder dies.
- Restarts: a source polled within its interval is not polled again at once; a digest whose
  time passed while the daemon was down is sent once on return, within ``misfire_grace``.
- SIGTERM / SIGINT: stop scheduling, let the digest stop between two messages, ask crawl
  subprocesses to stop (Scrapy closes gracefully on SIGTERM), exit 0 within a bounded time.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from datetime import datetime, timedelta
from types import FrameType
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine

from crawler.daemon_lock import DAEMON_LOCK
from crawler.db.engine import describe_url, transaction
from crawler.db.models import Meta, SourceState, utcnow
from crawler.locks import NamedLock
from crawler.schedule import crawl_trigger, digest_trigger, fire_times, first_crawl, missed_digest
from crawler.settings import Settings, SourceSettings
from crawler.status import DAEMON_META_KEY

log = logging.getLogger("litwatch.daemon")

DIGEST_DONE_KEY = "digest.last_fire"
HEARTBEAT = 15.0
#: After SIGTERM, crawl subprocesses get this long to close before SIGKILL.
CHILD_GRACE = 20.0


class DaemonBusy(Exception):
    """Another daemon already holds this database."""


def crawl_command(config_path: str | None, source_id: str) -> list[str]:
    cmd = [sys.executable, "-m", "crawler.cli"]
    if config_path:
        cmd += ["--config", config_path]
    return [*cmd, "crawl", source_id, "--trigger", "daemon", "--no-progress"]


class Daemon:
    def __init__(self, settings: Settings, engine: Engine, config_path: str | None) -> None:
        self.settings = settings
        self.engine = engine
        self.config_path = config_path
        self.stop = threading.Event()
        self.children: set[subprocess.Popen[bytes]] = set()
        self.children_lock = threading.Lock()
        self.lock = NamedLock(engine, DAEMON_LOCK)
        self.scheduler: BackgroundScheduler | None = None
        self.started_at = utcnow()
        self.results: dict[str, dict[str, Any]] = {}
        self.digest = digest_trigger(settings.digest.cron, settings.digest.timezone)
        self.extra_threads: list[threading.Thread] = []

    # ---- lifecycle -------------------------------------------------------------------------

    def install_signals(self) -> None:
        def handler(signum: int, _frame: FrameType | None) -> None:
            log.info("event=daemon.signal signal=%s", signal.Signals(signum).name)
            self.stop.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def acquire(self, *, standby: bool) -> bool:
        """Take the one-daemon lock; with ``standby`` wait for it. False: stopped while waiting."""
        if self.lock.acquire():
            return True
        if not standby:
            raise DaemonBusy(self._holder_message())
        log.info(
            "event=daemon.standby database=%s %s", describe_url(self.engine), self._holder_message()
        )
        while not self.stop.wait(1.0):
            if self.lock.acquire():
                log.info("event=daemon.takeover")
                return True
        return False

    def _holder_message(self) -> str:
        info = read_daemon_meta(self.engine)
        where = (
            f" (pid {info.get('pid')} on {info.get('host')}, since {info.get('started_at')})"
            if info
            else ""
        )
        return f"another litwatch daemon is running against {describe_url(self.engine)}{where}"

    def run(self, *, standby: bool = False) -> int:
        self.install_signals()
        if not self.acquire(standby=standby):
            return 0
        try:
            self.started_at = utcnow()
            self._start_scheduler()
            log.info(
                "event=daemon.started pid=%s database=%s", os.getpid(), describe_url(self.engine)
            )
            self.heartbeat()
            while not self.stop.wait(HEARTBEAT):
                self.heartbeat()
        finally:
            self._shutdown()
        return 0

    def _start_scheduler(self) -> None:
        sched = BackgroundScheduler(
            timezone="UTC",
            executors={"default": ThreadPoolExecutor(max_workers=4)},
            job_defaults={"coalesce": True, "max_instances": 1},
        )
        now = utcnow()
        states = self._source_states()
        jitter = self.settings.daemon.jitter
        for src in self.settings.sources:
            if not src.enabled:
                continue
            sched.add_job(
                self.crawl_job,
                crawl_trigger(src.interval, jitter),
                args=[src],
                id=f"crawl:{src.id}",
                name=f"crawl {src.id}",
                next_run_time=first_crawl(now, states.get(src.id), src.interval, jitter),
                misfire_grace_time=int(max(src.interval.total_seconds() / 2, 1)),
            )
        grace = self.settings.digest.misfire_grace
        sched.add_job(
            self.digest_job,
            self.digest,
            id="digest",
            name="digest",
            misfire_grace_time=int(grace.total_seconds()),
        )
        missed = missed_digest(self.digest, now, self._digest_done(), grace)
        if missed is not None:
            log.info("event=digest.missed scheduled=%s", missed.isoformat())
            sched.add_job(
                self.digest_job, id="digest:missed", name="digest (missed)", next_run_time=now
            )
        sched.add_listener(self._on_job, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
        sched.start()
        self.scheduler = sched

    def _shutdown(self) -> None:
        log.info("event=daemon.stopping")
        self.stop.set()
        if self.scheduler is not None:
            self.scheduler.pause()  # no new runs from here on
        self._stop_children()
        for thread in self.extra_threads:
            thread.join(timeout=10)
        if self.scheduler is not None:
            # Running jobs see ``stop`` (the digest stops between messages; crawl jobs return
            # once their subprocess is gone), so this wait is short.
            self.scheduler.shutdown(wait=True)
        write_daemon_meta(
            self.engine, {**self._meta(), "running": False, "stopped_at": utcnow().isoformat()}
        )
        self.lock.release()
        log.info("event=daemon.stopped")

    def _stop_children(self) -> None:
        with self.children_lock:
            children = list(self.children)
        for proc in children:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in children:
            try:
                proc.wait(timeout=CHILD_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # ---- jobs --------------------------------------------------------------------------------

    def crawl_job(self, source: SourceSettings) -> str:
        """Crawl one source in a subprocess; its own stats land in crawl_runs."""
        if self.stop.is_set():
            return "skipped (stopping)"
        cmd = crawl_command(self.config_path, source.id)
        timeout = self.settings.daemon.crawl_timeout.total_seconds()
        log.info("event=crawl.start source=%s", source.id)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=None)  # logs go to ours
        with self.children_lock:
            self.children.add(proc)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=CHILD_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            result = f"timed out after {int(timeout)}s"
        else:
            result = {0: "ok", 1: "failed (see litwatch status)", 2: "configuration error"}.get(
                code, f"exit {code}"
            )
        finally:
            with self.children_lock:
                self.children.discard(proc)
        log.info("event=crawl.done source=%s result=%r", source.id, result)
        return result

    def digest_job(self) -> str:
        """Send the digest as of its latest scheduled time (its cutoff)."""
        from digests.send import send_digests

        now = utcnow()
        grace = self.settings.digest.misfire_grace
        fired = fire_times(self.digest, now - grace - timedelta(seconds=1), now)
        cutoff = fired[-1] if fired else now
        report = send_digests(self.settings, self.engine, now=cutoff, should_stop=self.stop.is_set)
        complete = not self.stop.is_set() and report.fatal is None
        if complete:
            with transaction(self.engine) as session:
                row = session.get(Meta, DIGEST_DONE_KEY)
                if row is None:
                    session.add(Meta(key=DIGEST_DONE_KEY, value=cutoff.isoformat()))
                else:
                    row.value = cutoff.isoformat()
        result = f"sent {report.sent}, pending {report.pending}, failed {report.failed}"
        if report.fatal:
            result += f"; {report.fatal}"
        log.info("event=digest.done cutoff=%s result=%r", cutoff.isoformat(), result)
        return result

    def _on_job(self, event: JobExecutionEvent) -> None:
        job_id = "digest" if event.job_id == "digest:missed" else event.job_id
        result = f"error: {event.exception!r}" if event.exception else str(event.retval)
        self.results[job_id] = {"last_run": utcnow().isoformat(), "last_result": result}
        if event.exception:
            log.error("event=job.error job=%s error=%r", event.job_id, event.exception)
        self.heartbeat()

    # ---- state -------------------------------------------------------------------------------

    def _source_states(self) -> dict[str, datetime | None]:
        with transaction(self.engine) as session:
            return {s.id: s.last_success for s in session.query(SourceState)}

    def _digest_done(self) -> datetime | None:
        with transaction(self.engine) as session:
            row = session.get(Meta, DIGEST_DONE_KEY)
            return datetime.fromisoformat(row.value) if row else None

    def _meta(self) -> dict[str, Any]:
        jobs = []
        if self.scheduler is not None and self.scheduler.running:
            for job in self.scheduler.get_jobs():
                if job.id == "digest:missed":
                    continue
                jobs.append(
                    {
                        "id": job.id,
                        "next_run": job.next_run_time.isoformat() if job.next_run_time else None,
                        **self.results.get(job.id, {}),
                    }
                )
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": self.started_at.isoformat(),
            "heartbeat": utcnow().isoformat(),
            "running": True,
            "jobs": jobs,
        }

    def heartbeat(self) -> None:
        try:
            write_daemon_meta(self.engine, self._meta())
        except Exception as exc:  # a locked database must not kill the daemon
            log.warning("event=daemon.heartbeat_failed error=%r", str(exc))


def write_daemon_meta(engine: Engine, info: dict[str, Any]) -> None:
    with transaction(engine) as session:
        row = session.get(Meta, DAEMON_META_KEY)
        if row is None:
            session.add(Meta(key=DAEMON_META_KEY, value=json.dumps(info)))
        else:
            row.value = json.dumps(info)


def read_daemon_meta(engine: Engine) -> dict[str, Any]:
    with transaction(engine) as session:
        row = session.get(Meta, DAEMON_META_KEY)
        return json.loads(row.value) if row else {}
