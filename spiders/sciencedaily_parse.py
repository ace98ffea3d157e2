"""ScienceDaily parsers: news feeds to story links, story pages to the papers they cover.

Pure functions over bytes (no Scrapy, no database), so every rule is testable offline.

Site quirks (checked against saved feeds in the shared corpus and story pages of 2020-2021):

* Feed items link to the story on sciencedaily.com, never to the paper; the paper is only
  named on the story page, in ``div#journal_references`` (one ``<li>`` per paper):
  ``Authors, ... Last Author. <strong>Title</strong>. <i>Journal</i>, 2021; 131 (13)
  DOI: <a href="http://dx.doi.org/10.1172/JCI144201">10.1172/JCI144201</a>``.
* The author list may be elided with ``...``; the DOI may be a link or plain ``DOI:`` text;
  the year is the only date printed for the paper.
* Some stories have no reference block and mention the DOI only in the story text; some
  have no DOI at all.
* Feed descriptions end with an HTML comment ``<!-- more -->`` and use ``&#039;`` escapes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from time import struct_time
from typing import Any
from urllib.parse import urlsplit

import lxml.etree
import lxml.html
from w3lib.encoding import html_to_unicode

from crawler.items import Paper
from crawler.normalise import clean_doi, doi_key, find_dois, html_to_text, squash
from spiders.feed_safe import FeedError, safe_feedparser, text_construct

__all__ = [
    "UNREADABLE_STORY",
    "NewsFeedError",
    "NewsItem",
    "StoryMeta",
    "StoryPageError",
    "parse_news_feed",
    "parse_story",
    "story_summary",
]


#: The DOI count recorded for a story whose page could not be read (``followed_links.dois``):
#: it is followed-and-failed, never fetched again (issue 12 A9).
UNREADABLE_STORY = -1


class NewsFeedError(ValueError):
    """The body is not an RSS/Atom feed (an HTML error page, an empty answer)."""


class StoryPageError(ValueError):
    """The body is not a ScienceDaily story page (empty, or none of its landmarks)."""


@dataclass(frozen=True)
class NewsItem:
    """One feed entry: a link to a story page, with the feed's own text about it."""

    url: str
    title: str | None
    summary: str | None
    published: datetime | None
    guid: str


@dataclass(frozen=True)
class StoryMeta:
    """What a story page says about itself (not about the paper it covers)."""

    headline: str | None
    date_posted: date | None
    source: str | None
    abstract: str | None


# ---------------------------------------------------------------------------------------------
# Feeds


def parse_news_feed(body: bytes, base_url: str) -> list[NewsItem]:
    """Parse a ScienceDaily RSS feed into its entries, in feed order.

    Relative links are resolved against ``base_url``. Entries without an http(s) link are
    skipped: the spider fetches the link next, and a ``javascript:`` or empty link leads
    nowhere; so are links longer than :data:`MAX_STORY_URL`. Raises :class:`NewsFeedError`,
    and nothing else, when the body is not a feed at all or is unsafe (entity declarations).
    """
    # The same hardened entry to feedparser as journal feeds (entity declarations refused
    # after decoding, HTML and JSON refused).
    try:
        parsed = safe_feedparser(body, base_url)
    except FeedError as exc:
        raise NewsFeedError(f"not a news feed: {exc}") from None
    items = (_news_item(entry) for entry in parsed.entries)
    return [item for item in items if item is not None]


#: The longest story link followed: followed_links.url is String(2000), and a link that cannot
#: be recorded as followed would be fetched again on every poll (issue 12 A3).
MAX_STORY_URL = 2000


def _news_item(entry: Any) -> NewsItem | None:
    url = squash(entry.get("link"))
    if not url or len(url) > MAX_STORY_URL or _scheme(url) not in ("http", "https"):
        return None
    return NewsItem(
        url=url,
        title=text_construct(entry.get("title_detail")),
        summary=text_construct(entry.get("summary_detail")),
        published=_utc(entry.get("published_parsed") or entry.get("updated_parsed")),
        guid=squash(entry.get("id")) or url,
    )


def _scheme(url: str) -> str:
    try:
        return urlsplit(url).scheme
    except ValueError:  # "http://[broken": urllib rejects a malformed IPv6 host
        return ""


def _utc(parsed: struct_time | None) -> datetime | None:
    # feedparser has already converted the date to UTC (ScienceDaily writes "EST"/"EDT").
    if parsed is None:
        return None
    return datetime(*parsed[:6], tzinfo=UTC)


# ---------------------------------------------------------------------------------------------
# Story pages


def story_summary(body: bytes) -> StoryMeta:
    """The story's headline, posting date, source institution and summary.

    The summary is the journalist's, not the paper's abstract: never store it as one.
    """
    return _story_meta(_parse_page(body))


def parse_story(body: bytes, url: str, source_id: str) -> list[Paper]:
    """The papers a ScienceDaily story covers, one :class:`Paper` per paper.

    Every Paper has ``origin="news"``, ``sighting_kind="news"``, ``url`` = the story and
    ``seen_title`` = the headline. The rules, in order:

    1. Each ``<li>`` of ``#journal_references`` gives one Paper: DOI (the first link target
       that is a DOI, else the first in the printed text), title (``<strong>``), journal
       (``<i>``), authors (before the title, ``...`` elisions dropped) and ``published`` =
       1 January of the printed year: a year-only date, since the reference prints no month
       or day. A reference without a DOI is kept with its title, so the store can match the
       paper by title fingerprint; one naming neither DOI nor title is skipped (nothing could
       ever match it).
    2. Without a reference block, each distinct DOI in the story text (links included)
       gives a Paper with only that DOI.
    3. With neither, one Paper with no DOI and no title: the story is still recorded as news
       rather than dropped silently.

    Raises :class:`StoryPageError` when the body is not a story page.
    """
    root = _parse_page(body)
    headline = _story_meta(root).headline
    return [
        Paper(
            source_id=source_id,
            origin="news",
            url=url,
            sighting_kind="news",
            seen_title=headline,
            **fields,
        )
        for fields in _paper_fields(root)
    ]


def _paper_fields(root: lxml.html.HtmlElement) -> list[dict[str, Any]]:
    """The per-paper fields of a story, by the rules of :func:`parse_story`."""
    references = root.xpath('//*[@id="journal_references"]//li')
    if found := [fields for li in references if (fields := _reference(li))]:
        return found
    if dois := _story_text_dois(root):
        return [{"doi": doi} for doi in dois]
    return [{}]


def _parse_page(body: bytes) -> lxml.html.HtmlElement:
    # Decode first (BOM, then <meta charset>, else UTF-8): libxml2 alone would read a page
    # without a charset declaration as Latin-1.
    _encoding, text = html_to_unicode(None, body)
    if not text.strip():
        raise StoryPageError("empty story page")
    parser = lxml.html.HTMLParser(encoding="utf-8", no_network=True)
    try:
        root = lxml.html.document_fromstring(text.encode("utf-8"), parser=parser)
    except (lxml.etree.ParserError, ValueError) as exc:
        raise StoryPageError(f"unparseable story page: {exc}") from exc
    if root.find("body") is None:  # "<html><head><title id=headline>" (issue 12 A9)
        raise StoryPageError("no <body>: not a story page")
    landmarks = '//*[@id="headline" or @id="journal_references" or @id="story_text" or @id="text"]'
    if not root.xpath(landmarks):
        raise StoryPageError("no ScienceDaily story landmarks (#headline, #text, ...)")
    return root


def _story_meta(root: lxml.html.HtmlElement) -> StoryMeta:
    return StoryMeta(
        headline=_by_id(root, "headline"),
        date_posted=_story_date(_by_id(root, "date_posted")),
        source=_by_id(root, "source"),
        abstract=_by_id(root, "abstract"),
    )


def _by_id(root: lxml.html.HtmlElement, element_id: str) -> str | None:
    found = root.xpath("//*[@id=$id]", id=element_id)
    return _plain(found[0]) if found else None


def _plain(el: lxml.html.HtmlElement) -> str | None:
    """Plain text of an element: scripts dropped, entities decoded, markup gone.

    Serialising and re-reading reuses the project's single HTML-to-text rule; text that the
    page escaped ("&lt;script&gt;") comes back as the characters it shows.
    """
    return html_to_text(lxml.html.tostring(el, encoding="unicode", with_tail=False))


# Month names spelled out, not strptime("%B"), which follows the process locale.
_MONTH_NAMES = (
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
)  # fmt: skip
_MONTHS = {name: number for number, name in enumerate(_MONTH_NAMES, start=1)}
_STORY_DATE = re.compile(r"^([A-Za-z]+)\s+(\d{1,2}),\s*(\d{4})$")


def _story_date(text: str | None) -> date | None:
    """``"July 1, 2021"`` -> ``date(2021, 7, 1)``; English month names whatever the locale."""
    match = _STORY_DATE.match(text or "")
    if not match or match.group(1).lower() not in _MONTHS:
        return None
    try:
        return date(int(match.group(3)), _MONTHS[match.group(1).lower()], int(match.group(2)))
    except ValueError:  # "February 30, 2021"
        return None


# ---------------------------------------------------------------------------------------------
# Journal references

# The year follows the journal name: "<i>Journal</i>, 2021; 131 (13)". Without an <i>, the
# first "2021;" in the reference.
_YEAR_AFTER_JOURNAL = re.compile(r"^\W*((?:1[89]|20)\d{2})\b")
_YEAR_ANYWHERE = re.compile(r"\b((?:1[89]|20)\d{2})\s*;")
# Elisions in author lists: "Ulf Grote, ... Camilla I Svensson", "Wei Zhang, et al.".
_ELISION = re.compile(r"\.{3,}|…|\bet\.? al\b\.?", re.IGNORECASE)


def _reference(li: lxml.html.HtmlElement) -> dict[str, Any] | None:
    """The Paper fields of one reference ``<li>``; None when it names neither DOI nor title."""
    strong = _first(li.xpath("./strong|./b"))
    # The journal is the <i> after the title; an <i> inside the title is a species name.
    after_title = "./following-sibling::i[1]" if strong is not None else "./i[1]"
    journal = _first((strong if strong is not None else li).xpath(after_title))
    doi = _reference_doi(li)
    title = _plain(strong) if strong is not None else None
    if doi is None and title is None:
        return None
    return {
        "doi": doi,
        "title": title,
        "journal": _plain(journal) if journal is not None else None,
        "authors": _authors(li, strong),
        "published": _year_date(li, journal),
    }


def _first(found: list[lxml.html.HtmlElement]) -> lxml.html.HtmlElement | None:
    return found[0] if found else None


def _reference_doi(li: lxml.html.HtmlElement) -> str | None:
    """The first DOI in the reference, from link targets first, then the printed text.

    A reference names one paper; a second DOI there (rare) is ignored rather than turned
    into a second paper with the same title.
    """
    for href in li.xpath(".//a/@href"):
        if doi := clean_doi(href):
            return doi
    dois = find_dois(_plain(li))
    return dois[0] if dois else None


def _authors(li: lxml.html.HtmlElement, strong: lxml.html.HtmlElement | None) -> list[str]:
    """The comma-separated names before the title; "..." and "et al." are dropped."""
    if strong is None:
        return []  # without the <strong> there is no telling where the authors end
    before = [li.text or ""]
    for sibling in strong.itersiblings(preceding=True):  # nearest first: insert in front
        before.insert(1, _inline_text(sibling) + (sibling.tail or ""))
    # An elision separates names like a comma does; the "." after the last name ends the list.
    text = _ELISION.sub(",", squash("".join(before)) or "")
    names = (squash(name.strip().removesuffix(".")) for name in text.split(","))
    return [name for name in names if name]


def _inline_text(el: lxml.html.HtmlElement) -> str:
    # Comments and scripts are not names; other inline markup keeps its text.
    if not isinstance(el.tag, str) or el.tag in ("script", "style"):
        return ""
    return el.text_content() or ""


def _year_date(li: lxml.html.HtmlElement, journal: lxml.html.HtmlElement | None) -> date | None:
    """1 January of the reference's year: a year-only date (the reference prints no more)."""
    match = _YEAR_AFTER_JOURNAL.match(journal.tail or "") if journal is not None else None
    match = match or _YEAR_ANYWHERE.search(_plain(li) or "")
    return date(int(match.group(1)), 1, 1) if match else None


# ---------------------------------------------------------------------------------------------
# DOIs in the story text (no reference block)


def _story_text_dois(root: lxml.html.HtmlElement) -> list[str]:
    """Distinct DOIs in the story text, or in the whole page when it has no story text.

    Printed DOIs come first, then link targets: stories also link "the study" to doi.org.
    """
    region = _first(root.xpath('//*[@id="story_text"]|//*[@id="text"]'))
    if region is None:  # an element's truth value is its child count: test for None
        region = root
    found = find_dois(_plain(region))
    found += [doi for href in region.xpath(".//a/@href") if (doi := clean_doi(href))]
    unique: dict[str, str] = {}
    for doi in found:
        unique.setdefault(doi_key(doi) or doi, doi)
    return list(unique.values())
