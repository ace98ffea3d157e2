"""The owner of ``news_items``: press coverage that names no paper, one row per story URL.

A story that names a paper (DOI, PMID or title) is a sighting of that paper and goes through
:mod:`crawler.db.store`; one that names none is stored here instead, so that it is shown
under its own headline and never as a nameless paper. A story is followed once, ever, so a
URL seen again (another feed, a rerun after a crash) leaves the first row as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from crawler import normalise
from crawler.db.engine import insert_ignore, transaction
from crawler.db.models import NewsItem, utcnow
from crawler.items import NewsStory

#: Column bounds (crawler/db/models.py): PostgreSQL refuses longer values, so a value is
#: cut (outlet) or the story skipped (a URL that long is not one anybody can open).
_URL_MAX = 2000
_SOURCE_MAX = 64
_OUTLET_MAX = 500


def store_news(engine: Engine, stories: Sequence[NewsStory], *, now: datetime | None = None) -> int:
    """Store ``stories`` in one transaction; return how many were new."""
    rows = [row for story in stories if (row := _row(story, now or utcnow())) is not None]
    if not rows:
        return 0
    with transaction(engine) as session:
        return insert_ignore(session, NewsItem, _unique(rows), returning="id")


def _row(story: NewsStory, now: datetime) -> dict[str, Any] | None:
    url = _text(story.url)
    if not url or len(url) > _URL_MAX:
        return None
    return {
        "url": url,
        "source_id": _text(story.source_id)[:_SOURCE_MAX],
        # Never nameless: a story without a headline is listed under its address.
        "headline": _text(story.headline) or url,
        "summary": _text(story.summary) or None,
        "outlet": _text(story.outlet)[:_OUTLET_MAX] or None,
        "published": story.published,
        "topics": [_text(t) for t in story.topics if _text(t)],
        "first_seen": now,
    }


def _text(value: str | None) -> str:
    # White space squashed and NUL dropped (PostgreSQL text cannot hold it), as for papers.
    return normalise.squash(value) or ""


def _unique(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # PostgreSQL refuses one statement that conflicts with itself; keep each URL's first row.
    by_url: dict[str, dict[str, Any]] = {}
    for row in rows:
        by_url.setdefault(row["url"], row)
    return list(by_url.values())
