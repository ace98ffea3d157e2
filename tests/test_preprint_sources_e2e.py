"""The Europe PMC and bioRxiv/medRxiv source kinds through the real ``litwatch crawl``,
against answers in their real formats served on 127.0.0.1.

Europe PMC: the real 25-record ``resultType=core`` answer from the corpus, then the real empty
answer for the next cursor. bioRxiv: the hand-written three-page details answer (a v2 of one
preprint, a withdrawn one, categories in any case), filtered to immunology.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from crawler.db.engine import make_engine, transaction
from crawler.db.models import PaperRow, Sighting
from tests.support.config import write_toml
from tests.support.corpus import corpus_path
from tests.support.httpserver import LocalHTTPServer, Request, Response, max_in_window

pytestmark = pytest.mark.slow

BIORXIV = Path(__file__).parent / "fixtures" / "biorxiv"


def _crawl(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crawler.cli", "--config", str(config), "crawl", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _count(url: str, source: str) -> int:
    engine = make_engine(url)
    try:
        with transaction(engine) as session:
            stmt = select(func.count(func.distinct(Sighting.paper_id))).where(
                Sighting.source_id == source
            )
            return int(session.scalar(stmt) or 0)
    finally:
        engine.dispose()


def test_europepmc_source_pages_by_cursor_within_its_window(
    sqlite_url: str, tmp_path: Path
) -> None:
    page = corpus_path("apis/europepmc_search_cancer_core.json").read_bytes()
    empty = corpus_path("apis/europepmc_search_no_results.json").read_bytes()
    first_cursor = json.loads(page)["nextCursorMark"]
    queries: list[str] = []

    def search(request: Request) -> Response:
        queries.append(request.arg("query") or "")
        body = page if request.arg("cursorMark") == "*" else empty
        return Response(body=body, content_type="application/json")

    with LocalHTTPServer() as server:
        server.add_handler("/europepmc/search", search)
        config = write_toml(
            tmp_path / "litwatch.toml",
            {"database": {"url": sqlite_url}},
            [{"id": "epmc-cancer", "kind": "europepmc", "query": "cancer",
              "base_url": server.url("/europepmc/"), "topics": ["autoimmunity"]}],
        )  # fmt: skip
        done = _crawl(config)
        cursors = [r.query.get("cursorMark", [""])[0] for r in server.log]
        times = [r.time for r in server.log]
    assert done.returncode == 0, done.stdout + done.stderr
    assert cursors == ["*", first_cursor]
    assert all("FIRST_IDATE:[" in q and "(cancer)" in q for q in queries)
    assert max_in_window(times) <= 1  # one request a second
    assert _count(sqlite_url, "epmc-cancer") == 25


def test_biorxiv_source_keeps_its_categories_and_one_paper_per_preprint(
    sqlite_url: str, tmp_path: Path
) -> None:
    pages = {n: (BIORXIV / f"details_page{n}.json").read_bytes() for n in (1, 2, 3)}
    by_cursor = {"0": pages[1], "3": pages[2], "6": pages[3]}

    def details(request: Request) -> Response:
        cursor = request.path.rstrip("/").split("/")[-2]
        return Response(body=by_cursor[cursor], content_type="application/json")

    with LocalHTTPServer() as server:
        today = datetime.now(UTC).date()
        window = f"{today - timedelta(days=30)}/{today}"  # the default [pubmed] baseline
        for cursor in by_cursor:
            server.add_handler(f"/biorxiv/details/medrxiv/{window}/{cursor}/json", details)
        config = write_toml(
            tmp_path / "litwatch.toml",
            {"database": {"url": sqlite_url}},
            [{"id": "medrxiv-immunology", "kind": "biorxiv", "server": "medrxiv",
              "categories": ["Immunology"], "base_url": server.url("/biorxiv/"),
              "topics": ["autoimmunity"]}],
        )  # fmt: skip
        done = _crawl(config)
        paths = [r.path for r in server.log]
    assert done.returncode == 0, done.stdout + done.stderr
    assert [p.rstrip("/").split("/")[-2] for p in paths] == ["0", "3", "6"]
    assert all(p.startswith("/biorxiv/details/medrxiv/") for p in paths)
    engine = make_engine(sqlite_url)
    try:
        with transaction(engine) as session:
            dois = sorted(d for d in session.scalars(select(PaperRow.doi_key)) if d)
    finally:
        engine.dispose()
    immunology = sorted(
        {c["doi"].lower() for n in (1, 2) for c in json.loads(pages[n])["collection"]
         if c["category"].lower() == "immunology"}
    )  # fmt: skip
    assert dois == immunology


def test_the_api_delay_is_configurable(sqlite_url: str, tmp_path: Path) -> None:
    """``[crawl] api_delay`` spaces the requests to an API host (default: one a second)."""
    pages = [(BIORXIV / f"details_page{n}.json").read_bytes() for n in (1, 2, 3)]
    by_cursor = dict(zip(("0", "3", "6"), pages, strict=True))

    def details(request: Request) -> Response:
        cursor = request.path.rstrip("/").split("/")[-2]
        return Response(body=by_cursor[cursor], content_type="application/json")

    with LocalHTTPServer() as server:
        today = datetime.now(UTC).date()
        window = f"{today - timedelta(days=30)}/{today}"
        for cursor in by_cursor:
            server.add_handler(f"/biorxiv/details/biorxiv/{window}/{cursor}/json", details)
        config = write_toml(
            tmp_path / "litwatch.toml",
            {"database": {"url": sqlite_url}, "crawl": {"api_delay": 2.5}},
            [{"id": "biorxiv-all", "kind": "biorxiv", "server": "biorxiv",
              "base_url": server.url("/biorxiv/")}],
        )  # fmt: skip
        done = _crawl(config)
        times = sorted(r.time for r in server.log)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(times) == 3
    assert min(b - a for a, b in itertools.pairwise(times)) >= 2.4
