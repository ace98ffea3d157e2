"""News stories that name no paper (issue 12, B1): stored as news, told once, never a paper.

Digests are planned and written to the file outbox (the embedded default backend) against a
real database; each message is read back as a subscriber's mail client would.
"""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

from sqlalchemy import Engine, func, select

from crawler.db.engine import transaction
from crawler.db.models import DeliveryNews, NewsItem, utcnow
from crawler.db.news import store_news
from crawler.db.store import upsert
from crawler.items import NewsStory, Paper
from digests.preview import preview
from digests.send import send_digests
from tests.test_digest_send import base_sections, make_settings, paper, store, subscribe

WEEK1 = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
WEEK2 = WEEK1 + timedelta(days=7)
STORY = "https://www.sciencedaily.com/releases/2026/02/260227.htm"
OLD_STORY = "https://www.sciencedaily.com/releases/2026/02/260226.htm"


def news(url: str, headline: str, *topics: str, **fields: object) -> NewsStory:
    values: dict[str, object] = {
        "summary": "Walkers reported less pain after six months.",
        "outlet": "Example Health Trust",
        "published": date(2026, 2, 27),
    }
    values.update(fields)
    return NewsStory(
        source_id="sciencedaily-pain",
        url=url,
        headline=headline,
        topics=list(topics),
        **values,  # type: ignore[arg-type]
    )


def legacy_row(engine: Engine, at: datetime) -> list[int]:
    """A story naming no paper as versions before issue 12 stored it: a nameless paper."""
    row = Paper(
        source_id="sciencedaily-pain",
        origin="news",
        url=OLD_STORY,
        sighting_kind="news",
        seen_title="Old story: pain clinics try yoga",
        topics=["fibromyalgia"],
    )
    return upsert(engine, [row], now=at).paper_ids


def messages(outbox: Path) -> list[EmailMessage]:
    out = []
    for path in sorted(outbox.glob("*.eml")):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        out.append(msg)
    return out


def parts(msg: EmailMessage) -> tuple[str, str]:
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


def test_a_story_naming_no_paper_is_told_once_in_the_news(engine: Engine, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, engine, base_sections(tmp_path / "outbox"))
    subscribe(engine, "ada@example.org", topics=["fibromyalgia"])
    store(engine, [paper(1, "fibromyalgia")], WEEK1 - timedelta(days=1))
    assert (
        store_news(
            engine,
            [news(STORY, "Walking groups ease pain", "fibromyalgia")],
            now=WEEK1 - timedelta(hours=5),
        )
        == 1
    )
    store_news(
        engine,
        [news(STORY + "?x", "Lupus in mice", "autoimmunity")],
        now=WEEK1 - timedelta(hours=4),
    )
    legacy_row(engine, WEEK1 - timedelta(hours=3))

    assert send_digests(settings, engine, now=WEEK1).sent == 1
    [msg] = messages(tmp_path / "outbox")
    text, html = parts(msg)
    assert msg["Subject"] == "litwatch weekly digest: 1 new paper, 2 news stories (2026-03-02)"
    # Its own section, under its own headline, with where it ran and when.
    assert "\nIn the news\n-----------\n" in text
    assert text.index("Study 1 of widespread pain") < text.index("In the news")
    assert "Walking groups ease pain" in text
    assert "ScienceDaily · Example Health Trust · 27 Feb 2026" in text
    assert STORY in text and OLD_STORY in text
    assert "Old story: pain clinics try yoga" in text
    assert ">In the news<" in html and f'href="{STORY}"' in html
    assert "Walking groups ease pain</a>" in html
    # Never a nameless paper; off-topic news stays out.
    for part in (text, html):
        assert "(untitled)" not in part and "Lupus in mice" not in part
    assert "1 new paper<" in html

    # Told once: the next week's digest has the new paper and no old story.
    store(engine, [paper(2, "fibromyalgia")], WEEK2 - timedelta(days=1))
    assert send_digests(settings, engine, now=WEEK2).sent == 1
    second = messages(tmp_path / "outbox")[-1]
    text2, html2 = parts(second)
    assert "Study 2 of widespread pain" in text2
    assert "In the news" not in text2 and "In the news" not in html2
    with transaction(engine) as session:
        assert session.scalar(select(func.count()).select_from(DeliveryNews)) == 1


def test_news_alone_is_worth_a_digest(engine: Engine, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, engine, base_sections(tmp_path / "outbox"))
    subscribe(engine, "ada@example.org", topics=["fibromyalgia"])
    store_news(
        engine,
        [news(STORY, "Walking groups ease pain", "fibromyalgia")],
        now=WEEK1 - timedelta(hours=5),
    )
    assert send_digests(settings, engine, now=WEEK1).sent == 1
    [msg] = messages(tmp_path / "outbox")
    text, _html = parts(msg)
    assert msg["Subject"] == "litwatch weekly digest: 1 news story (2026-03-02)"
    assert "No new papers on your topics were added" in text
    assert "Walking groups ease pain" in text


def test_store_news_one_row_per_story(engine: Engine) -> None:
    first = news(STORY, "  Walking \x00groups\n ease pain ", "fibromyalgia", outlet="U" * 900)
    again = news(STORY, "Another headline for the same story", "autoimmunity")
    nameless = news(STORY + "#2", "", "fibromyalgia")
    too_long = news("https://example.org/" + "a" * 2000, "Long", "fibromyalgia")
    assert store_news(engine, [first, again, nameless, too_long], now=WEEK1) == 2
    assert store_news(engine, [again], now=WEEK2) == 0  # followed once: the first row stays
    with transaction(engine) as session:
        rows = {r.url: r for r in session.scalars(select(NewsItem))}
    assert set(rows) == {STORY, STORY + "#2"}
    row = rows[STORY]
    assert (row.headline, row.topics, len(row.outlet or "")) == (
        "Walking groups ease pain",
        ["fibromyalgia"],
        500,
    )
    assert row.published == date(2026, 2, 27) and row.first_seen == WEEK1
    assert rows[STORY + "#2"].headline == STORY + "#2"  # never nameless


def test_preview_shows_the_news_send_would_tell(engine: Engine, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, engine, base_sections(tmp_path / "outbox"))
    subscribe(engine, "ada@example.org", topics=["fibromyalgia"])
    store_news(
        engine,
        [news(STORY, "Walking groups ease pain", "fibromyalgia")],
        now=utcnow() - timedelta(hours=5),
    )
    shown = preview(settings, engine, email="ada@example.org", as_text=True)
    assert "In the news" in shown.body and "Walking groups ease pain" in shown.body
    assert "1 news story" in shown.subject
