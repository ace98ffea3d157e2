"""The daemon's parts in process: the one-daemon lock, the digest job and its done mark, crawl
subprocesses (timeout, stop), the daemon record and what ``litwatch status`` makes of it.

The whole daemon as a subprocess is in tests/test_daemon_e2e.py. Crawl children here are tiny
Python scripts standing in for ``litwatch crawl`` (the command is swapped with monkeypatch):
what is tested is how the daemon runs, times out and stops them.
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
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, JobExecutionEvent
from sqlalchemy import Engine, select, update
from sqlalchemy.engine import make_url

import crawler.daemon.jobs as jobs_module
import crawler.daemon.scheduler as daemon_module
from crawler.daemon.children import crawl_command
from crawler.daemon.scheduler import Daemon, DaemonBusy
from crawler.db.engine import make_engine, transaction
from crawler.db.meta import (
    DIGEST_DONE_KEY,
    mark_digest_done,
    read_daemon_record,
    write_daemon_record,
)
from crawler.db.models import CrawlRun, Delivery, Meta, SourceState
from crawler.db.status import daemon_info
from crawler.locks import DAEMON_LOCK, NamedLock, daemon_running
from crawler.schedule import digest_trigger, latest_fire
from crawler.settings import Settings, load_settings
from digests import subscribers
from tests.support import REPO_ROOT
from tests.support.db import migrated_engine
from tests.support.smtpserver import LocalSMTPServer
from tests.support.tcpproxy import TcpProxy

CONFIG = """
[database]
url = "{url}"

[digest]
cron = "{cron}"
send_empty = true

[email]
backend = "{backend}"
outbox_dir = "{outbox}"

[daemon]
crawl_timeout = "{timeout}"

[[sources]]
id = "alpha"
kind = "feed"
url = "http://127.0.0.1:9/alpha.xml"
interval = "6h"

[[sources]]
id = "beta"
kind = "feed"
url = "http://127.0.0.1:9/beta.xml"
enabled = false
"""


def make_settings(
    tmp_path: Path,
    url: str,
    *,
    cron: str = "0 7 * * *",
    timeout: str = "30m",
    backend: str = "file",
    extra: str = "",
) -> Settings:
    path = tmp_path / "litwatch.toml"
    text = CONFIG.format(
        url=url, cron=cron, outbox=tmp_path / "outbox", timeout=timeout, backend=backend
    )
    path.write_text(text + extra, encoding="utf-8")
    return load_settings(path, environ={})


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return make_settings(tmp_path, db_url)


@pytest.fixture
def daemon(settings: Settings, engine: Engine) -> Iterator[Daemon]:
    d = Daemon(settings, engine, None)
    yield d
    if d.scheduler is not None and d.scheduler.running:
        d.scheduler.shutdown(wait=True)
    d.lock.release()


def add_subscriber(settings: Settings, engine: Engine, email: str) -> None:
    with transaction(engine) as session:
        subscribers.add(session, email, known_topics=list(settings.topics))


def outbox_messages(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "outbox").glob("*.eml"))


# --- One daemon per database ---------------------------------------------------------------------


def test_second_daemon_is_refused_and_told_who_holds_the_database(
    daemon: Daemon, settings: Settings, engine: Engine
) -> None:
    assert daemon.acquire(standby=False)
    daemon.write_meta(running=True)
    second = Daemon(settings, engine, None)
    with pytest.raises(DaemonBusy) as info:
        second.acquire(standby=False)
    message = str(info.value)
    assert message.startswith("another litwatch daemon is running against ")
    assert f"pid {os.getpid()} on {socket.gethostname()}" in message
    assert daemon_running(engine)


def test_refusal_does_not_quote_a_stopped_daemons_record(
    daemon: Daemon, settings: Settings, engine: Engine
) -> None:
    write_daemon_record(engine, {"pid": 99999, "host": "old", "running": False})
    holder = NamedLock(engine, DAEMON_LOCK)
    assert holder.acquire()
    try:
        with pytest.raises(DaemonBusy) as info:
            daemon.acquire(standby=False)
        assert "99999" not in str(info.value)
    finally:
        holder.release()


def test_start_waits_out_a_status_probe(daemon: Daemon, engine: Engine) -> None:
    # ``litwatch status`` takes the lock for a moment to see whether a daemon runs.
    probe = NamedLock(engine, DAEMON_LOCK)
    assert probe.acquire()
    threading.Timer(0.3, probe.release).start()
    assert daemon.acquire(standby=False)


def test_standby_takes_over_when_the_holder_lets_go(
    daemon: Daemon, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(daemon_module, "STANDBY_POLL", 0.05)
    holder = NamedLock(engine, DAEMON_LOCK)
    assert holder.acquire()
    got: list[bool] = []
    waiter = threading.Thread(target=lambda: got.append(daemon.acquire(standby=True)))
    waiter.start()
    time.sleep(1.5)  # longer than the start-up probe wait: now in standby
    assert got == [] and waiter.is_alive()
    holder.release()
    waiter.join(timeout=5)
    assert got == [True] and daemon.lock.held


def test_standby_stopped_while_waiting_returns_false(
    daemon: Daemon, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(daemon_module, "STANDBY_POLL", 0.05)
    holder = NamedLock(engine, DAEMON_LOCK)
    assert holder.acquire()
    try:
        threading.Timer(1.2, daemon.stop.set).start()
        assert daemon.acquire(standby=True) is False
        assert not daemon.lock.held
    finally:
        holder.release()


# --- The digest job ------------------------------------------------------------------------------


def digest_done(engine: Engine) -> datetime | None:
    with transaction(engine) as session:
        row = session.get(Meta, DIGEST_DONE_KEY)
        return datetime.fromisoformat(row.value) if row else None


def test_digest_job_sends_once_and_marks_its_fire_time_done(
    daemon: Daemon, settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    add_subscriber(settings, engine, "ada@example.org")
    add_subscriber(settings, engine, "bob@example.org")
    now = datetime.now(UTC)
    expected = latest_fire(digest_trigger("0 7 * * *", "UTC"), now - timedelta(days=1), now)

    assert daemon.digest_job() == "sent 2, pending 0, failed 0"
    assert digest_done(engine) == expected
    assert len(outbox_messages(tmp_path)) == 2
    # The same period again (a restart, a coalesced fire): nothing more goes out.
    assert daemon.digest_job() == "sent 0, pending 0, failed 0"
    assert len(outbox_messages(tmp_path)) == 2


def test_retry_job_finishes_a_digest_run_the_server_cut_short(
    tmp_path: Path, db_url: str, engine: Engine, smtp_server: LocalSMTPServer
) -> None:
    with socket.socket() as probe:  # a port nobody listens on: the server is down
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    smtp = '\n[email.smtp]\nhost = "127.0.0.1"\nstarttls = false\nport = {}\n'
    down = make_settings(tmp_path, db_url, backend="smtp", extra=smtp.format(closed_port))
    emails = [f"reader{i}@example.org" for i in range(3)]
    for email in emails:
        add_subscriber(down, engine, email)
    now = datetime.now(UTC)
    expected = latest_fire(digest_trigger("0 7 * * *", "UTC"), now - timedelta(days=1), now)

    first = Daemon(down, engine, None)
    assert "cannot connect" in first.digest_job()
    assert digest_done(engine) is None  # not done: the run stopped at its first message

    # The server is back: the next retry tick runs the digest again (not only the
    # deliveries already planned). The one tried before waits out its backoff.
    up = make_settings(tmp_path, db_url, backend="smtp", extra=smtp.format(smtp_server.port))
    later = Daemon(up, engine, None)
    assert later.retry_job() == "sent 2, pending 1, failed 0"
    assert digest_done(engine) == expected
    with transaction(engine) as session:  # its backoff has passed
        session.execute(update(Delivery).values(next_attempt_at=now - timedelta(minutes=1)))
    assert later.retry_job() == "sent 1, pending 0, failed 0"
    assert Counter(r for m in smtp_server.messages for r in m.rcpt_tos) == Counter(emails)
    assert later.retry_job() == "sent 0, pending 0, failed 0"
    assert len(smtp_server.messages) == 3


def test_stopping_daemon_neither_sends_nor_marks_done(
    daemon: Daemon, settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    add_subscriber(settings, engine, "ada@example.org")
    daemon.stop.set()
    assert daemon.digest_job() == "skipped (stopping)"
    assert digest_done(engine) is None
    assert outbox_messages(tmp_path) == []


def test_done_mark_never_moves_back(daemon: Daemon, engine: Engine) -> None:
    later = datetime(2026, 3, 30, 5, tzinfo=UTC)
    mark_digest_done(engine, later)
    mark_digest_done(engine, later - timedelta(days=7))
    assert digest_done(engine) == later


# --- Crawl subprocesses --------------------------------------------------------------------------


def fake_crawl(monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    command = [sys.executable, "-c", script]
    monkeypatch.setattr(jobs_module, "crawl_command", lambda *args: command)


def test_crawl_command_is_litwatch_crawl_marked_as_daemon() -> None:
    cmd = crawl_command("/etc/litwatch/litwatch.toml", "alpha", "debug")
    assert cmd[:3] == [sys.executable, "-m", "crawler.cli"]
    assert cmd[3:] == [
        "--config",
        "/etc/litwatch/litwatch.toml",
        "--log-level",
        "debug",
        "crawl",
        "alpha",
        "--trigger",
        "daemon",
        "--no-progress",
    ]
    assert "--config" not in crawl_command(None, "alpha")


@pytest.mark.parametrize(
    ("code", "result"), [(0, "ok"), (1, "failed (see litwatch status)"), (7, "exit 7")]
)
def test_crawl_result_follows_the_exit_status(
    daemon: Daemon, settings: Settings, monkeypatch: pytest.MonkeyPatch, code: int, result: str
) -> None:
    fake_crawl(monkeypatch, f"raise SystemExit({code})")
    assert daemon.crawl_job(settings.sources[0]) == result
    assert daemon.children.running() == set()


def test_children_get_longer_than_the_download_timeout_to_stop(settings: Settings) -> None:
    daemon = Daemon(settings, _engine_for(settings.database.url), None)
    assert settings.crawl.timeout == timedelta(seconds=30)
    assert daemon.child_grace() == 40.0
    daemon.engine.dispose()


def test_crawl_past_its_timeout_is_stopped(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path, sqlite_url, timeout="1s")
    fake_crawl(monkeypatch, "import time; time.sleep(60)")
    daemon = Daemon(settings, _engine_for(sqlite_url), None)
    started = time.monotonic()
    assert daemon.crawl_job(settings.sources[0]) == "timed out after 1s"
    assert time.monotonic() - started < 10
    daemon.engine.dispose()


def _engine_for(url: str) -> Engine:
    return migrated_engine(url)


def test_shutdown_stops_a_running_crawl_and_kills_one_that_ignores_sigterm(
    daemon: Daemon, settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(daemon_module, "CHILD_GRACE", 0.5)
    monkeypatch.setattr(daemon_module, "CHILD_GRACE_MARGIN", -29.5)  # 30 s download timeout
    marker = tmp_path / "child-ready"
    fake_crawl(
        monkeypatch,
        "import pathlib, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"pathlib.Path({str(marker)!r}).touch()\n"
        "time.sleep(60)\n",
    )
    results: list[str] = []
    job = threading.Thread(target=lambda: results.append(daemon.crawl_job(settings.sources[0])))
    job.start()
    _wait_for(marker.exists)
    [child] = list(daemon.children.running())
    daemon.stop.set()
    assert daemon.child_grace() == 0.5
    daemon.children.stop_all(daemon.child_grace())
    job.join(timeout=5)
    assert child.returncode == -signal.SIGKILL
    assert results == ["exit -9"]
    # Once stopping, no new crawl starts.
    assert daemon.crawl_job(settings.sources[0]) == "skipped (stopping)"


def _wait_for(condition: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_crawl_child_has_its_own_process_group(
    daemon: Daemon, settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A terminal's Ctrl-C goes to the foreground group; the daemon forwards one SIGTERM.
    out = tmp_path / "pgid"
    fake_crawl(
        monkeypatch,
        f"import os, pathlib; pathlib.Path({str(out)!r}).write_text(str(os.getpgid(0)))",
    )
    assert daemon.crawl_job(settings.sources[0]) == "ok"
    assert int(out.read_text()) != os.getpgid(0)


# --- The daemon record and status ----------------------------------------------------------------


def test_scheduler_plans_every_enabled_source_and_the_digest(
    daemon: Daemon, engine: Engine
) -> None:
    polled = datetime.now(UTC) - timedelta(hours=1)
    with transaction(engine) as session:
        session.add(
            SourceState(
                id="alpha",
                kind="feed",
                last_success=polled,
                consecutive_failures=0,
                runs=1,
                items_seen=0,
                items_new=0,
                items_skipped=0,
            )
        )
    mark_digest_done(engine, datetime.now(UTC))  # nothing missed: no digest runs now
    assert daemon.acquire(standby=False)
    daemon._start_scheduler()
    daemon.write_meta(running=True)

    with transaction(engine) as session:
        info = daemon_info(session, daemon_running(engine))
    assert info["state"] == "running" and info["running"] is True
    assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
    jobs = {job["id"]: job for job in info["jobs"]}
    assert set(jobs) == {
        "crawl:alpha",
        "digest",
        "digest-retries",
        "lifecycle-watch",
    }  # beta is disabled
    # alpha succeeded an hour ago: its first run waits for the rest of its 6 h interval.
    assert jobs["crawl:alpha"]["next_run"] == polled + timedelta(hours=6)
    next_digest = jobs["digest"]["next_run"]
    assert next_digest.utcoffset() == timedelta(0)
    assert (next_digest.hour, next_digest.minute) == (7, 0)


def test_stopped_daemon_keeps_last_results_but_no_plans(daemon: Daemon, engine: Engine) -> None:
    mark_digest_done(engine, datetime.now(UTC))
    assert daemon.acquire(standby=False)
    daemon._start_scheduler()
    event = JobExecutionEvent(EVENT_JOB_ERROR, "crawl:alpha", "default", datetime.now(UTC))
    event.exception = RuntimeError("[boom]")
    daemon._on_job(event)
    daemon._shutdown()
    assert not daemon.lock.held

    with transaction(engine) as session:
        info = daemon_info(session, daemon_running(engine))
    assert info["state"] == "stopped" and info["running"] is False
    assert isinstance(info["stopped_at"], datetime)
    jobs = {job["id"]: job for job in info["jobs"]}
    assert jobs["crawl:alpha"]["last_result"] == "error: RuntimeError('[boom]')"
    assert all(job["next_run"] is None for job in jobs.values())


def test_record_of_a_killed_daemon_reads_as_died(engine: Engine) -> None:
    write_daemon_record(engine, {"pid": 4242, "host": "h", "running": True, "jobs": []})
    with transaction(engine) as session:
        assert daemon_info(session, daemon_running(engine))["state"] == "died"
    with transaction(engine) as session:
        session.delete(session.get(Meta, "daemon"))
    with transaction(engine) as session:
        assert daemon_info(session, False)["state"] == "never"
    assert read_daemon_record(engine) == {}


def test_missed_run_is_logged_as_one_key_value_line(
    daemon: Daemon, caplog: pytest.LogCaptureFixture
) -> None:
    scheduled = datetime(2026, 3, 30, 5, tzinfo=UTC)
    with caplog.at_level(logging.INFO, logger="litwatch.daemon"):
        daemon._on_job(JobExecutionEvent(EVENT_JOB_MISSED, "crawl:alpha", "default", scheduled))
    assert caplog.messages == [
        f"event=job.missed job=crawl:alpha scheduled={scheduled.isoformat()}"
    ]


def test_daemon_record_is_json(daemon: Daemon) -> None:
    record = json.loads(json.dumps(daemon.meta()))
    assert record["running"] is True and record["jobs"] == []


def test_run_left_open_by_a_child_ended_by_sigterm_is_closed(
    daemon: Daemon,
    settings: Settings,
    engine: Engine,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # The child opens its run, as ``litwatch crawl`` does, then dies of SIGTERM before it
    # could close it (the window before Scrapy installs its signal handlers).
    marker = tmp_path / "run-open"
    fake_crawl(
        monkeypatch,
        "import os, pathlib, time\n"
        "from datetime import UTC, datetime\n"
        "from crawler.db.engine import make_engine, transaction\n"
        "from crawler.db.models import CrawlRun\n"
        f"engine = make_engine({db_url!r})\n"
        "with transaction(engine) as s:\n"
        "    s.add(CrawlRun(source_id='alpha', started_at=datetime.now(UTC), status='running',\n"
        "                   trigger='daemon', pid=os.getpid()))\n"
        f"pathlib.Path({str(marker)!r}).touch()\n"
        "time.sleep(60)\n",
    )
    results: list[str] = []
    job = threading.Thread(target=lambda: results.append(daemon.crawl_job(settings.sources[0])))
    job.start()
    _wait_for(marker.exists, timeout=30)
    daemon.stop.set()
    daemon.children.stop_all(daemon.child_grace())
    job.join(timeout=10)
    assert results == ["exit -15"]
    with engine.connect() as conn:
        [row] = conn.execute(select(CrawlRun.status, CrawlRun.error, CrawlRun.finished_at)).all()
    assert row.status == "failed" and row.error == "interrupted (exit -15)"
    assert row.finished_at is not None


# --- A lost database connection (issue 12, A10) ---------------------------------------------------


@pytest.fixture
def proxied(pg_url: str) -> Iterator[tuple[TcpProxy, str]]:
    """A PostgreSQL URL through a local TCP proxy whose connections the test can cut."""
    migrated_engine(pg_url).dispose()
    target = make_url(pg_url)
    with TcpProxy((target.host or "127.0.0.1", target.port or 5432)) as proxy:
        yield proxy, proxy.url_for(pg_url)


@pytest.fixture
def cut_daemon(tmp_path: Path, proxied: tuple[TcpProxy, str]) -> Iterator[Daemon]:
    """A daemon holding its lock over the proxy."""
    _proxy, url = proxied
    engine = make_engine(url)
    d = Daemon(make_settings(tmp_path, url), engine, None)
    assert d.acquire(standby=False)
    yield d
    d.lock.release()
    engine.dispose()


def test_daemon_takes_its_lock_back_after_the_connection_is_cut(
    cut_daemon: Daemon, proxied: tuple[TcpProxy, str], pg_url: str
) -> None:
    proxy, _url = proxied
    assert proxy.sever() >= 1  # as a PostgreSQL restart does
    cut_daemon.check_lock()
    assert not cut_daemon.stop.is_set() and cut_daemon.exit_code == 0
    assert cut_daemon.lock.alive()
    direct = make_engine(pg_url)
    try:
        assert not NamedLock(direct, DAEMON_LOCK).acquire()  # ours again, nobody else's
    finally:
        direct.dispose()


def test_daemon_stops_when_another_took_its_lock(
    cut_daemon: Daemon, proxied: tuple[TcpProxy, str], pg_url: str
) -> None:
    proxy, _url = proxied
    proxy.sever()
    direct = make_engine(pg_url)
    other = NamedLock(direct, DAEMON_LOCK)
    try:
        # The server frees the lock once it notices the dead session (at once, on a reset).
        assert other.acquire(blocking=True, timeout=10)
        cut_daemon.check_lock()
        assert cut_daemon.stop.is_set() and cut_daemon.exit_code == daemon_module.EXIT_LOCK_LOST
        assert cut_daemon.exit_reason is not None
        assert "another daemon holds it" in cut_daemon.exit_reason
    finally:
        other.release()
        direct.dispose()


def test_daemon_stops_when_the_database_stays_away(
    cut_daemon: Daemon, proxied: tuple[TcpProxy, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(daemon_module, "LOCK_REGAIN_WAIT", 1.5)
    proxy, _url = proxied
    proxy.refuse()
    proxy.sever()
    started = time.monotonic()
    cut_daemon.check_lock()
    assert 1.5 <= time.monotonic() - started < 10
    assert cut_daemon.exit_code == daemon_module.EXIT_LOCK_LOST and cut_daemon.stop.is_set()
    assert cut_daemon.exit_reason is not None and "did not answer for" in cut_daemon.exit_reason
    cut_daemon.lock.release()  # a dead connection: never raises


# --- Crawl children die with the daemon (issue 12, A11) -------------------------------------------

# A stand-in daemon: a worker thread (as APScheduler's) starts a crawl child through Children
# and waits for it; the pids are printed for the test, which then SIGKILLs this process.
ORPHAN_PARENT = """
import subprocess, sys, threading
from crawler.daemon.children import Children
children = Children(threading.Event())
def job():
    proc = children.spawn([sys.executable, "-c", "import time; time.sleep(300)"])
    print(proc.pid, flush=True)
    proc.wait()
threading.Thread(target=job).start()
"""


def _gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie waiting for its new parent counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_crawl_child_dies_with_a_sigkilled_daemon(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_PARENT],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert not _gone(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        _wait_for(lambda: _gone(child), timeout=5)
    finally:
        if parent.poll() is None:
            parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()


class _Planner:
    """Collects what the daemon asks the scheduler to plan."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, object]] = {}

    def add_job(self, func: object, trigger: object = None, **kwargs: object) -> None:
        self.jobs[str(kwargs["id"])] = kwargs


def test_watch_runs_one_interval_after_the_last_one_and_bounces_only_with_a_mailbox(
    daemon: Daemon, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crawler.db import WATCH_KEY, meta

    now = datetime(2026, 12, 2, 12, tzinfo=UTC)
    planner = _Planner()
    assert daemon.add_upkeep_jobs(planner, now) == ["lifecycle-watch"]
    first = planner.jobs["lifecycle-watch"]
    assert first["args"] == ["lifecycle-watch", ["watch"]]
    wait = first["next_run_time"] - now  # type: ignore[operator]
    assert timedelta(days=7) <= wait <= timedelta(days=7) + daemon.settings.daemon.jitter
    meta.write(engine, WATCH_KEY, json.dumps({"finished_at": "2026-11-20T12:00:00+00:00"}))
    planner = _Planner()
    daemon.add_upkeep_jobs(planner, now)
    assert planner.jobs["lifecycle-watch"]["next_run_time"] <= now + daemon.settings.daemon.jitter  # type: ignore[operator]
    bounces = daemon.settings.email.bounces.model_copy(update={"maildir": "/srv/bounces"})
    email = daemon.settings.email.model_copy(update={"bounces": bounces})
    monkeypatch.setattr(daemon, "settings", daemon.settings.model_copy(update={"email": email}))
    planner = _Planner()
    assert daemon.add_upkeep_jobs(planner, now) == ["lifecycle-watch", "bounces"]
    assert planner.jobs["bounces"]["args"] == ["bounces", ["bounces", "process"]]
