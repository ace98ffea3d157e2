"""Atom feeds (digests.feeds and /feed*.atom): validity, order, links and escaping.

Every feed is parsed back twice: with feedparser (what feed readers do: it must see Atom 1.0
and no error) and with lxml (to check the exact XML text, which feedparser would rewrite).
"""

from __future__ import annotations

import warnings
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import feedparser
import pytest
from lxml import etree
from sqlalchemy import Engine

from crawler.db.news import store_news
from crawler.db.store import upsert
from crawler.items import NewsStory, Paper
from crawler.settings import Settings, load_settings
from digests.feeds import ATOM_NS, FeedInfo, FeedItem, build_feed, rfc3339, xml_text
from digests.model import Entry
from digests.web import WebOptions, create_app

with warnings.catch_warnings():
    # starlette 0.52's testclient names an alias newer anyio deprecates (not ours to fix).
    warnings.simplefilter("ignore", DeprecationWarning)
    from starlette.testclient import TestClient

A = f"{{{ATOM_NS}}}"
NOW = datetime(2025, 3, 10, 7, 0, tzinfo=UTC)
HOSTILE = '<script>alert(1)</script> IL-6 <5 pg/mL & "TNF" \x00\x1b[31m\ufffe end'
INFO = FeedInfo(
    feed_id="https://litwatch.example.org/feed.atom",
    title="litwatch: new papers",
    self_url="https://litwatch.example.org/feed.atom",
    home_url="https://litwatch.example.org/archive",
)


def entry(paper_id: int, title: str, **extra: Any) -> Entry:
    values: dict[str, Any] = {
        "paper_id": paper_id,
        "title": title,
        "url": "",
        "doi": None,
        "pmid": None,
        "pmcid": None,
        "authors": (),
        "journal": None,
        "published": None,
        "publication_types": (),
        "topics": ("fibromyalgia",),
        "abstract": None,
        "press": (),
        "preprint": False,
    }
    values.update(extra)
    return Entry(**values)


def item(e: Entry, hours_ago: int = 0) -> FeedItem:
    seen = NOW - timedelta(hours=hours_ago)
    return FeedItem(e, seen, seen + timedelta(minutes=5))


def parse(body: bytes) -> Any:
    parsed = feedparser.parse(body)
    assert parsed.version == "atom10"
    assert not parsed.bozo, parsed.get("bozo_exception")
    return parsed


def test_build_feed_is_valid_atom_with_required_elements() -> None:
    e = entry(
        1,
        "Sleep and pain",
        doi="10.1000/ABC(1)2",
        url="https://doi.org/10.1000/ABC(1)2",
        pmid="123",
        authors=("Ann Smith", "Bo Li", "Cy Diaz", "Dee Ek"),
        journal="Pain",
        abstract="Background: word " * 40,
        topics=("autoimmunity", "fibromyalgia"),
    )
    body = build_feed(INFO, [item(e)], NOW)
    assert body.startswith(b"<?xml version='1.0' encoding='utf-8'?>")
    feed = parse(body)
    assert feed.feed.title == "litwatch: new papers"
    assert feed.feed.id == INFO.feed_id
    (got,) = feed.entries
    assert got.id == "tag:litwatch.example.org,2026:paper/1"  # fixed, not the DOI (RFC 4287)
    assert got.link == "https://doi.org/10.1000/ABC(1)2"
    assert [a.name for a in got.authors] == ["Ann Smith", "Bo Li", "Cy Diaz"]
    assert sorted(t.term for t in got.tags) == ["autoimmunity", "fibromyalgia"]
    assert got.summary.startswith("Pain — Background: word")
    assert got.summary.endswith("…") and len(got.summary) < 320
    assert got.published == "2025-03-10T07:00:00Z"
    assert got.updated == "2025-03-10T07:05:00Z"
    root = etree.fromstring(body)
    # RFC 4287 4.1.1: feed needs id, title, updated, and an author (or one in every entry).
    for name in ("id", "title", "updated", "author"):
        assert root.find(A + name) is not None, name
    assert root.find(A + "link[@rel='self']").get("href") == INFO.self_url


def test_hostile_text_is_escaped_and_unrepresentable_characters_dropped() -> None:
    e = entry(2, HOSTILE, doi="10.1000/x", abstract=HOSTILE, journal="J <b>bold</b>")
    body = build_feed(INFO, [item(e)], NOW)
    root = etree.fromstring(body)
    node = root.find(A + "entry")
    assert node is not None
    title = node.find(A + "title")
    assert title is not None and title.get("type") == "text"
    expected = '<script>alert(1)</script> IL-6 <5 pg/mL & "TNF" [31m end'
    assert title.text == expected
    assert b"<script>" not in body and b"&lt;script&gt;" in body
    assert root.find(f".//{A}summary").text.startswith("J <b>bold</b> — <script>")
    assert not root.xpath("//*[local-name()='script' or local-name()='b']")
    parse(body)


def test_entry_ids_and_links_without_a_doi() -> None:
    pubmed_only = entry(
        3, "PubMed only", pmid="38000001", url="https://pubmed.ncbi.nlm.nih.gov/38000001/"
    )
    nothing = entry(4, "Seen in a bad feed", url="javascript:alert(1)")
    body = build_feed(INFO, [item(pubmed_only), item(nothing, 1)], NOW)
    feed = parse(body)
    first, second = feed.entries
    assert first.id == "tag:litwatch.example.org,2026:paper/3"
    assert first.link == "https://pubmed.ncbi.nlm.nih.gov/38000001/"
    assert second.id == "tag:litwatch.example.org,2026:paper/4"
    assert b"javascript:" not in body
    node = etree.fromstring(body).findall(A + "entry")[1]
    assert node.find(A + "link") is None


def test_empty_feed_is_valid_and_dated_now() -> None:
    feed = parse(build_feed(INFO, [], NOW))
    assert feed.entries == []
    assert feed.feed.updated == rfc3339(NOW) == "2025-03-10T07:00:00Z"


def test_xml_text_keeps_every_legal_character() -> None:
    legal = "tab\t nl\n é ß 中 \U0001f600 \ud7ff \ue000"
    assert xml_text(legal) == legal
    assert xml_text("a\x00b\x08c\x1fd\ufffeE\uffff") == "abcdE"
    assert xml_text(None) == ""


# --- over HTTP, from the database -------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    cfg = tmp_path / "litwatch.toml"
    cfg.write_text('[web]\nbase_url = "https://lw.example.org/litwatch"\n', encoding="utf-8")
    return load_settings(cfg, environ={})


def store(engine: Engine, title: str, doi: str, topics: list[str], hours_ago: int) -> None:
    paper = Paper(
        source_id="pubmed",
        origin="pubmed",
        doi=doi,
        title=title,
        abstract=f"Abstract of {title}.",
        journal="Journal of Tests",
        published=date(2025, 3, 1),
        topics=topics,
    )
    upsert(engine, [paper], now=NOW - timedelta(hours=hours_ago))


def test_feeds_over_http(settings: Settings, engine: Engine) -> None:
    # PostgreSQL text cannot hold NUL at all; the other unrepresentable characters stay.
    stored_title = HOSTILE.replace("\x00", "")
    store(engine, "Oldest fibro", "10.1000/f.1", ["fibromyalgia"], 30)
    store(engine, stored_title, "10.1000/a.2", ["autoimmunity"], 20)
    store(engine, "Both topics", "10.1000/b.3", ["fibromyalgia", "autoimmunity"], 10)
    store(engine, "Newest fibro", "10.1000/f.4", ["fibromyalgia"], 1)
    with TestClient(create_app(settings, engine)) as client:
        everything = client.get("/feed.atom")
        fibro = client.get("/feed/fibromyalgia.atom")
        unknown = client.get("/feed/astrology.atom")
    assert everything.headers["content-type"] == "application/atom+xml; charset=utf-8"
    assert everything.headers["x-content-type-options"] == "nosniff"
    all_feed = parse(everything.content)
    assert [e.link for e in all_feed.entries] == [
        "https://doi.org/10.1000/f.4",
        "https://doi.org/10.1000/b.3",
        "https://doi.org/10.1000/a.2",
        "https://doi.org/10.1000/f.1",
    ]
    assert all_feed.feed.id == "https://lw.example.org/litwatch/feed.atom"
    hostile = etree.fromstring(everything.content).findall(A + "entry")[2].find(A + "title")
    assert hostile is not None and hostile.text == xml_text(stored_title)
    assert "\x1b" in stored_title and "\x1b" not in hostile.text
    fibro_feed = parse(fibro.content)
    assert [e.title for e in fibro_feed.entries] == ["Newest fibro", "Both topics", "Oldest fibro"]
    assert fibro_feed.feed.title == "litwatch: new papers on Fibromyalgia"
    assert fibro_feed.entries[0].summary == "Journal of Tests — Abstract of Newest fibro."
    assert unknown.status_code == 404


def test_feed_size_is_capped_newest_first(settings: Settings, engine: Engine) -> None:
    for n in range(5):
        store(engine, f"Paper {n}", f"10.1000/n.{n}", ["fibromyalgia"], 10 - n)
    with TestClient(create_app(settings, engine, WebOptions(feed_size=3))) as client:
        feed = parse(client.get("/feed/fibromyalgia.atom").content)
    assert [e.title for e in feed.entries] == ["Paper 4", "Paper 3", "Paper 2"]


def test_entry_id_stays_when_a_paper_learns_its_doi(settings: Settings, engine: Engine) -> None:
    """RFC 4287 4.2.6: a PMID-only paper that later gets its DOI keeps its entry id."""
    pubmed = Paper(
        source_id="pubmed", origin="pubmed", pmid="38000001", title="Grows", topics=["fibromyalgia"]
    )
    upsert(engine, [pubmed], now=NOW - timedelta(hours=2))
    with TestClient(create_app(settings, engine)) as client:
        before = parse(client.get("/feed.atom").content).entries
        feed = Paper(
            source_id="journal", origin="feed", doi="10.1000/grows", title="Grows", topics=[]
        )
        upsert(engine, [Paper(**{**vars(pubmed), "doi": "10.1000/grows"}), feed], now=NOW)
        after = parse(client.get("/feed.atom").content).entries
    assert len(before) == len(after) == 1
    assert before[0].link == "https://pubmed.ncbi.nlm.nih.gov/38000001/"
    assert after[0].link == "https://doi.org/10.1000/grows"  # the link may change ...
    assert before[0].id == after[0].id  # ... the id never does
    assert after[0].id.startswith("tag:lw.example.org,2026:paper/")


def test_feeds_answer_conditional_requests(settings: Settings, engine: Engine) -> None:
    """ETag and Last-Modified on every feed; If-None-Match / If-Modified-Since give a 304."""
    store(engine, "First", "10.1000/c.1", ["fibromyalgia"], 3)
    with TestClient(create_app(settings, engine)) as client:
        first = client.get("/feed/fibromyalgia.atom")
        tag, modified = first.headers["etag"], first.headers["last-modified"]
        assert first.status_code == 200 and tag.startswith('"')
        # Last-Modified is the newest entry's update (stored at first sight), as an HTTP-date.
        assert modified == "Mon, 10 Mar 2025 04:00:00 GMT"
        same = client.get("/feed/fibromyalgia.atom", headers={"If-None-Match": tag})
        listed = client.get(
            "/feed/fibromyalgia.atom", headers={"If-None-Match": f'"other", W/{tag}'}
        )
        since = client.get("/feed/fibromyalgia.atom", headers={"If-Modified-Since": modified})
        stale = client.get(
            "/feed/fibromyalgia.atom",
            headers={"If-Modified-Since": "Mon, 10 Mar 2025 03:59:59 GMT"},
        )
        wrong_tag = client.get(
            "/feed/fibromyalgia.atom",
            headers={"If-None-Match": '"other"', "If-Modified-Since": modified},
        )
        bad_date = client.get("/feed/fibromyalgia.atom", headers={"If-Modified-Since": "soon"})
        store(engine, "Second", "10.1000/c.2", ["fibromyalgia"], 1)
        changed = client.get("/feed/fibromyalgia.atom", headers={"If-None-Match": tag})
        other_feed = client.get("/feed.atom", headers={"If-None-Match": tag})
    for answer in (same, listed, since):
        assert answer.status_code == 304 and answer.content == b""
        assert answer.headers["etag"] == tag and answer.headers["last-modified"] == modified
    for answer in (stale, wrong_tag, bad_date):
        assert answer.status_code == 200 and answer.content == first.content
    assert changed.status_code == 200 and changed.headers["etag"] != tag
    assert changed.headers["last-modified"] == "Mon, 10 Mar 2025 06:00:00 GMT"
    assert [e.title for e in parse(changed.content).entries] == ["Second", "First"]
    assert other_feed.status_code == 200  # a tag of one feed means nothing to another


def test_news_stories_are_news_in_the_feeds(settings: Settings, engine: Engine) -> None:
    """Issue 12 B1: a story naming no paper is a news entry, never "(untitled)"."""
    store(engine, "A real paper", "10.1000/r.1", ["fibromyalgia"], 3)
    story = NewsStory(
        source_id="sciencedaily-pain",
        url="https://www.sciencedaily.com/releases/2025/03/250309.htm",
        headline="Walking groups ease pain",
        summary="Walkers reported less pain.",
        outlet="Example Health Trust",
        published=date(2025, 3, 9),
        topics=["fibromyalgia"],
    )
    lupus = NewsStory(
        source_id="sciencedaily-immune",
        url="https://www.sciencedaily.com/releases/2025/03/250308.htm",
        headline="Lupus in mice",
        topics=["autoimmunity"],
    )
    store_news(engine, [story], now=NOW - timedelta(hours=2))
    store_news(engine, [lupus], now=NOW - timedelta(hours=4))
    old = Paper(  # what versions before issue 12 stored for such a story
        source_id="sciencedaily-pain",
        origin="news",
        url="https://www.sciencedaily.com/releases/2025/03/250307.htm",
        sighting_kind="news",
        seen_title="Yoga in pain clinics",
        topics=["fibromyalgia"],
    )
    upsert(engine, [old], now=NOW - timedelta(hours=1))
    with TestClient(create_app(settings, engine)) as client:
        everything = parse(client.get("/feed.atom").content)
        fibro = client.get("/feed/fibromyalgia.atom")
    assert [e.title for e in everything.entries] == [
        "Yoga in pain clinics",
        "Walking groups ease pain",
        "A real paper",
        "Lupus in mice",
    ]
    fibro_feed = parse(fibro.content)
    assert [e.title for e in fibro_feed.entries] == [
        "Yoga in pain clinics",
        "Walking groups ease pain",
        "A real paper",
    ]
    legacy, news, paper = fibro_feed.entries
    assert b"(untitled)" not in fibro.content
    assert news.id.startswith("tag:lw.example.org,2026:news/")
    assert legacy.id.startswith("tag:lw.example.org,2026:paper/")
    assert paper.id.startswith("tag:lw.example.org,2026:paper/")
    assert news.link == story.url and legacy.link == old.url
    assert news.summary == (
        "In the news · ScienceDaily · Example Health Trust · 9 Mar 2025"
        " — Walkers reported less pain."
    )
    assert {t.term for t in news.tags} == {"news", "fibromyalgia"}
    assert "news" not in {t.term for t in paper.get("tags", [])}
