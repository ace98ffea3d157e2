"""End to end: the real ``litwatch run`` as a subprocess against a local HTTP and SMTP server.

Schedules are seconds apart: sources poll every few seconds, and the digest runs on a
6-field cron given with the hidden test hook ``run --test-digest-cron`` (the configured
``[digest] cron`` stays a validated 5-field crontab). The database is read directly to see
what the daemon and its ``litwatch crawl`` children wrote.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.engine import make_url

from crawler.daemon.scheduler import EXIT_LOCK_LOST
from crawler.db.engine import make_engine, transaction
from crawler.db.models import CrawlRun, Delivery
from crawler.locks import DAEMON_LOCK, NamedLock
from digests import subscribers
from tests.support import REPO_ROOT
from tests.support.db import migrated_engine
from tests.support.httpserver import LocalHTTPServer
from tests.support.smtpserver import LocalSMTPServer
from tests.support.tcpproxy import TcpProxy

pytestmark = pytest.mark.slow

RSS = "application/rss+xml"
#: The daemon's shutdown bound here (crawls get the 15 s download timeout + 10 s) plus slack.
STOP_WITHIN = 40.0
#: One line per event: ts, level and logger first, then key=value fields.
LOG_LINE = re.compile(r"^ts=\S+Z level=(debug|info|warning|error) logger=\S+( \w[\w.]*=\S.*)+$")


def feed(tag: str, count: int = 2) -> bytes:
    """A small RSS 2.0 journal feed whose items carry a DOI and a fibromyalgia topic term."""
    items = "".join(
        f"<item><title>Fibromyalgia study {tag} {n}</title>"
        f"<link>https://doi.org/10.5555/daemon.{tag}.{n}</link>"
        f"<description>Central sensitisation in fibromyalgia patients ({tag} {n}).</description>"
        f"<guid isPermaLink='false'>{tag}-{n}</guid>"
        f"<pubDate>Mon, 02 Mar 2026 10:00:00 GMT</pubDate></item>"
        for n in range(1, count + 1)
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel>'
        f"<title>Journal {tag}</title><link>https://journal.example.org/</link>"
        f"<description>Test</description>{items}</channel></rss>"
    ).encode()


def write_config(
    tmp_path: Path,
    db_url: str,
    sources: list[dict[str, str]],
    *,
    smtp_port: int = 2525,
    digest: str = "",
    daemon: str = "",
) -> Path:
    source_text = "".join(
        "\n[[sources]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in src.items())
        for src in sources
    )
    text = f"""
{"sources = []" if not sources else ""}

[database]
url = {json.dumps(db_url)}

[crawl]
download_delay = 0
autothrottle = false
retries = 0
timeout = "15s"

[digest]
{digest}

[email]
backend = "smtp"
from = "litwatch <digest@example.org>"

[email.smtp]
host = "127.0.0.1"
port = {smtp_port}
starttls = false
timeout = "10s"

[daemon]
jitter = "0s"
{daemon}
{source_text}"""
    path = tmp_path / "litwatch.toml"
    path.write_text(text, encoding="utf-8")
    return path


def feed_source(source_id: str, url: str, interval: str) -> dict[str, str]:
    return {"id": source_id, "kind": "feed", "url": url, "interval": interval}


def midday_zone() -> str:
    """A zone where it is now far from midnight, so the digest period (the subscriber's local
    date) cannot change while a test runs."""
    zones = ["UTC", "Asia/Tokyo", "America/New_York", "Asia/Kolkata", "America/Los_Angeles"]
    now = datetime.now(UTC)

    def distance(zone: str) -> float:
        local = now.astimezone(ZoneInfo(zone))
        return abs(local.hour + local.minute / 60 - 12)

    return min(zones, key=distance)


def add_subscribers(db_url: str, *emails: str, tz: str = "UTC") -> None:
    engine = migrated_engine(db_url)
    try:
        with transaction(engine) as session:
            for email in emails:
                subscribers.add(
                    session, email, known_topics=["fibromyalgia", "autoimmunity"], timezone=tz
                )
    finally:
        engine.dispose()


# --- Running litwatch ----------------------------------------------------------------------------


def _env() -> dict[str, str]:
    # Nothing from the developer's environment may steer the daemon.
    return {k: v for k, v in os.environ.items() if not k.startswith("LITWATCH_")}


def _cli(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "crawler.cli", "--config", str(config), *args]


class Running:
    """A ``litwatch run`` subprocess with its stderr in a file (never a full pipe)."""

    def __init__(
        self, config: Path, log: Path, args: tuple[str, ...], root: tuple[str, ...]
    ) -> None:
        self.log_path = log
        with log.open("wb") as err:
            self.proc = subprocess.Popen(
                _cli(config, *root, "run", *args),
                cwd=REPO_ROOT,
                env=_env(),
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_for_log(self, needle: str, timeout: float = 30) -> None:
        wait_until(lambda: needle in self.log, timeout, f"{needle!r} in the log:\n{self.log}")

    def terminate(self) -> tuple[int, float]:
        """SIGTERM; return (exit status, seconds it took)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=STOP_WITHIN)
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def daemons() -> Iterator[Callable[..., Running]]:
    """Start daemons (``litwatch [ROOT...] run [ARGS...]``); kill what still runs at the end."""
    started: list[Running] = []

    def start(config: Path, log: Path, *args: str, root: tuple[str, ...] = ()) -> Running:
        started.append(Running(config, log, args, root))
        return started[-1]

    yield start
    for daemon in started:
        daemon.kill()


def litwatch(config: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _cli(config, *args),
        cwd=REPO_ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def status_json(config: Path) -> dict[str, Any]:
    result = litwatch(config, "status", "--json")
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture
def open_engine() -> Iterator[Callable[[str], Engine]]:
    engines: list[Engine] = []

    def opener(url: str) -> Engine:
        engines.append(migrated_engine(url))  # the schema exists before the daemon starts
        return engines[-1]

    yield opener
    for engine in engines:
        engine.dispose()


def runs(engine: Engine, source_id: str | None = None) -> list[Any]:
    stmt = select(CrawlRun).order_by(CrawlRun.id)
    if source_id is not None:
        stmt = stmt.where(CrawlRun.source_id == source_id)
    with engine.connect() as conn:
        return list(conn.execute(stmt).mappings())


def assert_log_is_key_value(text: str) -> None:
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "no log lines"
    bad = [line for line in lines if not LOG_LINE.match(line)]
    assert not bad, "lines not in key=value form:\n" + "\n".join(bad)


# --- The daemon's day: crawls, one digest, a refused twin, status, SIGTERM -----------------------


def test_daemon_crawls_sends_one_digest_per_subscriber_and_stops_cleanly(
    sqlite_url: str,
    tmp_path: Path,
    http_server: LocalHTTPServer,
    smtp_server: LocalSMTPServer,
    daemons: Callable[..., Running],
    open_engine: Callable[[str], Engine],
) -> None:
    http_server.add("/a.xml", feed("a"), content_type=RSS)
    http_server.add("/b.xml", feed("b"), content_type=RSS)
    sources = [
        feed_source("journal-a", http_server.url("/a.xml"), "4s"),
        feed_source("journal-b", http_server.url("/b.xml"), "4s"),
    ]
    config = write_config(tmp_path, sqlite_url, sources, smtp_port=smtp_server.port)
    zone = midday_zone()
    add_subscribers(sqlite_url, "ada@example.org", "bob@example.org", tz=zone)
    engine = open_engine(sqlite_url)

    daemon = daemons(config, tmp_path / "daemon.log", "--test-digest-cron", "*/2 * * * * *")

    def crawled_twice() -> bool:
        done = [r for r in runs(engine) if r["trigger"] == "daemon" and r["status"] == "ok"]
        return all(sum(r["source_id"] == s["id"] for r in done) >= 2 for s in sources)

    wait_until(crawled_twice, 90, "two daemon crawls of each source")
    smtp_server.wait_for(2, timeout=20)

    # A second daemon on the same database is refused, and says why.
    twin = litwatch(config, "run")
    assert twin.returncode == 1, twin.stderr
    assert "another litwatch daemon is running against sqlite:///" in twin.stderr
    assert f"pid {daemon.proc.pid}" in twin.stderr and "--standby" in twin.stderr

    # Status names the daemon, every job's next run and each one's last result.
    info = status_json(config)["daemon"]
    assert (info["running"], info["state"], info["pid"]) == (True, "running", daemon.proc.pid)
    jobs = {job["id"]: job for job in info["jobs"]}
    assert set(jobs) == {
        "crawl:journal-a",
        "crawl:journal-b",
        "digest",
        "digest-retries",
        "lifecycle-watch",
    }
    for job in jobs.values():
        assert datetime.fromisoformat(job["next_run"]).tzinfo is not None
    assert jobs["crawl:journal-a"]["last_result"] == "ok"
    assert jobs["digest"]["last_result"].startswith("sent ")
    text = litwatch(config, "status").stdout
    assert "Daemon: running since" in text and f"pid {daemon.proc.pid}" in text

    # More digest fire times pass (every 2 s): still one message per subscriber this period.
    fired = daemon.log.count("event=digest.done")
    wait_until(lambda: daemon.log.count("event=digest.done") >= fired + 2, 20, "two more digests")
    received = smtp_server.messages
    assert sorted(m.rcpt_tos for m in received) == [("ada@example.org",), ("bob@example.org",)]
    assert len({m.message["Message-ID"] for m in received}) == 2
    with transaction(engine) as session:
        deliveries = session.scalars(select(Delivery)).all()
        assert [d.state for d in deliveries] == ["sent", "sent"]
        assert all(d.paper_count > 0 for d in deliveries)  # sent after the crawls stored papers

    code, seconds = daemon.terminate()
    assert code == 0, daemon.log
    assert seconds < STOP_WITHIN
    assert not [r for r in runs(engine) if r["status"] == "running"]
    after = status_json(config)["daemon"]
    assert (after["running"], after["state"]) == (False, "stopped")
    assert "event=daemon.stopped" in daemon.log and "Traceback" not in daemon.log
    assert_log_is_key_value(daemon.log)


# --- One daemon per database; standby ------------------------------------------------------------


def test_second_daemon_refused_and_standby_takes_over_after_sigkill(
    db_url: str, tmp_path: Path, daemons: Callable[..., Running]
) -> None:
    config = write_config(tmp_path, db_url, [])
    first = daemons(config, tmp_path / "first.log")
    first.wait_for_log("event=daemon.started")

    refused = litwatch(config, "run")
    assert refused.returncode == 1
    [line] = refused.stderr.strip().splitlines()
    backend = db_url.split(":", 1)[0].split("+")[0]
    assert line.startswith(f"litwatch: another litwatch daemon is running against {backend}")
    assert f"pid {first.proc.pid}" in line

    standby = daemons(config, tmp_path / "standby.log", "--standby")
    standby.wait_for_log("event=daemon.standby")
    assert "event=daemon.started" not in standby.log
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()
    standby.wait_for_log("event=daemon.takeover", timeout=15)
    standby.wait_for_log("event=daemon.started")

    info = status_json(config)["daemon"]
    assert (info["running"], info["pid"]) == (True, standby.proc.pid)
    code, _ = standby.terminate()
    assert code == 0, standby.log


# --- An operator crawl during a daemon crawl -----------------------------------------------------


def test_operator_crawl_of_a_source_the_daemon_is_crawling_is_busy(
    sqlite_url: str,
    tmp_path: Path,
    http_server: LocalHTTPServer,
    daemons: Callable[..., Running],
    open_engine: Callable[[str], Engine],
) -> None:
    http_server.add("/slow.xml", feed("slow"), content_type=RSS, delay=12)
    sources = [feed_source("slow", http_server.url("/slow.xml"), "1h")]
    config = write_config(tmp_path, sqlite_url, sources)
    engine = open_engine(sqlite_url)
    daemon = daemons(config, tmp_path / "daemon.log")

    def daemon_crawling() -> bool:
        return any(r["status"] == "running" for r in runs(engine, "slow"))

    # The run row is opened once the source lock is held; the fetch then takes 12 s.
    wait_until(daemon_crawling, 60, "the daemon's crawl to start")

    operator = litwatch(config, "crawl", "slow", "--no-progress")
    assert operator.returncode == 0, operator.stderr
    assert re.search(r"│ slow\s+│ busy\s+│", operator.stdout), operator.stdout
    assert "already being crawled" in operator.stdout
    assert [r["trigger"] for r in runs(engine, "slow")] == ["daemon"]  # no run of its own
    # The server logs a request once answered: any fetch by the operator would be in by now.
    assert http_server.count("/slow.xml") <= 1

    # SIGTERM while the daemon's crawl is still in flight: the run is closed, not left open.
    assert daemon_crawling()
    code, seconds = daemon.terminate()
    assert code == 0, daemon.log
    assert seconds < STOP_WITHIN
    [run] = runs(engine, "slow")
    assert run["status"] in ("ok", "failed") and run["finished_at"] is not None


# --- A digest missed while the daemon was down ---------------------------------------------------


def test_missed_digest_is_sent_once_on_start_and_not_again_after_restart(
    sqlite_url: str,
    tmp_path: Path,
    smtp_server: LocalSMTPServer,
    daemons: Callable[..., Running],
) -> None:
    # The daily digest time was ten minutes ago: the daemon was down over it.
    fire = datetime.now(UTC) - timedelta(minutes=10)
    digest = f'cron = "{fire.minute} {fire.hour} * * *"\ntimezone = "UTC"\nsend_empty = true'
    config = write_config(tmp_path, sqlite_url, [], smtp_port=smtp_server.port, digest=digest)
    add_subscribers(sqlite_url, "ada@example.org")

    first = daemons(config, tmp_path / "first.log")
    first.wait_for_log("event=digest.done")
    assert "event=digest.missed" in first.log
    assert len(smtp_server.wait_for(1)) == 1
    assert first.terminate()[0] == 0

    again = daemons(config, tmp_path / "again.log")
    again.wait_for_log("event=daemon.started")
    time.sleep(2)  # a missed digest would be on its way by now
    assert again.terminate()[0] == 0
    assert "event=digest.missed" not in again.log and "event=digest.start" not in again.log
    assert len(smtp_server.messages) == 1


def test_missed_digest_beyond_the_grace_is_skipped(
    sqlite_url: str, tmp_path: Path, smtp_server: LocalSMTPServer, daemons: Callable[..., Running]
) -> None:
    fire = datetime.now(UTC) - timedelta(minutes=10)
    digest = (
        f'cron = "{fire.minute} {fire.hour} * * *"\ntimezone = "UTC"\n'
        'send_empty = true\nmisfire_grace = "5m"'
    )
    config = write_config(tmp_path, sqlite_url, [], smtp_port=smtp_server.port, digest=digest)
    add_subscribers(sqlite_url, "ada@example.org")
    daemon = daemons(config, tmp_path / "daemon.log")
    daemon.wait_for_log("event=daemon.started")
    time.sleep(2)
    assert daemon.terminate()[0] == 0
    assert "event=digest" not in daemon.log
    assert smtp_server.messages == []


# --- Logs ----------------------------------------------------------------------------------------


def test_log_level_from_config_and_from_the_command_line(
    sqlite_url: str, tmp_path: Path, daemons: Callable[..., Running]
) -> None:
    config = write_config(tmp_path, sqlite_url, [], daemon='log_level = "debug"')
    verbose = daemons(config, tmp_path / "debug.log")
    verbose.wait_for_log("event=daemon.started")
    verbose.wait_for_log("level=debug logger=litwatch.daemon event=daemon.heartbeat")
    assert verbose.terminate()[0] == 0
    assert_log_is_key_value(verbose.log)

    # --log-level wins over [daemon] log_level: warnings only, so a clean run says nothing.
    quiet = daemons(config, tmp_path / "quiet.log", root=("--log-level", "warning"))
    wait_until(lambda: status_json(config)["daemon"]["running"], 30, "the quiet daemon")
    assert quiet.terminate()[0] == 0
    assert quiet.log.strip() == ""


# --- PostgreSQL restarts under the daemon (issue 12, A10) ----------------------------------------


@pytest.fixture
def proxied_pg(pg_url: str) -> Iterator[tuple[TcpProxy, str]]:
    """The test PostgreSQL (migrated) behind a local TCP proxy whose connections can be cut."""
    migrated_engine(pg_url).dispose()
    target = make_url(pg_url)
    with TcpProxy((target.host or "127.0.0.1", target.port or 5432)) as proxy:
        yield proxy, proxy.url_for(pg_url)


def test_daemon_survives_a_cut_connection_and_stops_when_another_took_its_lock(
    tmp_path: Path,
    pg_url: str,
    proxied_pg: tuple[TcpProxy, str],
    daemons: Callable[..., Running],
) -> None:
    proxy, url = proxied_pg
    config = write_config(tmp_path, url, [])
    daemon = daemons(config, tmp_path / "daemon.log")
    daemon.wait_for_log("event=daemon.started")
    # A restart of the server: every connection drops, new ones get through at once.
    assert proxy.sever() >= 1
    daemon.wait_for_log("event=daemon.lock_regained", timeout=20)
    assert daemon.proc.poll() is None
    # Cut again, and this time another daemon gets the lock first (a standby taking over).
    direct = make_engine(pg_url)
    other = NamedLock(direct, DAEMON_LOCK)
    try:
        proxy.refuse()
        proxy.sever()
        assert other.acquire(blocking=True, timeout=10)
        proxy.accept()
        code = daemon.proc.wait(timeout=30)
    finally:
        other.release()
        direct.dispose()
    log = daemon.log
    assert code == EXIT_LOCK_LOST, log
    assert "Traceback" not in log
    assert log.rstrip().splitlines()[-1] == (
        "litwatch: daemon stopped: lost the daemon lock (database connection lost) and "
        "another daemon holds it now"
    )
