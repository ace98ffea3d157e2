"""The public archive pages a period (issue 12, A11: 5,000 papers rendered uncapped, 2.9 s).

Real databases (SQLite, and PostgreSQL when LITWATCH_TEST_DATABASE_URL is set); pages are
read with lxml as a browser's parser would.
"""

from __future__ import annotations

import warnings
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import lxml.html
import pytest
from sqlalchemy import Engine, select

from crawler.db.engine import transaction
from crawler.db.models import Delivery, DeliveryPaper, PaperRow
from crawler.db.store import upsert
from crawler.items import Paper
from crawler.settings import Settings, load_settings
from digests import subscribers
from digests.web import WebOptions, create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # see tests/test_web.py
    from starlette.testclient import TestClient

NOW = datetime(2025, 3, 10, 7, 0, tzinfo=UTC)
PERIOD = date(2025, 3, 10)
TOPICS = ["fibromyalgia", "autoimmunity"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    cfg = tmp_path / "litwatch.toml"
    cfg.write_text('[web]\nbase_url = "http://testserver/lw"\n', encoding="utf-8")
    return load_settings(cfg, environ={})


def sent_papers(engine: Engine, n: int) -> None:
    """``n`` papers, all sent in one subscriber's digest of PERIOD."""
    items = [
        Paper(
            source_id="pubmed",
            origin="pubmed",
            url=f"https://pubmed.ncbi.nlm.nih.gov/{1000 + i}/",
            doi=f"10.1000/page.{i}",
            pmid=str(1000 + i),
            title=f"Paper number {i:04d}",
            topics=[TOPICS[i % 2]],
        )
        for i in range(n)
    ]
    upsert(engine, items, now=NOW - timedelta(days=2))
    with transaction(engine) as session:
        sub = subscribers.add(session, "a@example.org", known_topics=TOPICS, topics=TOPICS)
        ids = list(session.scalars(select(PaperRow.id)))
        delivery = Delivery(
            subscriber_id=sub.id,
            period=PERIOD,
            cutoff=NOW,
            state="sent",
            attempts=1,
            message_id="<1.2025-03-10@example.org>",
            paper_count=len(ids),
            created_at=NOW,
            sent_at=NOW,
        )
        session.add(delivery)
        session.flush()
        session.add_all([DeliveryPaper(delivery_id=delivery.id, paper_id=p) for p in ids])


def get(client: TestClient, url: str) -> tuple[int, Any]:
    response = client.get(url)
    tree = lxml.html.document_fromstring(response.text) if response.status_code == 200 else None
    return response.status_code, tree


def titles(tree: Any) -> list[str]:
    return [t.text_content() for t in tree.xpath("//p[@class='title']")]


def test_a_large_period_is_paged_with_next_and_prev_links(
    settings: Settings, engine: Engine
) -> None:
    sent_papers(engine, 250)
    seen: list[str] = []
    with TestClient(create_app(settings, engine)) as client:
        status, first = get(client, "/archive/2025-03-10")
        assert status == 200
        assert len(titles(first)) == 100
        assert "250 papers sent" in first.text_content()
        assert "papers 1 to 100 on this page" in " ".join(first.text_content().split())
        assert first.xpath("//a[@rel='next']/@href")[0] == "/lw/archive/2025-03-10?page=2"
        assert not first.xpath("//a[@rel='prev']")
        # Two pagers (above and below), each a landmark with its own name.
        labels = first.xpath("//nav[@class='pager']/@aria-label")
        assert len(labels) == 2 and len(set(labels)) == 2
        seen += titles(first)
        url = first.xpath("//a[@rel='next']/@href")[0].removeprefix("/lw")
        while url:
            status, tree = get(client, url)
            assert status == 200
            seen += titles(tree)
            nxt = tree.xpath("//a[@rel='next']/@href")
            url = nxt[0].removeprefix("/lw") if nxt else ""
        assert len(titles(tree)) == 50  # the last page holds the rest
        assert tree.xpath("//a[@rel='prev']/@href")[0] == "/lw/archive/2025-03-10?page=2"
        _, second = get(client, "/archive/2025-03-10?page=2")
        assert second.xpath("//a[@rel='prev']/@href")[0] == "/lw/archive/2025-03-10"
        for bad in ("4", "0", "-1", "two", "1e3", "9" * 12, ""):
            assert client.get(f"/archive/2025-03-10?page={bad}").status_code == 404, bad
    assert sorted(seen) == [f"Paper number {i:04d}" for i in range(250)]  # each exactly once


def test_a_small_period_has_one_page_and_no_pager(settings: Settings, engine: Engine) -> None:
    sent_papers(engine, 3)
    with TestClient(create_app(settings, engine, WebOptions())) as client:
        status, tree = get(client, "/archive/2025-03-10")
        assert status == 200 and len(titles(tree)) == 3
        assert not tree.xpath("//nav[@class='pager']")
        assert client.get("/archive/2025-03-10?page=1").status_code == 200
        assert client.get("/archive/2025-03-10?page=2").status_code == 404


def test_page_size_is_an_option(settings: Settings, engine: Engine) -> None:
    sent_papers(engine, 5)
    with TestClient(create_app(settings, engine, WebOptions(archive_page_size=2))) as client:
        counts = [len(titles(get(client, f"/archive/2025-03-10?page={p}")[1])) for p in (1, 2, 3)]
    assert counts == [2, 2, 1]
