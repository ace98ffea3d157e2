"""The lifecycle watch keeps to NCBI's rates: 3 requests a second without an API key, 10 with
one (the key then goes with every request, in the POSTed form, never in a URL).

The real ``litwatch watch`` re-reads delivered papers one per batch from a fake E-utilities on
127.0.0.1, so each paper is one EFetch request and the pace can be measured.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from sqlalchemy import Engine, select

from crawler.db.engine import transaction
from crawler.db.models import PaperRow
from crawler.db.store import upsert
from crawler.items import Paper
from tests.support.config import write_toml
from tests.support.db import migrated_engine
from tests.support.httpserver import LocalHTTPServer, Request, Response, max_in_window
from tests.support.lifecycle import FakeApis, sent_to

pytestmark = pytest.mark.slow

KEY = "ncbi-test-key-0123"


def _seed(engine: Engine, count: int) -> None:
    papers = [
        Paper(source_id="s", origin="pubmed", pmid=str(35000000 + n), title=f"Paper {n}.")
        for n in range(count)
    ]
    upsert(engine, papers)
    with transaction(engine) as session:
        ids = list(session.scalars(select(PaperRow.id)))
    sent_to(engine, "ada@example.org", ids)


@pytest.mark.parametrize(("key", "papers", "limit"), [(None, 10, 3), (KEY, 24, 10)])
def test_watch_keeps_to_ncbi_rates(
    sqlite_url: str, tmp_path: Path, key: str | None, papers: int, limit: int
) -> None:
    engine = migrated_engine(sqlite_url)
    try:
        _seed(engine, papers)
    finally:
        engine.dispose()
    forms: list[dict[str, list[str]]] = []

    def efetch(request: Request) -> Response:
        forms.append(parse_qs(request.body.decode()))
        return Response(body=b"<PubmedArticleSet></PubmedArticleSet>", content_type="text/xml")

    with LocalHTTPServer() as server:
        FakeApis(server)
        server.add_handler("/eutils/efetch.fcgi", efetch)
        config = write_toml(
            tmp_path / "litwatch.toml",
            {
                "database": {"url": sqlite_url},
                "pubmed": {"base_url": server.url("/eutils/")},
                "crossref": {"base_url": server.url("/crossref/"), "delay": 0.0},
                "lifecycle": {"batch_size": 1},
            },
        )
        env = {k: v for k, v in os.environ.items() if k != "NCBI_API_KEY"}
        if key:
            env["NCBI_API_KEY"] = key
        done = subprocess.run(
            [sys.executable, "-m", "crawler.cli", "--config", str(config), "watch"],
            capture_output=True, text=True, timeout=120, check=False, env=env,
        )  # fmt: skip
        log = [r for r in server.log if r.path.endswith("efetch.fcgi")]
    assert done.returncode == 0, done.stderr
    assert f"{papers} papers watched" in done.stdout
    assert len(log) == papers  # one request per batch of one
    assert all("api_key" not in r.query for r in log)  # never in the URL
    assert all(f.get("api_key") == ([key] if key else None) for f in forms)
    assert KEY not in done.stdout + done.stderr  # the key is a secret: never printed
    pace = max_in_window(r.time for r in log)
    assert pace <= limit
    if key:  # the key is used: faster than the keyless rate
        assert pace > 3
