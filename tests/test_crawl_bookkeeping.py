"""Each source's bookkeeping fails alone, and a run always ends in a final state (issue 12 A6).

A server's 600-character ETag (PostgreSQL refuses it in ``sources.etag``; SQLite stores
anything), through the real ``litwatch crawl``; and a full disk (SQLite's own SQLITE_FULL)
hitting the runner's closing of one source.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import Engine, event, select

from crawler.db import polls
from crawler.db.models import CrawlRun
from crawler.ingest.runner import _Crawl
from crawler.poll import PollReport
from crawler.settings import SourceSettings, load_settings
from tests.support.db import migrated_engine
from tests.support.httpserver import LocalHTTPServer
from tests.test_crawl_e2e import (
    FIXTURES,
    JOURNAL_DOIS,
    RSS,
    assert_clean_exit,
    crawl_runs,
    db_engines,  # noqa: F401 (a fixture)
    feed_source,
    litwatch_crawl,
    paper_keys,
    source_state,
    summary_rows,
    write_config,
)

JOURNAL = (FIXTURES / "journal_rss.xml").read_bytes()


@pytest.mark.slow
def test_a_600_character_etag_is_dropped_and_every_source_is_closed(
    db_url: str,
    http_server: LocalHTTPServer,
    tmp_path: Path,
    db_engines: Callable[[str], Engine],  # noqa: F811
) -> None:
    long_tag = '"' + "e" * 598 + '"'
    http_server.add("/long.xml", JOURNAL, content_type=RSS, etag=long_tag)
    other = JOURNAL.replace(b"10.5555/jprn.2024.", b"10.5555/other.2024.")
    http_server.add("/other.xml", other, content_type=RSS, etag='"other-v1"')
    sources = [
        feed_source("long", http_server.url("/long.xml"), topics=["fibromyalgia"]),
        feed_source("other", http_server.url("/other.xml"), topics=["fibromyalgia"]),
    ]
    config = write_config(tmp_path / "litwatch.toml", db_url, sources)

    proc = litwatch_crawl(config)

    assert_clean_exit(proc, 0)
    rows = summary_rows(proc.stdout)
    assert rows["long"]["status"] == rows["other"]["status"] == "ok"
    engine = db_engines(db_url)
    assert [r["status"] for r in crawl_runs(engine, "long")] == ["ok"]
    assert [r["status"] for r in crawl_runs(engine, "other")] == ["ok"]
    assert source_state(engine, "long").etag is None  # dropped: the next poll is plain
    assert source_state(engine, "long").last_success is not None
    assert source_state(engine, "other").etag == '"other-v1"'
    assert paper_keys(engine, "long") == JOURNAL_DOIS


def _disk_full_after_setup(engine: Engine) -> None:
    """From now on the database cannot grow: SQLite's own "database or disk is full".

    ``max_page_count`` at the current size makes any write that needs a new page fail with
    SQLITE_FULL, as a full disk does, while rewriting existing pages still works.
    """

    @event.listens_for(engine, "connect")
    def _full(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        pages = cur.execute("PRAGMA page_count").fetchone()[0]
        cur.execute(f"PRAGMA max_page_count={pages}")
        cur.close()

    engine.dispose()  # connections made from now on get the limit


def test_a_full_disk_fails_one_sources_bookkeeping_alone_and_closes_every_run(
    sqlite_url: str, tmp_path: Path
) -> None:
    engine = migrated_engine(sqlite_url)
    config = load_settings(write_config(tmp_path / "litwatch.toml", sqlite_url, []))
    runs = {sid: polls.open_run(engine, sid, "sciencedaily", "cli") for sid in ("many", "few")}
    _disk_full_after_setup(engine)
    stories = [(f"https://news.example.org/{i}/{'s' * 400}", 0) for i in range(300)]
    crawl = _Crawl(config, engine, None)

    def finish(source_id: str, followed: list[tuple[str, int]]) -> Any:
        source = SourceSettings(id=source_id, kind="sciencedaily", url="https://x.example/")
        spider = SimpleNamespace(source=source, report=PollReport(followed=followed))
        crawler = SimpleNamespace(spider=spider, stats=SimpleNamespace(get_stats=lambda: {}))
        return crawl._finish(source, runs[source_id], crawler)

    try:
        many = finish("many", stories)  # 300 new rows: the disk is full
        few = finish("few", [])  # rewrites rows in place: still possible
        with engine.connect() as conn:
            statuses = dict(
                conn.execute(select(CrawlRun.source_id, CrawlRun.status)).tuples().all()
            )
            error = conn.scalar(select(CrawlRun.error).where(CrawlRun.source_id == "many"))
    finally:
        engine.dispose()
    assert many.status == "failed" and "recording the poll failed" in (many.error or "")
    assert "full" in (many.error or "")
    assert few.source_id == "few" and "recording" not in (few.error or "")
    assert statuses == {"many": "failed", "few": "failed"}  # none left "running"
    assert "recording the poll failed" in (error or "")
