"""A crawl whose source lock dies with its PostgreSQL connection stops that source (issue 12,
A10): once the session is gone another crawl of the same source can take the lock, so
carrying on would run two crawls of one source.

The real ``litwatch crawl`` runs as a subprocess against the test PostgreSQL through a local
TCP proxy; cutting the proxy's connections stands for a server restart.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.engine import make_url

from crawler.db.engine import make_engine
from crawler.db.models import CrawlRun, PaperRow
from crawler.locks import NamedLock, crawl_lock
from tests.support import REPO_ROOT
from tests.support.db import migrated_engine
from tests.support.httpserver import LocalHTTPServer
from tests.support.tcpproxy import TcpProxy

pytestmark = pytest.mark.slow

RSS = "application/rss+xml"
CRAWL = ("crawl", "slow", "--no-progress")
FEED = (
    b'<?xml version="1.0"?><rss version="2.0"><channel><title>J</title>'
    b"<link>https://journal.example.org/</link><description>t</description>"
    b"<item><title>Fibromyalgia and sleep</title>"
    b"<link>https://doi.org/10.5555/lock.lost.1</link>"
    b"<description>Fibromyalgia patients.</description></item></channel></rss>"
)


@pytest.fixture
def proxied_pg(pg_url: str) -> Iterator[tuple[TcpProxy, str]]:
    migrated_engine(pg_url).dispose()
    target = make_url(pg_url)
    with TcpProxy((target.host or "127.0.0.1", target.port or 5432)) as proxy:
        yield proxy, proxy.url_for(pg_url)


def write_config(tmp_path: Path, db_url: str, feed_url: str) -> Path:
    path = tmp_path / "litwatch.toml"
    path.write_text(
        f"""
[database]
url = {json.dumps(db_url)}

[crawl]
download_delay = 0
autothrottle = false
retries = 0
timeout = "30s"

[[sources]]
id = "slow"
kind = "feed"
url = {json.dumps(feed_url)}
interval = "1h"
""",
        encoding="utf-8",
    )
    return path


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def runs(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(CrawlRun).order_by(CrawlRun.id)).mappings())


def test_crawl_stops_a_source_whose_lock_died_with_its_connection(
    tmp_path: Path, pg_url: str, proxied_pg: tuple[TcpProxy, str], http_server: LocalHTTPServer
) -> None:
    proxy, url = proxied_pg
    # The feed answers after 12 s: the crawl is mid-fetch when the connection is cut.
    http_server.add("/slow.xml", FEED, content_type=RSS, delay=12)
    config = write_config(tmp_path, url, http_server.url("/slow.xml"))
    direct = make_engine(pg_url)
    other = NamedLock(direct, crawl_lock("slow"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LITWATCH_")}
    log = tmp_path / "crawl.log"
    with log.open("wb") as err:
        crawl = subprocess.Popen(
            [sys.executable, "-m", "crawler.cli", "--config", str(config), *CRAWL],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
        )
    try:
        # The run row is opened once the source lock is held.
        wait_until(lambda: any(r["status"] == "running" for r in runs(direct)), 60, "the crawl")
        assert proxy.sever() >= 1  # the server restarts; new connections get through
        # The source is free for another crawl now: the one running must not carry on.
        assert other.acquire(blocking=True, timeout=10)
        out, _ = crawl.communicate(timeout=40)
    finally:
        if crawl.poll() is None:
            crawl.kill()
            crawl.wait()
        other.release()
    text = log.read_text(encoding="utf-8", errors="replace")
    try:
        assert crawl.returncode == 1, text
        assert "event=crawl.lock_lost source=slow action=stopping" in text
        assert "Traceback" not in text
        [run] = runs(direct)
        assert run["status"] == "failed" and "source lock lost" in (run["error"] or ""), run
        with direct.connect() as conn:
            assert conn.execute(select(func.count()).select_from(PaperRow)).scalar() == 0
        assert b"source lock lost" in out
    finally:
        direct.dispose()
