"""Hostile feeds: author fields that made feedparser quadratic (issue 12 A4).

feedparser runs every author string through an e-mail regular expression whose time grows with
the square of a run of e-mail characters: 80 KB in one ``dc:creator`` took 49 s, 1 MB about two
hours, stalling every source of the crawl. ``spiders.feed_safe`` bounds author text before
feedparser sees it. Each parse runs in a forked child so that a regression fails in seconds
instead of hanging the suite.
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from spiders.feed_parse import FeedError, parse_feed
from spiders.feed_safe import bound_author_text
from tests.support.corpus import CORPUS

MB = 1_000_000
RSS = (
    '<?xml version="1.0"?><rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/">'
    "<channel><title>Hostile</title>{items}</channel></rss>"
)
ATOM = (
    '<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>Hostile</title>'
    "{items}</feed>"
)


def rss_item(i: int, author_xml: str) -> str:
    return f"<item><title>Paper {i}</title><link>https://example.org/{i}</link>{author_xml}</item>"


def _timed_parse(body: bytes, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    start = time.perf_counter()
    try:
        count = len(parse_feed(body, "https://example.org/feed", "hostile").papers)
    except FeedError:
        count = -1
    out.put((time.perf_counter() - start, count))


def parse_within(body: bytes, limit: float = 2.0) -> int:
    """Papers parsed from ``body`` (-1 for FeedError), failing unless it took under ``limit`` s."""
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_timed_parse, args=(body, out))
    child.start()
    child.join(timeout=limit * 5)  # the parse is timed in the child; this only stops a hang
    if child.is_alive():
        child.kill()
        child.join()
        pytest.fail(f"parsing a {len(body):,}-byte feed took over {limit * 5} s")
    elapsed, count = out.get(timeout=5)
    assert elapsed < limit, f"parsing took {elapsed:.1f} s"
    return int(count)


@pytest.mark.parametrize(
    "author_xml",
    [
        "<dc:creator>" + "A" * MB + "</dc:creator>",
        "<author>" + "x" * MB + " (someone@example.org)</author>",
        "<managingEditor>" + "B" * MB + "</managingEditor>",
        "<author><unknown>" + "C" * MB + "</unknown></author>",
        "<dc:creator><![CDATA[" + "D" * MB + "]]></dc:creator>",
    ],
    ids=["dc-creator", "author-email", "managing-editor", "nested-child", "cdata"],
)
def test_a_one_megabyte_author_string_parses_in_under_two_seconds(author_xml: str) -> None:
    body = RSS.format(items=rss_item(1, author_xml) + rss_item(2, "")).encode()
    assert parse_within(body) == 2  # both items kept; only the author text was bounded


def test_a_one_megabyte_atom_author_name_parses_in_under_two_seconds() -> None:
    entry = (
        '<entry><title>Paper</title><link href="https://example.org/1"/>'
        "<author><name>" + "E" * MB + "</name></author></entry>"
    )
    assert parse_within(ATOM.format(items=entry).encode()) == 1


def test_many_long_author_fields_stay_linear() -> None:
    """A megabyte spread over 250 items of 4 KB, each run just under the per-run bound."""
    name = ("A" * 64 + " ") * 60
    items = "".join(rss_item(i, f"<dc:creator>{name}</dc:creator>") for i in range(250))
    assert parse_within(RSS.format(items=items).encode()) == 250


def test_an_unclosed_author_element_is_bounded_too() -> None:
    body = RSS.format(items=rss_item(1, "")).encode()[:-20] + b"<dc:creator>" + b"F" * MB
    assert parse_within(body) in (-1, 1)


def test_ordinary_authors_pass_through_untouched() -> None:
    body = RSS.format(
        items=rss_item(1, "<dc:creator>Ann Smith, Bob Jones</dc:creator>")
        + rss_item(2, "<author>ann.smith@example.org (Ann Smith)</author>")
    ).encode()
    assert bound_author_text(body) is body
    papers = parse_feed(body, "https://example.org/feed", "plain").papers
    assert papers[0].authors == ["Ann Smith", "Bob Jones"]


def test_real_feeds_pass_through_untouched() -> None:
    files = sorted((CORPUS / "journal_feeds").glob("*.xml")) + sorted(
        (CORPUS / "sciencedaily").glob("*.xml")
    )
    if not files:
        pytest.skip("shared corpus not available")
    for path in files:
        body = Path(path).read_bytes()
        assert bound_author_text(body) is body, path.name
