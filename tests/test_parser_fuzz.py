"""Bounded fuzzing of every network parser: any bytes give items or the parser's one error.

Issue 12 A9: a story page without <body> raised AssertionError, feedparser a KeyError on
``<channel<item<link</item</link>``, and ``spiders.eutils`` a RecursionError, each failing a
source on every poll. Each parser gets raw bytes, and tag soup drawn from the vocabulary of
its format (so that the code past the envelope checks is reached), plus the inputs that broke
it. 200 examples per property, no deadline, derandomized: CI runs the same cases every time.
"""

from __future__ import annotations

import json
from typing import Any

import lxml.etree
import pytest

from crawler.items import Paper
from spiders.eutils import ESearchResult, parse_esearch
from spiders.feed_parse import FeedError, FeedResult, parse_feed
from spiders.pubmed_xml import EFetchError, iter_efetch
from spiders.sciencedaily_parse import (
    NewsFeedError,
    NewsItem,
    StoryPageError,
    parse_news_feed,
    parse_story,
)
from tests.support.fuzz import given, settings, st

FUZZ = settings(max_examples=200, deadline=None, database=None, derandomize=True)
BASE = "https://feeds.example.org/rss.xml"


def soup(tokens: list[str], max_size: int = 40) -> Any:
    """Documents made of format tokens and bits of text, in any order."""
    token = st.sampled_from(tokens) | st.text(max_size=8)
    return st.lists(token, max_size=max_size).map(lambda parts: "".join(parts).encode())


_FEED_TOKENS = [
    '<?xml version="1.0" encoding="utf-8"?>', '<rss version="2.0">', "</rss>",
    '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
    'xmlns="http://purl.org/rss/1.0/">', "</rdf:RDF>",
    '<feed xmlns="http://www.w3.org/2005/Atom">', "</feed>", "<channel>", "</channel>",
    "<channel", "<item>", "</item>", "<item", "<entry>", "</entry>", "<title>", "</title>",
    '<title type="html">', "<link>", "</link>", "<link", '<link href="/a?b=1"/>', "<guid>",
    "</guid>", "<description>", "</description>", "<dc:creator>", "</dc:creator>",
    '<dc:creator xmlns:dc="http://purl.org/dc/elements/1.1/">', "<author>", "</author>",
    "<name>", "</name>", "<email>", "</email>", "<pubDate>", "</pubDate>",
    "<prism:doi>", "</prism:doi>", "<dc:identifier>", "</dc:identifier>", "<content:encoded>",
    "</content:encoded>", "<source>", "</source>", "<![CDATA[", "]]>", "&amp;", "&lt;p&gt;",
    "&#0;", "&#xD800;", "&bogus;", "<p>", "</p>", "<br/>", "<title>x</title>", "<script>",
    "10.1234/abc", "doi:10.5555/x.1", "https://doi.org/10.1000/1", "javascript:x", "http://[::1",
    "pmid:123", "PMC99", "Publication date: May 2022", "Source: Journal", "Author(s): A B, C D",
    "Mon, 06 Dec 2021 00:00:00 GMT", "2021-02-30", "\x00", "\ufeff", " ", "\n",
]  # fmt: skip
_STORY_TOKENS = [
    "<html>", "</html>", "<head>", "</head>", "<body>", "</body>", "<title>", "</title>",
    '<meta charset="latin-1">', '<meta charset="bogus">', '<h1 id="headline">', "</h1>",
    '<div id="journal_references">', '<div id="text">', '<div id="story_text">', "</div>",
    '<span id="date_posted">', '<span id="source">', '<dd id="abstract">', "</span>", "</dd>",
    "<ul>", "</ul>", "<li>", "</li>", "<strong>", "</strong>", "<b>", "</b>", "<i>", "</i>",
    '<a href="http://dx.doi.org/10.1172/JCI1">', '<a href="10.1/x">', "<a>", "</a>", "<!--",
    "-->", "<script>", "</script>", "DOI: 10.1172/JCI144201", "2021; 131 (13)", "...",
    "et al.", "July 1, 2021", "February 30, 2021", ", ", ". ", "&amp;", "&#0;", "\x00",
]  # fmt: skip
_EFETCH_TOKENS = [
    '<?xml version="1.0"?>', "<PubmedArticleSet>", "</PubmedArticleSet>", "<PubmedArticle>",
    "</PubmedArticle>", "<PubmedBookArticle>", "</PubmedBookArticle>", "<MedlineCitation>",
    "</MedlineCitation>", "<PMID>", "</PMID>", "<Article>", "</Article>", "<ArticleTitle>",
    "</ArticleTitle>", "<Abstract>", "</Abstract>", "<AbstractText>", '<AbstractText Label="X">',
    "</AbstractText>", "<AuthorList>", '<AuthorList Type="editors">', "</AuthorList>",
    "<Author>", '<Author ValidYN="N">', "</Author>", "<LastName>", "</LastName>", "<ForeName>",
    "</ForeName>", "<Initials>", "</Initials>", "<Suffix>", "</Suffix>", "<CollectiveName>",
    "</CollectiveName>", "<Journal>", "</Journal>", "<Title>", "</Title>", "<JournalIssue>",
    "</JournalIssue>", "<PubDate>", "</PubDate>", "<Year>", "</Year>", "<Month>", "</Month>",
    "<Day>", "</Day>", "<Season>", "</Season>", "<MedlineDate>", "</MedlineDate>",
    "<ArticleDate>", "</ArticleDate>", "<PubmedData>", "</PubmedData>", "<ArticleIdList>",
    "</ArticleIdList>", '<ArticleId IdType="doi">', '<ArticleId IdType="pmc">', "</ArticleId>",
    '<ELocationID EIdType="doi">', "</ELocationID>", "<MeshHeadingList>", "</MeshHeadingList>",
    "<MeshHeading>", "</MeshHeading>", "<DescriptorName>", "</DescriptorName>",
    "<KeywordList>", "</KeywordList>", "<Keyword>", "</Keyword>", "<PublicationTypeList>",
    "</PublicationTypeList>", "<PublicationType>", "</PublicationType>", "<BookDocument>",
    "</BookDocument>", "<Book>", "</Book>", "<BookTitle>", "</BookTitle>",
    "<MedlineJournalInfo>", "</MedlineJournalInfo>", "<MedlineTA>", "</MedlineTA>",
    "<sup>", "</sup>", "<sub>", "</sub>", '<mml:math xmlns:mml="http://www.w3.org/1998/Math/MathML">',
    "</mml:math>", "<mml:msup>", "</mml:msup>", "<mml:mi>", "</mml:mi>", "<!-- c -->",
    "<eFetchResult>", "<ERROR>", "</ERROR>", "12345", "2021", "Dec", "13", "Spring",
    "1965 Dec-1966 Jan", "10.1234/x", "&amp;", "&#0;",
]  # fmt: skip
_ESEARCH_TOKENS = [
    '<?xml version="1.0"?>', "<eSearchResult>", "</eSearchResult>", "<Count>", "</Count>",
    "<RetMax>", "</RetMax>", "<RetStart>", "</RetStart>", "<IdList>", "</IdList>", "<Id>",
    "</Id>", "<QueryKey>", "</QueryKey>", "<WebEnv>", "</WebEnv>", "<ERROR>", "</ERROR>",
    "<ErrorList>", "</ErrorList>", "<PhraseNotFound>", "</PhraseNotFound>", "<WarningList>",
    "</WarningList>", "<OutputMessage>", "</OutputMessage>", "<TranslationStack>", "12", "-1",
    "x", "<!-- c -->",
]  # fmt: skip
_LEAF = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
_JSON = st.recursive(
    _LEAF,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids),
    max_leaves=12,
)
_ESEARCH_KEYS = st.sampled_from(
    ["count", "retmax", "retstart", "querykey", "webenv", "idlist", "ERROR", "errorlist",
     "warninglist", "phrasesnotfound", "outputmessages"]
)  # fmt: skip
_ESEARCH_JSON = st.dictionaries(_ESEARCH_KEYS, _JSON | st.lists(_JSON | _LEAF, max_size=3))

# --------------------------------------------------------------------------------- checks


def check_feed(body: bytes) -> None:
    try:
        result = parse_feed(body, BASE, "fuzz")
    except FeedError:
        return
    assert isinstance(result, FeedResult)
    for paper in result.papers:
        assert isinstance(paper, Paper) and paper.origin == "feed"
        assert paper.url is None or paper.url.startswith(("http://", "https://"))
        assert all(isinstance(name, str) and name for name in paper.authors)


def check_news_feed(body: bytes) -> None:
    try:
        items = parse_news_feed(body, BASE)
    except NewsFeedError:
        return
    assert all(isinstance(item, NewsItem) for item in items)
    assert all(item.url.startswith(("http://", "https://")) for item in items)


def check_story(body: bytes) -> None:
    try:
        papers = parse_story(body, "https://www.sciencedaily.com/releases/x.htm", "fuzz")
    except StoryPageError:
        return
    assert papers and all(p.origin == "news" and p.sighting_kind == "news" for p in papers)


def check_efetch(body: bytes) -> None:
    try:
        papers = list(iter_efetch(body, "fuzz"))
    except EFetchError:
        return
    assert all(p.pmid and p.pmid.strip() for p in papers)


def check_esearch(body: bytes) -> None:
    result = parse_esearch(body)  # documented never to raise
    assert isinstance(result, ESearchResult)
    assert all(isinstance(i, str) for i in result.ids)
    assert all(isinstance(e, str) for e in (*result.errors, *result.warnings))


# ---------------------------------------------------------------------------- known breakers

DEEP_JSON = b"{" + b'"a":[' * 100_000
DEEP_XML = b"<eSearchResult>" + b"<a>" * 100_000


@pytest.mark.parametrize(
    ("check", "body"),
    [
        (check_feed, b"<channel<item<link</item</link>"),
        (check_news_feed, b"<channel<item<link</item</link>"),
        (check_story, b'<html><head><title id="headline">x</title></head></html>'),
        (check_story, b"<html><head><meta id=text></head></html>"),
        (check_esearch, DEEP_JSON),
        (check_esearch, b'{"esearchresult":' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        (check_esearch, DEEP_XML),
        (check_esearch, b'{"esearchresult": {"idlist": 5, "errorlist": {"x": 1}}}'),
        (check_efetch, b"<PubmedArticleSet>" + b"<a>" * 100_000),
        (check_efetch, b"<PubmedArticleSet><PubmedArticle><PMID>1</PMID>"),
        (check_efetch, b'<!DOCTYPE x [<!ENTITY a "b">]><PubmedArticleSet/>'),
    ],
    ids=[
        "feed-keyerror", "news-keyerror", "story-no-body", "story-head-only", "esearch-deep-json",
        "esearch-deep-json-list", "esearch-deep-xml", "esearch-wrong-types", "efetch-deep",
        "efetch-truncated", "efetch-entities",
    ],
)  # fmt: skip
def test_inputs_that_broke_a_parser(check: Any, body: bytes) -> None:
    check(body)


# --------------------------------------------------------------------------------- fuzzing


@FUZZ
@given(st.binary(max_size=300) | soup(_FEED_TOKENS))
def test_fuzz_parse_feed(body: bytes) -> None:
    check_feed(body)


@FUZZ
@given(st.binary(max_size=300) | soup(_FEED_TOKENS))
def test_fuzz_parse_news_feed(body: bytes) -> None:
    check_news_feed(body)


@FUZZ
@given(st.binary(max_size=300) | soup(_STORY_TOKENS))
def test_fuzz_parse_story(body: bytes) -> None:
    check_story(body)


@FUZZ
@given(st.binary(max_size=300) | soup(_EFETCH_TOKENS, max_size=60))
def test_fuzz_iter_efetch(body: bytes) -> None:
    check_efetch(body)


@FUZZ
@given(
    st.binary(max_size=300)
    | soup(_ESEARCH_TOKENS)
    | _JSON.map(lambda v: json.dumps(v).encode())
    | _ESEARCH_JSON.map(lambda v: json.dumps({"esearchresult": v}).encode())
)
def test_fuzz_parse_esearch(body: bytes) -> None:
    check_esearch(body)


def test_efetch_errors_are_one_documented_type() -> None:
    """A broken or unsafe document is an EFetchError too (it was lxml's own error before)."""
    assert issubclass(EFetchError, ValueError)
    with pytest.raises(EFetchError) as info:
        list(iter_efetch(b"<PubmedArticleSet><PubmedArticle>", "fuzz"))
    assert isinstance(info.value.__cause__, lxml.etree.XMLSyntaxError)
