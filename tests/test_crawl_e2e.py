"""End-to-end crawls: the real ``litwatch crawl`` in a subprocess, real HTTP, a real database.

Scrapy's reactor cannot restart inside one process, so every crawl here is a fresh
``python -m crawler.cli`` run (marked ``slow``) with a temporary TOML config whose sources
point at the local fixture server (tests/support/httpserver.py) and, for PubMed, at a fake
E-utilities (tests/support/eutils.py). The database is then read directly to check what was
stored. Tests parametrised with ``db_url`` run on SQLite and on PostgreSQL (file locks versus
advisory locks). A few in-process tests of the runner's bookkeeping close the file.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import lxml.etree
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from crawler.db.engine import make_engine
from crawler.db.models import (
    CrawlRun,
    FollowedLink,
    NewsItem,
    PaperRow,
    Sighting,
    SourceState,
)
from crawler.normalise import clean_doi, doi_key
from spiders.feed_parse import FeedError, parse_feed
from tests.support import REPO_ROOT
from tests.support.config import write_toml
from tests.support.corpus import CORPUS
from tests.support.eutils import FakeEutils, RecordList, SyntheticRecords, load_records
from tests.support.httpserver import LocalHTTPServer, Response

FIXTURES = Path(__file__).parent / "fixtures" / "crawl"
SAMPLE = CORPUS / "pubmed" / "pubmedsample18n0001_177articles.xml.gz"
CONTACT = "crawl-tests@example.org"
RSS = "application/rss+xml"
EUTILS_PATHS = ("/entrez/eutils/esearch.fcgi", "/entrez/eutils/efetch.fcgi")


# --- Running litwatch -------------------------------------------------------------------------


def write_config(
    path: Path,
    db_url: str,
    sources: list[dict[str, Any]],
    *,
    crawl: dict[str, Any] | None = None,
    pubmed: dict[str, Any] | None = None,
) -> Path:
    """A litwatch TOML config: fast, polite-by-default crawl settings plus ``sources``."""
    crawl = {
        "download_delay": 0,
        "autothrottle": False,
        "backoff_base": 0.1,
        "retries": 1,
        "timeout": "10s",
        "obey_robots": True,
        "contact": CONTACT,
        **(crawl or {}),
    }
    pubmed = {"tool": "litwatch-tests", "email": CONTACT, **(pubmed or {})}
    tables = {"database": {"url": db_url}, "crawl": crawl, "pubmed": pubmed}
    return write_toml(path, tables, sources)


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    # Nothing from the developer's environment may steer the crawl (a real NCBI key, a config).
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("LITWATCH_") and k != "NCBI_API_KEY"
    }
    return {**env, **(extra or {})}


def _command(config: Path, args: tuple[str, ...]) -> list[str]:
    return [sys.executable, "-m", "crawler.cli", "--config", str(config), "crawl", *args]


def litwatch_crawl(
    config: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    """Run ``litwatch crawl ARGS`` to completion."""
    return subprocess.run(
        _command(config, args),
        cwd=REPO_ROOT,
        env=_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextmanager
def litwatch_background(config: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    """Start ``litwatch crawl ARGS``; kill it on the way out if it is still running."""
    proc = subprocess.Popen(
        _command(config, args),
        cwd=REPO_ROOT,
        env=_env(None),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def summary_rows(output: str) -> dict[str, dict[str, str]]:
    """The final table, as {source id: {column: cell}}, read from rich's box drawing."""
    lines = output.splitlines()
    header_at = next(
        i for i, line in enumerate(lines) if re.search(r"\bsource\b.*\bstatus\b", line)
    )
    header = [c.strip() for c in re.split(r"[┃│]", lines[header_at])[1:-1]]
    rows = {}
    for line in lines[header_at + 1 :]:
        if not line.startswith("│"):
            continue
        cells = [c.strip() for c in line.split("│")[1:-1]]
        rows[cells[0]] = dict(zip(header, cells, strict=True))
    return rows


def assert_clean_exit(proc: subprocess.CompletedProcess[str], code: int) -> None:
    detail = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == code, detail
    assert "Traceback" not in proc.stderr + proc.stdout, detail


def wait_until(condition: Callable[[], bool], timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


# --- Reading the database ---------------------------------------------------------------------


@pytest.fixture
def db_engines() -> Iterator[Callable[[str], Engine]]:
    """Open (and finally dispose) engines on the crawl's database."""
    engines: list[Engine] = []

    def open_engine(url: str) -> Engine:
        engines.append(make_engine(url))
        return engines[-1]

    yield open_engine
    for engine in engines:
        engine.dispose()


def source_state(engine: Engine, source_id: str) -> SourceState:
    """The ``sources`` row of ``source_id`` (detached, so it can be read after the session)."""
    with Session(engine, expire_on_commit=False) as session:
        state = session.get(SourceState, source_id)
        assert state is not None, f"no sources row for {source_id}"
        session.expunge(state)
        return state


def crawl_runs(engine: Engine, source_id: str) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(CrawlRun).where(CrawlRun.source_id == source_id).order_by(CrawlRun.id)
            ).mappings()
        )


def sightings(engine: Engine, source_id: str | None = None) -> list[Any]:
    stmt = select(Sighting.paper_id, Sighting.source_id, Sighting.kind, Sighting.url)
    if source_id is not None:
        stmt = stmt.where(Sighting.source_id == source_id)
    with engine.connect() as conn:
        return list(conn.execute(stmt).mappings())


def paper_keys(engine: Engine, source_id: str) -> set[str]:
    stmt = (
        select(PaperRow.doi_key)
        .join(Sighting, Sighting.paper_id == PaperRow.id)
        .where(Sighting.source_id == source_id, PaperRow.doi_key.is_not(None))
    )
    with engine.connect() as conn:
        return set(conn.scalars(stmt))


def count_papers(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(PaperRow)) or 0)


def utc_now() -> datetime:
    return datetime.now(UTC)


def utc_today() -> date:
    return utc_now().date()


def feed_source(source_id: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"id": source_id, "kind": "feed", "url": url, **extra}


JOURNAL_DOIS = {"10.5555/jprn.2024.101", "10.5555/jprn.2024.102", "10.5555/jprn.2024.103"}


# --- Conditional GET, health rows, user agent ---------------------------------------------------


@pytest.mark.slow
def test_second_poll_is_conditional_gets_304_and_adds_nothing(
    sqlite_url: str,
    http_server: LocalHTTPServer,
    tmp_path: Path,
    db_engines: Callable[[str], Engine],
) -> None:
    modified = "Tue, 05 Mar 2024 10:00:00 GMT"
    http_server.add(
        "/journal/rss.xml",
        (FIXTURES / "journal_rss.xml").read_bytes(),
        content_type=RSS,
        etag='"jprn-v1"',
        last_modified=modified,
    )
    # AutoThrottle stays on here (the shipped default), as in production.
    config = write_config(
        tmp_path / "litwatch.toml",
        sqlite_url,
        [feed_source("jprn", http_server.url("/journal/rss.xml"))],
        crawl={"autothrottle": True},
    )

    first = litwatch_crawl(config)
    assert_clean_exit(first, 0)
    row = summary_rows(first.stdout)["jprn"]
    assert (row["status"], row["304"], row["items"], row["new"]) == ("ok", "0", "3", "3")
    engine = db_engines(sqlite_url)
    assert paper_keys(engine, "jprn") == JOURNAL_DOIS
    state = source_state(engine, "jprn")
    assert (state.etag, state.last_modified) == ('"jprn-v1"', modified)
    assert state.consecutive_failures == 0 and state.last_success is not None
    first_success = state.last_success

    second = litwatch_crawl(config)
    assert_clean_exit(second, 0)
    row = summary_rows(second.stdout)["jprn"]
    assert (row["status"], row["304"], row["items"], row["new"]) == ("ok", "1", "0", "0")

    feed_requests = http_server.requests_to("/journal/rss.xml")
    assert [r.status for r in feed_requests] == [200, 304]
    assert feed_requests[0].header("If-None-Match") is None
    assert feed_requests[1].header("If-None-Match") == '"jprn-v1"'
    assert feed_requests[1].header("If-Modified-Since") == modified
    for request in http_server.log:  # robots.txt and the feed alike
        agent = request.header("User-Agent") or ""
        assert "litwatch" in agent and CONTACT in agent

    assert count_papers(engine) == 3 and len(sightings(engine, "jprn")) == 3
    state = source_state(engine, "jprn")
    assert state.consecutive_failures == 0 and state.last_error is None
    assert state.last_success is not None and first_success is not None
    assert state.last_success > first_success
    assert state.etag == '"jprn-v1"'  # a 304 keeps the validators
    assert (state.runs, state.items_seen, state.items_new) == (2, 3, 3)
    runs = crawl_runs(engine, "jprn")
    assert [r["status"] for r in runs] == ["ok", "ok"]
    assert [(r["items"], r["new"], r["not_modified"]) for r in runs] == [(3, 3, 0), (0, 0, 1)]
    assert all(r["requests"] >= 1 and r["finished_at"] is not None for r in runs)


# --- Every publisher feed of the corpus ---------------------------------------------------------

# The oracle reads each item's DOI straight from the XML, independently of feedparser: the
# first DOI in the item's identifying elements (prism:doi, dc:identifier, guid, link, rdf:about),
# else one printed as "DOI: 10...." in its text. DOIs elsewhere in a description (IJSEM links
# every taxon name to a 10.1601 "NamesforLife" DOI) name other things and do not count.
_DOI = re.compile(r"10\.\d{4,9}/[^\s\"'<>?&#]+")
_LABELLED = re.compile(r"\bDOI:\s*(10\.\d{4,9}/[^\s\"'<>]+)", re.IGNORECASE)
_ID_ELEMENTS = {"doi", "identifier", "guid", "link", "id"}


def _local(name: str) -> str:
    return name.rpartition("}")[2]


def _item_doi(item: Any) -> str | None:
    candidates = [v for k, v in item.attrib.items() if _local(k) == "about"]
    for child in item:
        if isinstance(child.tag, str) and _local(child.tag) in _ID_ELEMENTS:
            candidates += [child.text or "", child.get("href") or ""]
    for text in candidates:
        if match := _DOI.search(text):
            return doi_key(clean_doi(match.group()))
    labelled = _LABELLED.search(" ".join(item.itertext()))
    return doi_key(clean_doi(labelled.group(1))) if labelled else None


def feed_items(path: Path) -> list[Any]:
    """The item / entry elements of a feed file (trusted test data, parsed without entities)."""

    parser = lxml.etree.XMLParser(resolve_entities=False, no_network=True, recover=True)
    root = lxml.etree.fromstring(path.read_bytes(), parser)
    return [
        el for el in root.iter() if isinstance(el.tag, str) and _local(el.tag) in ("item", "entry")
    ]


def dois_in_feed(path: Path) -> set[str]:
    """Every distinct DOI key of the feed's own items."""
    return {doi for item in feed_items(path) if (doi := _item_doi(item))}


@pytest.mark.slow
def test_every_publisher_feed_in_the_corpus_yields_its_dois(
    sqlite_url: str,
    http_server: LocalHTTPServer,
    tmp_path: Path,
    db_engines: Callable[[str], Engine],
) -> None:
    folder = CORPUS / "journal_feeds"
    if not folder.is_dir():
        pytest.skip("shared corpus not available")
    feeds = sorted(folder.glob("*.xml"))
    sources = []
    for number, path in enumerate(feeds):
        http_server.add(f"/feeds/{path.name}", path.read_bytes(), content_type=RSS)
        # topics set: the source vouches for its items, so nothing is filtered out.
        sources.append(
            feed_source(
                f"journal-{number}", http_server.url(f"/feeds/{path.name}"), topics=["autoimmunity"]
            )
        )
    config = write_config(tmp_path / "litwatch.toml", sqlite_url, sources)

    proc = litwatch_crawl(config)

    assert_clean_exit(proc, 0)
    engine = db_engines(sqlite_url)
    rows = summary_rows(proc.stdout)
    assert sum(len(dois_in_feed(path)) for path in feeds) > 300  # the oracle found the DOIs
    for number, path in enumerate(feeds):
        source_id = f"journal-{number}"
        assert paper_keys(engine, source_id) == dois_in_feed(path), path.name
        assert rows[source_id]["status"] == "ok", path.name
        assert int(rows[source_id]["items"]) == len(feed_items(path)), path.name


# --- Broken sources -------------------------------------------------------------------------------

ROBOTS = b"User-agent: *\nDisallow: /private/\n"


def _malformed_expectations(http_server: LocalHTTPServer) -> dict[str, tuple[Path, str | int]]:
    """Serve every malformed corpus feed; expect what the feed parser decides for each.

    The parser's verdict on each file is its own tests' business (tests/test_feed_parse.py);
    here it is the yardstick: the crawl must report exactly that, as a clean source error or
    as a success keeping the entries, never as a crash.
    """
    folder = CORPUS / "malformed_feeds"
    expected: dict[str, tuple[Path, str | int]] = {}
    for number, path in enumerate(sorted(folder.glob("*.xml")) if folder.is_dir() else []):
        url = http_server.url(f"/malformed/{path.name}")
        http_server.add(f"/malformed/{path.name}", path.read_bytes(), content_type=RSS)
        try:
            verdict: str | int = len(parse_feed(path.read_bytes(), url, "x").papers)
        except FeedError as exc:
            verdict = str(exc)
        expected[f"malformed-{number}"] = (path, verdict)
    return expected


@pytest.mark.slow
def test_broken_sources_fail_alone_with_clear_messages(
    db_url: str,
    http_server: LocalHTTPServer,
    tmp_path: Path,
    db_engines: Callable[[str], Engine],
) -> None:
    http_server.add("/robots.txt", ROBOTS)
    http_server.add(
        "/good.xml", (FIXTURES / "journal_rss.xml").read_bytes(), content_type=RSS, etag='"good"'
    )
    http_server.add("/gone.xml", b"<h1>Not Found</h1>", status=404, content_type="text/html")
    slow_arrivals: list[float] = []  # the server logs a request only once it has answered

    def slow(request: Any) -> Response:
        slow_arrivals.append(time.monotonic())
        return Response(200, (FIXTURES / "journal_rss.xml").read_bytes(), delay=8)

    http_server.add_handler("/slow.xml", slow)
    http_server.add(
        "/captcha.xml",
        (FIXTURES / "captcha.html").read_bytes(),
        content_type="text/html; charset=utf-8",
    )
    http_server.add(
        "/truncated.xml", (FIXTURES / "truncated_rss.xml").read_bytes(), content_type=RSS
    )
    http_server.add("/bomb.xml", (FIXTURES / "bomb_rss.xml").read_bytes(), content_type=RSS)
    http_server.add("/private/feed.xml", (FIXTURES / "journal_rss.xml").read_bytes())
    http_server.add(
        "/bozo.xml",
        # Other DOIs than the good feed's, so that both count their own new papers.
        (FIXTURES / "truncated_after_two_items.xml").read_bytes().replace(b"jprn", b"bozo"),
        content_type=RSS,
        etag='"bozo"',
    )
    broken = {
        "gone": ("/gone.xml", "HTTP 404 from"),
        "slow": ("/slow.xml", "timed out fetching"),
        "captcha": ("/captcha.xml", "HTML page, not a feed"),
        "truncated": ("/truncated.xml", "broken feed"),
        "bomb": ("/bomb.xml", "entity declarations are not allowed"),
        "robots": ("/private/feed.xml", "forbidden by robots.txt"),
    }
    malformed = _malformed_expectations(http_server)
    sources = [feed_source("good", http_server.url("/good.xml"), topics=["fibromyalgia"])]
    sources += [
        feed_source(sid, http_server.url(path), topics=["fibromyalgia"])
        for sid, (path, _) in broken.items()
    ]
    sources.append(feed_source("bozo", http_server.url("/bozo.xml"), topics=["fibromyalgia"]))
    sources += [
        feed_source(sid, http_server.url(f"/malformed/{path.name}"), topics=["fibromyalgia"])
        for sid, (path, _) in malformed.items()
    ]
    # Timeout 2 s against an 8 s answer (room for a loaded machine); one retry, so the timeout
    # is tried twice. With the malformed corpus this is about 25 sources: more than a
    # PostgreSQL pool's 15 connections if each source's lock held one of them.
    config = write_config(
        tmp_path / "litwatch.toml", db_url, sources, crawl={"timeout": "2s", "retries": 1}
    )

    started = time.monotonic()
    proc = litwatch_crawl(config)
    elapsed = time.monotonic() - started

    assert_clean_exit(proc, 1)
    assert elapsed < 20  # the slow source cost two 2 s timeouts, not the 8 s answers
    rows = summary_rows(proc.stdout)
    engine = db_engines(db_url)
    # The good source in the same crawl is untouched by its neighbours' failures.
    assert rows["good"]["status"] == "ok" and rows["good"]["new"] == "3"
    assert paper_keys(engine, "good") == JOURNAL_DOIS
    for source_id, (_path, message) in broken.items():
        assert rows[source_id]["status"] == "failed", source_id
        assert rows[source_id]["errors"] != "0", source_id
        state = source_state(engine, source_id)
        assert state.last_error and message.lower() in state.last_error.lower(), state.last_error
        assert "\n" not in state.last_error
        assert f"{source_id}: " in proc.stdout and message.lower() in proc.stdout.lower()
        assert state.consecutive_failures == 1 and state.last_success is None
        assert [r["status"] for r in crawl_runs(engine, source_id)] == ["failed"]
    assert http_server.count("/private/feed.xml") == 0  # robots.txt obeyed: never fetched
    assert len(slow_arrivals) == 2  # the timeout was retried once
    # A bozo feed that still parses keeps its entries; the problem is a warning.
    assert (rows["bozo"]["status"], rows["bozo"]["items"], rows["bozo"]["new"]) == ("ok", "2", "2")
    assert "bozo: warning: " in proc.stdout
    # ...but its validators are not kept, so the next poll reads it in full again.
    assert source_state(engine, "bozo").etag is None
    assert source_state(engine, "good").etag == '"good"'
    for source_id, (path, verdict) in malformed.items():
        state = source_state(engine, source_id)
        if isinstance(verdict, str):
            assert rows[source_id]["status"] == "failed", path.name
            assert state.last_error and verdict in state.last_error, path.name
        else:
            assert rows[source_id]["status"] == "ok", (path.name, state.last_error)
            assert rows[source_id]["items"] == str(verdict), path.name


# --- Retries: Retry-After and exponential backoff -------------------------------------------------


@pytest.mark.slow
def test_retries_honour_retry_after_and_back_off_exponentially(
    sqlite_url: str,
    http_server: LocalHTTPServer,
    tmp_path: Path,
    db_engines: Callable[[str], Engine],
) -> None:
    feed = (FIXTURES / "journal_rss.xml").read_bytes()
    http_server.add(
        "/limited.xml",
        feed,
        content_type=RSS,
        script=[Response(429, b"slow down", {"Retry-After": "1"})],
    )
    http_server.add(
        "/flaky.xml",
        feed,
        content_type=RSS,
        script=[Response(503, b"busy"), Response(503, b"busy")],
    )
    http_server.add("/down.xml", b"maintenance", status=503)
    sources = [
        feed_source("limited", http_server.url("/limited.xml"), topics=["fibromyalgia"]),
        feed_source("flaky", http_server.url("/flaky.xml"), topics=["fibromyalgia"]),
        feed_source("down", http_server.url("/down.xml"), topics=["fibromyalgia"]),
    ]
    # backoff_base 0.5 s: waits of 0.5 s then 1 s before the two retries.
    config = write_config(
        tmp_path / "litwatch.toml", sqlite_url, sources, crawl={"retries": 2, "backoff_base": 0.5}
    )

    proc = litwatch_crawl(config)

    assert_clean_exit(proc, 1)
    rows = summary_rows(proc.stdout)
    assert rows["limited"]["status"] == "ok" and rows["limited"]["items"] == "3"
    assert rows["flaky"]["status"] == "ok" and rows["flaky"]["items"] == "3"
    assert rows["down"]["status"] == "failed"

    limited = http_server.requests_to("/limited.xml")
    assert [r.status for r in limited] == [429, 200]
    waited = limited[1].time - limited[0].time
    # Retry-After: 1, not Scrapy's immediate retry (upper bounds are loose: CI machines lag).
    assert 0.95 <= waited < 2.5, waited

    flaky = http_server.requests_to("/flaky.xml")
    assert [r.status for r in flaky] == [503, 503, 200]
    first_wait, second_wait = flaky[1].time - flaky[0].time, flaky[2].time - flaky[1].time
    # 0.5 s then 1 s: a constant delay would fail one bound or the other.
    assert 0.48 <= first_wait < 0.95, first_wait
    assert 0.98 <= second_wait < 2.0, second_wait

    # Retries exhausted: 1 + 2 attempts, then an error of that source.
    assert [r.status for r in http_server.requests_to("/down.xml")] == [503, 503, 503]
    state = source_state(db_engines(sqlite_url), "down")
    assert state.last_error and "HTTP 503" in state.last_error
    assert "down: HTTP 503 from" in proc.stdout


# --- PubMed through a fake E-utilities ------------------------------------------------------------


def pubmed_source(source_id: str, base_url: str, query: str, **extra: Any) -> dict[str, Any]:
    return {"id": source_id, "kind": "pubmed", "query": query, "base_url": base_url, **extra}


def ncbi_date(day: date) -> str:
    return day.strftime("%Y/%m/%d")


def eutils_log(http_server: LocalHTTPServer) -> list[Any]:
    return [r for r in http_server.log if r.path in EUTILS_PATHS]


def distinct_papers(records: list[Any]) -> int:
    """How many papers the records are: records sharing their own DOI are one paper."""

    keys = set()
    for record in records:
        element = lxml.etree.fromstring(record.xml)
        doi = element.findtext("PubmedData/ArticleIdList/ArticleId[@IdType='doi']")
        keys.add(doi_key(clean_doi(doi)) if doi else f"pmid:{record.pmid}")
    return len(keys)


@pytest.mark.slow
def test_pubmed_crawl_of_several_batches_stores_each_record_once_within_the_rate_limit(
    sqlite_url: str,
    http_server: LocalHTTPServer,
    tmp_path: Path,
    db_engines: Callable[[str], Engine],
) -> None:
    if not SAMPLE.is_file():
        pytest.skip("shared corpus not available")
    today = utc_today()
    # The 177 sample records entered PubMed over the last 10 days.
    records = load_records(SAMPLE, edat=lambda i: today - timedelta(days=i % 10))
    eutils = FakeEutils(RecordList(records))
    base_url = eutils.install(http_server)
    query = "fibromyalgia[tiab] OR autoimmunity[mh]"
    config = write_config(
        tmp_path / "litwatch.toml",
        sqlite_url,
        [pubmed_source("pubmed-fm", base_url, query, topics=["fibromyalgia"])],
        pubmed={"batch_size": 50, "baseline": "30d", "overlap": "2d"},
    )

    first = litwatch_crawl(config)

    assert_clean_exit(first, 0)
    engine = db_engines(sqlite_url)
    # Every record is stored exactly once: one sighting per PMID, one paper per identity.
    # (The sample holds two versions of one Cochrane review, 2000 and 2001, under one DOI:
    # one paper seen twice.)
    seen = [s["url"] for s in sightings(engine, "pubmed-fm")]
    assert sorted(seen) == sorted(f"https://pubmed.ncbi.nlm.nih.gov/{r.pmid}/" for r in records)
    assert count_papers(engine) == distinct_papers(records) == 176
    with engine.connect() as conn:
        assert set(conn.scalars(select(PaperRow.pmid))) <= {r.pmid for r in records}
    row = summary_rows(first.stdout)["pubmed-fm"]
    assert (row["status"], row["items"], row["new"], row["merged"]) == ("ok", "177", "176", "1")
    (search,) = eutils.esearch_requests
    assert search.arg("term") == query
    assert search.arg("db") == "pubmed" and search.arg("datetype") == "edat"
    assert search.arg("usehistory") == "y"
    assert (search.arg("tool"), search.arg("email")) == ("litwatch-tests", CONTACT)
    assert search.arg("api_key") is None
    # First run: the baseline (30 days) back from today.
    assert search.arg("mindate") == ncbi_date(today - timedelta(days=30))
    assert search.arg("maxdate") == ncbi_date(today)
    # Four EFetch pages of 50 through the history server cover 177 records.
    assert sorted((start, size) for _env, start, size in eutils.fetched_ranges()) == [
        (0, 50),
        (50, 50),
        (100, 50),
        (150, 50),
    ]
    assert all(r.arg("tool") == "litwatch-tests" for r in eutils.efetch_requests)
    # NCBI: at most 3 requests per second without an API key.
    assert http_server.max_requests_per_window(1.0) <= 3
    assert len(eutils_log(http_server)) == 5
    # An API under NCBI's usage policy, not pages: no robots.txt request.
    assert http_server.count("/robots.txt") == 0
    cursor = source_state(engine, "pubmed-fm").cursor
    assert cursor is not None

    eutils.esearch_requests.clear()
    eutils.efetch_requests.clear()
    second = litwatch_crawl(config)

    assert_clean_exit(second, 0)
    (search,) = eutils.esearch_requests
    # Second run: from the last successful run minus the 2-day overlap.
    assert search.arg("mindate") == ncbi_date((cursor - timedelta(days=2)).date())
    assert search.arg("maxdate") == ncbi_date(utc_today())
    overlap = sum(1 for r in records if r.edat >= (cursor - timedelta(days=2)).date())
    row = summary_rows(second.stdout)["pubmed-fm"]
    assert (row["items"], row["new"], row["merged"]) == (str(overlap), "0", str(overlap))
    assert count_papers(engine) == 176
    assert len(sightings(engine, "pubmed-fm")) == 177
    assert http_server.max_requests_per_window(1.0) <= 3
    later = source_state(engine, "pubmed-fm").cursor
    assert later is not None and later > cursor


@pytest.mark.slow
def test_pubmed_errors_fail_their_source_api_key_and_date_splitting(
    sqlite_url: str,
    http_server: LocalHTTPServer,
    tmp_path: Path,
    db_engines: Callable[[str], Engine],
) -> None:
    today = utc_today()
    jci = load_records(FIXTURES / "pubmed_jci144201.xml", edat=today)
    # 2,600 records a day for the 4 days of the window (baseline 3 days): 10,400 > 10,000, so
    # the window must be split. Their titles match no topic, so they are counted, not stored.
    big = SyntheticRecords(per_day=2600, title="Crystal growth in microgravity")
    eutils = FakeEutils(
        {
            "good query": RecordList(jci),
            "bomb query": RecordList(jci),
            "big query": big,
            "huge query": SyntheticRecords(per_day=11_000),
        },
        esearch_errors={"bad query": "Invalid query: unbalanced parentheses"},
        efetch_bodies={"bomb query": (FIXTURES / "efetch_bomb.xml").read_bytes()},
    )
    base_url = eutils.install(http_server)
    sources = [
        pubmed_source("pm-bad", base_url, "bad query"),
        pubmed_source("pm-good", base_url, "good query"),
        pubmed_source("pm-bomb", base_url, "bomb query"),
        pubmed_source("pm-big", base_url, "big query"),
        pubmed_source("pm-huge", base_url, "huge query"),
    ]
    config = write_config(
        tmp_path / "litwatch.toml",
        sqlite_url,
        sources,
        pubmed={"batch_size": 10_000, "baseline": "3d"},
    )

    proc = litwatch_crawl(config, env={"NCBI_API_KEY": "fake-key-123"})

    assert_clean_exit(proc, 1)
    rows = summary_rows(proc.stdout)
    engine = db_engines(sqlite_url)
    assert rows["pm-good"]["status"] == "ok" and rows["pm-good"]["new"] == "1"
    errors = {sid: source_state(engine, sid).last_error or "" for sid in rows}
    assert rows["pm-bad"]["status"] == "failed"
    assert "Invalid query: unbalanced parentheses" in errors["pm-bad"]
    assert rows["pm-bomb"]["status"] == "failed"
    assert "EFetch" in errors["pm-bomb"] and "entit" in errors["pm-bomb"]
    # A window over the cap is split by date, and every record of it is fetched.
    assert rows["pm-big"]["status"] == "ok"
    assert rows["pm-big"]["items"] == "10400" and rows["pm-big"]["skipped"] == "10400"
    big_searches = [r for r in eutils.esearch_requests if r.arg("term") == "big query"]
    windows = [(r.arg("mindate"), r.arg("maxdate")) for r in big_searches]
    assert windows[0] == (ncbi_date(today - timedelta(days=3)), ncbi_date(today))
    parts = sorted(windows[1:])
    assert parts == [
        (ncbi_date(today - timedelta(days=3)), ncbi_date(today - timedelta(days=2))),
        (ncbi_date(today - timedelta(days=1)), ncbi_date(today)),
    ]
    # One day alone over the cap cannot be split further: an error, never a silent cut.
    assert rows["pm-huge"]["status"] == "failed"
    assert "exceed" in errors["pm-huge"] and "10000" in errors["pm-huge"]
    assert source_state(engine, "pm-huge").cursor is None  # the window stays to be done
    # With an API key: the key on every request, and at most 10 requests per second.
    requests = eutils_log(http_server)
    assert requests and all(r.query.get("api_key") == ["fake-key-123"] for r in requests)
    assert all(r.header("Referer") is None for r in requests)  # the key never echoed back
    assert http_server.max_requests_per_window(1.0) <= 10


# --- ScienceDaily: stories followed once, merged with PubMed --------------------------------------

STORIES = {
    "/releases/2021/07/210701120626.htm": "story_jci144201.html",
    "/releases/2021/06/210630090000.htm": "story_no_doi.html",
    "/releases/2021/07/210702100000.htm": "story_lupus.html",
    # Off-topic (crystal growth): never requested, so it needs no page.
}


def serve_news_feed(
    http_server: LocalHTTPServer, fixture: str, etag: str, path: str = "/rss/immune_system.xml"
) -> None:
    base = http_server.url("/").rstrip("/")
    body = (FIXTURES / fixture).read_text(encoding="utf-8").replace("{base}", base)
    http_server.add(path, body.encode(), content_type=RSS, etag=etag)


@pytest.mark.slow
def test_sciencedaily_follows_each_relevant_story_once_and_merges_with_pubmed(
    sqlite_url: str,
    http_server: LocalHTTPServer,
    tmp_path: Path,
    db_engines: Callable[[str], Engine],
) -> None:
    for path, page in STORIES.items():
        http_server.add(path, (FIXTURES / page).read_bytes(), content_type="text/html")
    serve_news_feed(http_server, "sciencedaily_v1.xml", '"news-v1"')
    eutils = FakeEutils(RecordList(load_records(FIXTURES / "pubmed_jci144201.xml", utc_today())))
    base_url = eutils.install(http_server)
    sources = [
        # No topics: only stories whose feed text matches a topic are followed.
        {
            "id": "sd-immune",
            "kind": "sciencedaily",
            "url": http_server.url("/rss/immune_system.xml"),
        },
        pubmed_source("pm-fm", base_url, "fibromyalgia", topics=["fibromyalgia"]),
        # Another topic feed listing the same stories (ScienceDaily does that), second run only.
        {"id": "sd-pain", "kind": "sciencedaily", "url": http_server.url("/rss/pain.xml")},
    ]
    config = write_config(tmp_path / "litwatch.toml", sqlite_url, sources)

    first = litwatch_crawl(config, "sd-immune", "pm-fm")

    assert_clean_exit(first, 0)
    counts = {path: http_server.count(path) for path in STORIES}
    assert counts == {
        "/releases/2021/07/210701120626.htm": 1,
        "/releases/2021/06/210630090000.htm": 1,
        "/releases/2021/07/210702100000.htm": 0,  # not in the feed yet
    }
    assert http_server.count("/releases/2021/06/210629080000.htm") == 0  # off-topic story
    engine = db_engines(sqlite_url)
    # The story names 10.1172/JCI144201, PubMed 10.1172/jci144201: one paper, two sightings.
    with engine.connect() as conn:
        paper = conn.execute(
            select(PaperRow.id, PaperRow.pmid, PaperRow.title).where(
                PaperRow.doi_key == "10.1172/jci144201"
            )
        ).one()
    seen = [s for s in sightings(engine) if s["paper_id"] == paper.id]
    assert sorted((s["source_id"], s["kind"]) for s in seen) == [
        ("pm-fm", "article"),
        ("sd-immune", "news"),
    ]
    assert paper.pmid == "34196305"
    assert paper.title == "Passive transfer of fibromyalgia symptoms from patients to mice."
    # The story without a DOI is kept as news (press coverage), not dropped, and is no paper.
    no_doi_url = http_server.url("/releases/2021/06/210630090000.htm")
    assert not [s for s in sightings(engine) if s["url"] == no_doi_url]
    with engine.connect() as conn:
        news = conn.execute(select(NewsItem.source_id, NewsItem.url, NewsItem.headline)).all()
    assert [tuple(n) for n in news] == [
        ("sd-immune", no_doi_url, "Walking groups ease fibromyalgia pain")
    ]
    row = summary_rows(first.stdout)["sd-immune"]
    assert (row["status"], row["items"], row["skipped"]) == ("ok", "2", "1")
    with engine.connect() as conn:
        followed = set(conn.scalars(select(FollowedLink.url)))
    assert followed == {
        http_server.url("/releases/2021/07/210701120626.htm"),
        no_doi_url,
    }

    # A day later the feed changed (new ETag, one new story on top of the old ones), and a
    # second feed lists the same stories.
    serve_news_feed(http_server, "sciencedaily_v2.xml", '"news-v2"')
    serve_news_feed(http_server, "sciencedaily_v2.xml", '"pain-v2"', path="/rss/pain.xml")
    second = litwatch_crawl(config, "sd-immune", "sd-pain")

    assert_clean_exit(second, 0)
    feed_requests = http_server.requests_to("/rss/immune_system.xml")
    assert feed_requests[-1].header("If-None-Match") == '"news-v1"'
    assert feed_requests[-1].status == 200
    assert http_server.count("/rss/pain.xml") == 1
    assert {path: http_server.count(path) for path in STORIES} == {
        "/releases/2021/07/210701120626.htm": 1,  # already followed: not fetched again
        "/releases/2021/06/210630090000.htm": 1,
        "/releases/2021/07/210702100000.htm": 1,  # new: followed once, by one of the feeds
    }
    rows = summary_rows(second.stdout)
    assert rows["sd-immune"]["status"] == rows["sd-pain"]["status"] == "ok"
    with engine.connect() as conn:
        lupus = conn.execute(
            select(PaperRow.title, PaperRow.journal, PaperRow.year).where(
                PaperRow.doi_key == "10.5555/ar.2021.0707"
            )
        ).one()
    # A paper known only from the story's reference is created from it.
    assert lupus == ("Lupus autoantibodies sensitise nociceptors", "Arthritis & Rheumatology", 2021)
    # Two stories name a paper (two sightings); the third is a news item, not a paper.
    assert len(sightings(engine, "sd-immune")) + len(sightings(engine, "sd-pain")) == 2
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(FollowedLink)) == 3
        assert conn.scalar(select(func.count()).select_from(NewsItem)) == 1


# --- Dry runs -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_dry_run_and_output_file_write_items_without_touching_the_database(
    http_server: LocalHTTPServer, tmp_path: Path
) -> None:
    http_server.add(
        "/journal/rss.xml",
        (FIXTURES / "journal_rss.xml").read_bytes(),
        content_type=RSS,
        etag='"v1"',
    )
    database = tmp_path / "never" / "litwatch.db"
    config = write_config(
        tmp_path / "litwatch.toml",
        f"sqlite:///{database}",
        [feed_source("jprn", http_server.url("/journal/rss.xml"), topics=["fibromyalgia"])],
    )

    dry = litwatch_crawl(config, "--dry-run")

    assert_clean_exit(dry, 0)
    # stdout is pure JSON lines (the table goes to stderr), one item per line.
    items = [json.loads(line) for line in dry.stdout.splitlines()]
    assert {item["doi"] for item in items} == JOURNAL_DOIS
    assert all(item["source_id"] == "jprn" and item["topics"] for item in items)
    assert summary_rows(dry.stderr)["jprn"]["items"] == "3"

    out = tmp_path / "items.jsonl"
    written = litwatch_crawl(config, "-O", str(out))

    assert_clean_exit(written, 0)
    lines = out.read_text(encoding="utf-8").splitlines()
    assert {json.loads(line)["doi"] for line in lines} == JOURNAL_DOIS
    # No database, no lock files, and no conditional request (no poll state was read).
    assert not database.parent.exists()
    assert all(
        r.header("If-None-Match") is None for r in http_server.requests_to("/journal/rss.xml")
    )
    assert http_server.count("/journal/rss.xml") == 2


# --- Concurrency and crashes ----------------------------------------------------------------------


def _held_route(
    http_server: LocalHTTPServer, path: str, body: bytes, gate: threading.Event
) -> list[float]:
    """Serve ``body`` at ``path`` only once ``gate`` is set; return the request arrival times.

    The server logs a request only once it has answered, so arrivals are recorded here, as
    they happen, to tell "a crawl is waiting on this answer right now".
    """
    arrivals: list[float] = []

    def answer(request: Any) -> Response:
        arrivals.append(time.monotonic())
        gate.wait(timeout=60)
        return Response(200, body, content_type=RSS)

    http_server.add_handler(path, answer)
    return arrivals


@pytest.mark.slow
def test_a_second_crawl_of_a_busy_source_reports_it_and_does_nothing(
    db_url: str, http_server: LocalHTTPServer, tmp_path: Path, db_engines: Callable[[str], Engine]
) -> None:
    gate = threading.Event()  # the feed answers the first crawl only once the second is done
    arrivals = _held_route(
        http_server, "/journal/rss.xml", (FIXTURES / "journal_rss.xml").read_bytes(), gate
    )
    config = write_config(
        tmp_path / "litwatch.toml",
        db_url,
        [feed_source("jprn", http_server.url("/journal/rss.xml"), topics=["fibromyalgia"])],
    )

    with litwatch_background(config) as first:
        try:
            wait_until(lambda: len(arrivals) == 1, what="the first crawl to fetch the feed")
            second = litwatch_crawl(config)
        finally:
            gate.set()
        first_out, first_err = first.communicate(timeout=60)

    assert_clean_exit(second, 0)
    assert summary_rows(second.stdout)["jprn"]["status"] == "busy"
    assert "jprn: already being crawled" in second.stdout
    assert len(arrivals) == 1  # the second crawl fetched nothing
    assert first.returncode == 0, first_err
    assert summary_rows(first_out)["jprn"]["status"] == "ok"
    engine = db_engines(db_url)
    runs = crawl_runs(engine, "jprn")
    assert [r["status"] for r in runs] == ["ok"]  # the busy crawl opened no run
    assert paper_keys(engine, "jprn") == JOURNAL_DOIS


@pytest.mark.slow
def test_a_crawl_killed_mid_run_leaves_a_consistent_database_and_a_rerun_completes(
    sqlite_url: str,
    http_server: LocalHTTPServer,
    tmp_path: Path,
    db_engines: Callable[[str], Engine],
) -> None:
    journal = (FIXTURES / "journal_rss.xml").read_bytes()
    http_server.add("/fast.xml", journal, content_type=RSS, etag='"fast"')
    slow_feed = journal.replace(b"10.5555/jprn.2024.", b"10.5555/slow.2024.")
    gate = threading.Event()  # the slow site never answers the first crawl
    arrivals = _held_route(http_server, "/slow.xml", slow_feed, gate)
    config = write_config(
        tmp_path / "litwatch.toml",
        sqlite_url,
        [
            feed_source("fast", http_server.url("/fast.xml"), topics=["fibromyalgia"]),
            feed_source("slow", http_server.url("/slow.xml"), topics=["fibromyalgia"]),
        ],
        crawl={"timeout": "120s"},
    )
    engine = db_engines(sqlite_url)

    def fast_source_stored() -> bool:
        try:
            return count_papers(engine) == 3
        except Exception:  # the schema may not exist yet
            return False

    with litwatch_background(config) as crawl:
        try:
            wait_until(lambda: bool(arrivals) and fast_source_stored(), what="the fast source")
            crawl.send_signal(signal.SIGKILL)
            crawl.wait(timeout=10)
        finally:
            gate.set()

    # Killed: the fast source's papers are stored, its poll state is not; both runs open.
    assert crawl.returncode == -signal.SIGKILL
    assert [r["status"] for r in crawl_runs(engine, "fast")] == ["running"]
    assert source_state(engine, "fast").etag is None
    assert source_state(engine, "fast").last_success is None

    http_server.add("/slow.xml", slow_feed, content_type=RSS)  # the slow site recovered
    rerun = litwatch_crawl(config)

    assert_clean_exit(rerun, 0)
    rows = summary_rows(rerun.stdout)
    assert (rows["fast"]["new"], rows["fast"]["merged"]) == ("0", "3")  # fetched again, merged
    assert rows["slow"]["new"] == "3"
    assert count_papers(engine) == 6
    places = [(s["paper_id"], s["source_id"], s["url"]) for s in sightings(engine)]
    assert len(places) == len(set(places)) == 6  # nothing doubled
    for source_id in ("fast", "slow"):
        first_run, second_run = crawl_runs(engine, source_id)
        assert first_run["status"] == "failed" and "interrupted" in first_run["error"]
        assert first_run["finished_at"] is not None
        assert second_run["status"] == "ok"
    assert source_state(engine, "fast").etag == '"fast"'


@pytest.mark.slow
def test_unknown_source_is_a_usage_error(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "litwatch.toml",
        f"sqlite:///{tmp_path / 'litwatch.db'}",
        [feed_source("jprn", "https://pain.example.org/rss.xml")],
    )
    proc = litwatch_crawl(config, "no-such-source")
    assert_clean_exit(proc, 2)
    assert "unknown source 'no-such-source'" in proc.stderr and "jprn" in proc.stderr


@pytest.mark.slow
def test_one_crawl_of_pubmed_and_feed_sources_together(
    sqlite_url: str,
    http_server: LocalHTTPServer,
    tmp_path: Path,
    db_engines: Callable[[str], Engine],
) -> None:
    """The shipped configuration lists PubMed sources first, then feeds: one crawl runs all.

    Scrapy installs its reactor when the first crawler it created starts; PubMed crawlers
    start one after another, so a feed crawler must not be started before the first-created
    crawler (a regression: every feed failed with "expected a Twisted reactor").
    """
    records = load_records(FIXTURES / "pubmed_jci144201.xml", edat=utc_today())
    base_url = FakeEutils(RecordList(records)).install(http_server)
    http_server.add(
        "/journal/rss.xml", (FIXTURES / "journal_rss.xml").read_bytes(), content_type=RSS
    )
    config = write_config(
        tmp_path / "litwatch.toml",
        sqlite_url,
        [
            pubmed_source("pubmed-a", base_url, "a", topics=["fibromyalgia"]),
            pubmed_source("pubmed-b", base_url, "b", topics=["autoimmunity"]),
            feed_source("jprn", http_server.url("/journal/rss.xml")),
        ],
    )
    done = litwatch_crawl(config)
    assert_clean_exit(done, 0)
    rows = summary_rows(done.stdout)
    assert list(rows) == ["pubmed-a", "pubmed-b", "jprn"]  # the table keeps config order
    assert {sid: row["status"] for sid, row in rows.items()} == dict.fromkeys(rows, "ok")
    assert rows["jprn"]["new"] == "3"
    assert paper_keys(db_engines(sqlite_url), "jprn") == JOURNAL_DOIS
