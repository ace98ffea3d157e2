"""Atom 1.0 feeds (RFC 4287) of recently found papers, for people who prefer a feed reader.

Built with lxml's element API, so every text and attribute is escaped by the serialiser.
Characters XML 1.0 cannot carry at all (control characters from a publisher's feed, lone
surrogates) are dropped first: lxml refuses them rather than escaping them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from urllib.parse import urlsplit

from lxml import etree
from sqlalchemy import select
from sqlalchemy.orm import Session

from crawler.db.models import NewsItem, PaperRow, PaperTopic
from digests.model import Entry, NewsEntry
from digests.render import format_day, http_url
from digests.selection import entries_for, news_entries

ATOM_NS = "http://www.w3.org/2005/Atom"
MEDIA_TYPE = "application/atom+xml; charset=utf-8"
DEFAULT_SIZE = 100

# XML 1.0 section 2.2 "Char": tab, LF, CR and U+0020 upward, minus surrogates, FFFE and FFFF.
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True)
class FeedItem:
    """One paper (or news story) in a feed: its entry plus when it was found and changed."""

    entry: Entry | NewsEntry
    first_seen: datetime
    updated: datetime


@dataclass(frozen=True)
class FeedInfo:
    """The feed's own metadata."""

    feed_id: str
    title: str
    self_url: str
    home_url: str
    subtitle: str = ""


def xml_text(value: str | None) -> str:
    """``value`` with the characters XML 1.0 cannot represent removed ("" for None)."""
    return _NOT_XML.sub("", value or "")


def rfc3339(moment: datetime) -> str:
    """An Atom date (RFC 3339, UTC, whole seconds)."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def recent_items(session: Session, topic: str | None, limit: int = DEFAULT_SIZE) -> list[FeedItem]:
    """The ``limit`` most recently found papers (on ``topic``, or all), newest first."""
    stmt = select(PaperRow.id, PaperRow.first_seen, PaperRow.updated)
    if topic is not None:
        stmt = stmt.where(
            PaperRow.id.in_(select(PaperTopic.paper_id).where(PaperTopic.topic == topic))
        )
    rows = session.execute(
        stmt.order_by(PaperRow.first_seen.desc(), PaperRow.id.desc()).limit(limit)
    ).all()
    entries = {e.paper_id: e for e in entries_for(session, [r.id for r in rows])}
    papers = [FeedItem(entries[r.id], r.first_seen, r.updated) for r in rows if r.id in entries]
    both = papers + _recent_news(session, topic, limit)
    return sorted(both, key=lambda item: item.first_seen, reverse=True)[:limit]


def _recent_news(session: Session, topic: str | None, limit: int) -> list[FeedItem]:
    """The ``limit`` newest news stories naming no paper (on ``topic``, or all)."""
    stmt = select(NewsItem.id, NewsItem.topics, NewsItem.first_seen).order_by(
        NewsItem.first_seen.desc(), NewsItem.id.desc()
    )
    found: list[tuple[int, datetime]] = []
    # Topics are a JSON list: matched here, reading newest first until enough are found.
    for row in session.execute(stmt.execution_options(yield_per=200)):
        if topic is None or topic in (row.topics or ()):
            found.append((row.id, row.first_seen))
            if len(found) >= limit:
                break
    stories = {n.news_id: n for n in news_entries(session, [nid for nid, _ in found])}
    return [FeedItem(stories[nid], seen, seen) for nid, seen in found if nid in stories]


def entry_id(entry: Entry, host: str) -> str:
    """A permanent entry id: a tag URI (RFC 4151) over the paper's internal id.

    RFC 4287 4.2.6: an entry's id never changes. A DOI or PubMed URL would: a PMID-only paper
    that later learns its DOI would come back under a new id and readers would show it twice.
    The store's id is fixed when the paper is first stored, hence when the entry is first
    published (two papers found to be one keep the surviving paper's id).
    """
    return f"tag:{host},2026:paper/{entry.paper_id}"


def etag(body: bytes) -> str:
    """A strong entity tag over the document (RFC 9110 8.8.3): same bytes, same tag."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def http_date(moment: datetime) -> str:
    """``Last-Modified`` form of ``moment`` (RFC 9110 5.6.7, IMF-fixdate)."""
    return format_datetime(moment.astimezone(UTC), usegmt=True)


def last_modified(items: Sequence[FeedItem], now: datetime) -> datetime:
    """When the feed last changed: its newest entry's update, whole seconds (as ``updated``)."""
    newest = max((item.updated for item in items), default=now)
    return newest.astimezone(UTC).replace(microsecond=0)


def not_modified(
    if_none_match: str | None, if_modified_since: str | None, tag: str, modified: datetime
) -> bool:
    """Whether a conditional GET may be answered 304 (RFC 9110 13.1.2, 13.1.3, 13.2.2).

    ``If-None-Match`` wins when present (weak comparison, a list or ``*``); otherwise
    ``If-Modified-Since`` at or after the last change. An unparseable date is ignored.
    """
    if if_none_match is not None:
        wanted = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
        return "*" in wanted or tag in wanted
    if not if_modified_since:
        return False
    try:
        since = parsedate_to_datetime(if_modified_since)
    except (TypeError, ValueError):
        return False
    if since.tzinfo is None:  # RFC 850 / asctime forms carry no zone: they are GMT
        since = since.replace(tzinfo=UTC)
    return modified <= since


def build_feed(info: FeedInfo, items: Sequence[FeedItem], now: datetime) -> bytes:
    """The Atom document as UTF-8 bytes with an XML declaration."""
    feed = etree.Element(f"{{{ATOM_NS}}}feed", nsmap={None: ATOM_NS})
    _text(feed, "id", info.feed_id)
    _text(feed, "title", info.title)
    if info.subtitle:
        _text(feed, "subtitle", info.subtitle)
    _text(feed, "updated", rfc3339(last_modified(items, now)))
    _link(feed, info.self_url, "self", MEDIA_TYPE.split(";")[0])
    _link(feed, info.home_url, "alternate", "text/html")
    author = etree.SubElement(feed, f"{{{ATOM_NS}}}author")
    _text(author, "name", "litwatch")
    _text(feed, "generator", "litwatch")
    host = urlsplit(info.home_url).hostname or "localhost"
    for item in items:
        _entry(feed, item, host)
    return bytes(etree.tostring(feed, xml_declaration=True, encoding="utf-8"))


def news_id(story: NewsEntry, host: str) -> str:
    """A permanent id for a news story: a tag URI over its ``news_items`` id.

    A story an older version stored as a paper keeps its paper id (see :func:`entry_id`).
    """
    if story.news_id is None:
        return f"tag:{host},2026:paper/{story.paper_id}"
    return f"tag:{host},2026:news/{story.news_id}"


def _entry(feed: etree._Element, item: FeedItem, host: str) -> None:
    e = item.entry
    story = e if isinstance(e, NewsEntry) else e.story
    if story is not None:
        _news_entry(feed, story, item, host)
        return
    assert isinstance(e, Entry)
    node = etree.SubElement(feed, f"{{{ATOM_NS}}}entry")
    _text(node, "id", entry_id(e, host))
    _text(node, "title", e.title)
    _text(node, "published", rfc3339(item.first_seen))
    _text(node, "updated", rfc3339(item.updated))
    link = http_url(e.doi_url) or http_url(e.url)
    if link:
        _link(node, link, "alternate", "text/html")
    for name in e.authors[:3] if e.authors else ():
        if xml_text(name).strip():
            author = etree.SubElement(node, f"{{{ATOM_NS}}}author")
            _text(author, "name", name)
    for topic in e.topics:
        etree.SubElement(node, f"{{{ATOM_NS}}}category", term=xml_text(topic))
    summary = " — ".join(p for p in (e.journal, e.excerpt) if p)
    if summary:
        _text(node, "summary", summary)


def _news_entry(feed: etree._Element, story: NewsEntry, item: FeedItem, host: str) -> None:
    """A news story as such: its headline, where it ran and when; category ``news``."""
    node = etree.SubElement(feed, f"{{{ATOM_NS}}}entry")
    _text(node, "id", news_id(story, host))
    _text(node, "title", story.headline)
    _text(node, "published", rfc3339(item.first_seen))
    _text(node, "updated", rfc3339(item.updated))
    link = http_url(story.url)
    if link:
        _link(node, link, "alternate", "text/html")
    author = etree.SubElement(node, f"{{{ATOM_NS}}}author")
    _text(author, "name", story.credit or "News")
    etree.SubElement(node, f"{{{ATOM_NS}}}category", term="news", label="In the news")
    for topic in story.topics:
        etree.SubElement(node, f"{{{ATOM_NS}}}category", term=xml_text(topic))
    dated = " · ".join(p for p in ("In the news", story.credit, format_day(story.published)) if p)
    _text(node, "summary", " — ".join(p for p in (dated, story.excerpt) if p))


def _text(parent: etree._Element, tag: str, value: str) -> None:
    child = etree.SubElement(parent, f"{{{ATOM_NS}}}{tag}")
    child.text = xml_text(value)
    if tag in ("title", "summary", "subtitle"):
        child.set("type", "text")  # plain text: readers must not interpret it as HTML


def _link(parent: etree._Element, href: str, rel: str, media_type: str) -> None:
    etree.SubElement(parent, f"{{{ATOM_NS}}}link", href=xml_text(href), rel=rel, type=media_type)
