"""Spider callbacks driven directly with Scrapy response objects (no reactor, no network).

Each spider is built as the runner builds it (source, config, stored poll state) and its
callbacks are fed responses made from hand-written fixtures in tests/fixtures/crawl/.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import scrapy
from scrapy.exceptions import CannotResolveHostError, DownloadTimeoutError, IgnoreRequest
from scrapy.http import HtmlResponse, Response, XmlResponse
from scrapy.settings import Settings as ScrapySettings
from scrapy.spidermiddlewares.httperror import HttpError
from twisted.python.failure import Failure

from crawler.items import NewsStory, Paper, PaperBatch
from crawler.poll import PollState
from crawler.settings import Settings, SourceSettings, load_settings
from spiders import pubmed
from spiders.base import LitwatchSpider, describe_failure
from spiders.feed import FeedSpider
from spiders.pubmed import DELAY_WITH_KEY, DELAY_WITHOUT_KEY, ESEARCH_CAP, PubmedSpider, ncbi_delay
from spiders.sciencedaily import ScienceDailySpider

FIXTURES = Path(__file__).parent / "fixtures" / "crawl"
FEED_URL = "https://pain.example.org/journal/rss.xml"
NEWS_URL = "https://www.sciencedaily.com/rss/health_medicine/immune_system.xml"
EUTILS = "https://eutils.example.org/entrez/eutils/"
NOW = datetime(2024, 3, 10, 9, 30, tzinfo=UTC)


@pytest.fixture
def config(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The shipped defaults (topics included), whatever the developer's environment says."""
    monkeypatch.delenv("NCBI_API_KEY", raising=False)
    return load_settings(None, environ={})


def xml(url: str, body: bytes, status: int = 200, **headers: str) -> XmlResponse:
    return XmlResponse(
        url=url, body=body, status=status, headers=headers, request=scrapy.Request(url)
    )


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def first_request(spider: LitwatchSpider) -> scrapy.Request:
    async def collect(agen: AsyncIterator[Any]) -> list[Any]:
        return [item async for item in agen]

    (request,) = asyncio.run(collect(spider.start()))
    assert isinstance(request, scrapy.Request)
    return request


# --- Journal feeds ----------------------------------------------------------------------------


def feed_spider(config: Settings, state: PollState | None = None) -> FeedSpider:
    source = SourceSettings(id="jprn", kind="feed", url=FEED_URL, topics=["fibromyalgia"])
    return FeedSpider(source=source, config=config, state=state or PollState())


def test_first_poll_is_unconditional(config: Settings) -> None:
    request = first_request(feed_spider(config))
    assert request.url == FEED_URL
    assert b"If-None-Match" not in request.headers
    assert b"If-Modified-Since" not in request.headers


def test_later_polls_are_conditional_and_let_304_reach_the_spider(config: Settings) -> None:
    modified = "Tue, 05 Mar 2024 10:00:00 GMT"
    spider = feed_spider(config, PollState(etag='"v7"', last_modified=modified))
    request = first_request(spider)
    assert request.headers[b"If-None-Match"] == b'"v7"'
    assert request.headers[b"If-Modified-Since"] == modified.encode()
    assert 304 in request.meta["handle_httpstatus_list"]
    assert request.dont_filter  # the same URL every poll
    assert request.errback == spider.on_error


def test_304_is_a_poll_with_nothing_new(config: Settings) -> None:
    spider = feed_spider(config, PollState(etag='"v7"'))
    items = list(spider.parse_feed(Response(FEED_URL, status=304)))
    assert items == [] and spider.report.not_modified == 1
    assert not spider.report.failures and not spider.report.validators_seen


def test_feed_entries_become_papers_and_validators_are_kept(config: Settings) -> None:
    spider = feed_spider(config)
    response = xml(FEED_URL, fixture("journal_rss.xml"), ETag='"v8"')
    papers = list(spider.parse_feed(response))
    assert [p.doi for p in papers] == [
        "10.5555/jprn.2024.101",
        "10.5555/jprn.2024.102",
        "10.5555/jprn.2024.103",
    ]
    assert all(p.source_id == "jprn" and p.origin == "feed" for p in papers)
    assert spider.report.validators_seen and spider.report.etag == '"v8"'
    assert spider.report.last_modified is None  # the server sent none: none is kept


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("captcha.html", "HTML page, not a feed"),
        ("truncated_rss.xml", "broken feed"),
        ("bomb_rss.xml", "entity declarations are not allowed"),
    ],
)
def test_a_body_that_is_not_a_feed_fails_the_source(
    config: Settings, name: str, message: str
) -> None:
    spider = feed_spider(config)
    assert list(spider.parse_feed(xml(FEED_URL, fixture(name), ETag='"x"'))) == []
    (failure,) = spider.report.failures
    assert failure.startswith(FEED_URL) and message in failure
    assert not spider.report.validators_seen  # a broken answer is never remembered


def test_bozo_feed_keeps_its_entries_as_warnings_but_not_its_validators(config: Settings) -> None:
    spider = feed_spider(config)
    body = fixture("truncated_after_two_items.xml")
    papers = list(spider.parse_feed(xml(FEED_URL, body, ETag='"cut"')))
    assert [p.doi for p in papers] == ["10.5555/jprn.2024.101", "10.5555/jprn.2024.102"]
    assert not spider.report.failures
    assert spider.report.warnings
    assert not spider.report.validators_seen  # next poll: a full fetch, not a 304


# --- ScienceDaily -----------------------------------------------------------------------------

STORY = "https://www.sciencedaily.com/releases/2021/07/210701120626.htm"
NO_DOI_STORY = "https://www.sciencedaily.com/releases/2021/06/210630090000.htm"
CRYSTAL_STORY = "https://www.sciencedaily.com/releases/2021/06/210629080000.htm"


def news_spider(
    config: Settings,
    followed: set[str] | None = None,
    topics: list[str] | None = None,
    source_id: str = "sd-immune",
) -> ScienceDailySpider:
    source = SourceSettings(id=source_id, kind="sciencedaily", url=NEWS_URL, topics=topics)
    state = PollState(followed=set() if followed is None else followed)
    return ScienceDailySpider(source=source, config=config, state=state)


def news_feed() -> bytes:
    return fixture("sciencedaily_v1.xml").replace(b"{base}", b"https://www.sciencedaily.com")


def test_relevant_stories_are_followed_and_off_topic_ones_counted(config: Settings) -> None:
    spider = news_spider(config)
    requests = list(spider.parse_news(xml(NEWS_URL, news_feed(), ETag='"n1"')))
    assert [r.url for r in requests] == [STORY, NO_DOI_STORY]
    assert requests[0].cb_kwargs["story"].title == (
        "Fibromyalgia likely the result of autoimmune problems"
    )
    assert spider.report.skipped == 1  # the crystal-growth story
    assert spider.report.etag == '"n1"'


def test_a_source_with_topics_follows_every_story(config: Settings) -> None:
    spider = news_spider(config, topics=["autoimmunity"])
    requests = list(spider.parse_news(xml(NEWS_URL, news_feed())))
    assert [r.url for r in requests] == [STORY, NO_DOI_STORY, CRYSTAL_STORY]


def test_stories_already_followed_are_not_fetched_again(config: Settings) -> None:
    spider = news_spider(config, followed={STORY})
    requests = list(spider.parse_news(xml(NEWS_URL, news_feed())))
    assert [r.url for r in requests] == [NO_DOI_STORY]


def test_a_story_in_two_feeds_of_one_crawl_is_fetched_once(config: Settings) -> None:
    shared: set[str] = set()  # the runner gives every ScienceDaily spider the same set
    immune = news_spider(config, followed=shared)
    pain = news_spider(config, followed=shared, source_id="sd-pain")
    assert len(list(immune.parse_news(xml(NEWS_URL, news_feed())))) == 2
    assert list(pain.parse_news(xml(NEWS_URL, news_feed()))) == []


def test_story_follow_budget_leaves_the_rest_for_the_next_poll(config: Settings) -> None:
    config = config.model_copy(
        update={"crawl": config.crawl.model_copy(update={"max_story_follows": 1})}
    )
    spider = news_spider(config)
    requests = list(spider.parse_news(xml(NEWS_URL, news_feed())))
    assert [r.url for r in requests] == [STORY]
    assert any("follow limit" in w for w in spider.report.warnings)
    # The next poll must read the feed again (no 304) to reach the stories left over.
    assert not spider.report.validators_seen


def test_a_story_listed_twice_is_fetched_once(config: Settings) -> None:
    feed = news_feed()
    first_item = feed[feed.index(b"<item>") : feed.index(b"</item>") + len(b"</item>")]
    doubled = feed.replace(b"</channel>", first_item + b"</channel>")
    requests = list(news_spider(config).parse_news(xml(NEWS_URL, doubled)))
    assert [r.url for r in requests] == [STORY, NO_DOI_STORY]


def test_news_feed_with_entity_declarations_fails_cleanly(config: Settings) -> None:
    spider = news_spider(config)
    assert list(spider.parse_news(xml(NEWS_URL, fixture("bomb_rss.xml")))) == []
    (failure,) = spider.report.failures
    assert "entity declarations are not allowed" in failure
    assert not spider.report.validators_seen


def test_html_instead_of_a_news_feed_fails_cleanly(config: Settings) -> None:
    spider = news_spider(config)
    assert list(spider.parse_news(xml(NEWS_URL, fixture("captcha.html")))) == []
    assert len(spider.report.failures) == 1


def story_item(spider: ScienceDailySpider, url: str) -> Any:
    requests = list(spider.parse_news(xml(NEWS_URL, news_feed())))
    return next(r.cb_kwargs["story"] for r in requests if r.url == url)


def test_story_page_gives_the_paper_as_news_and_is_marked_followed(config: Settings) -> None:
    spider = news_spider(config)
    story = story_item(spider, STORY)
    page = HtmlResponse(url=STORY, body=fixture("story_jci144201.html"), encoding="utf-8")
    (paper,) = list(spider.parse_story_page(page, story))
    assert isinstance(paper, Paper)
    assert paper.doi is not None and paper.doi.lower() == "10.1172/jci144201"
    assert (paper.origin, paper.sighting_kind, paper.url) == ("news", "news", STORY)
    assert paper.seen_title == "Fibromyalgia likely the result of autoimmune problems"
    # The feed's text about the story decides topics; it is not the paper's abstract.
    assert paper.context and "fibromyalgia" in paper.context
    assert spider.report.followed == [(STORY, 1)]


def test_story_without_doi_is_kept_as_news(config: Settings) -> None:
    """A story naming no paper is press coverage (issue 12 B1), never a nameless paper."""
    spider = news_spider(config)
    story = story_item(spider, NO_DOI_STORY)
    page = HtmlResponse(url=NO_DOI_STORY, body=fixture("story_no_doi.html"), encoding="utf-8")
    (news,) = list(spider.parse_story_page(page, story))
    assert isinstance(news, NewsStory)
    assert (news.source_id, news.url) == (spider.source.id, NO_DOI_STORY)
    assert news.headline == "Walking groups ease fibromyalgia pain"
    assert (news.outlet, news.published) == ("Example Health Trust", date(2021, 6, 30))
    assert news.summary  # the feed's description of the story
    assert spider.report.followed == [(NO_DOI_STORY, 0)]


@pytest.mark.parametrize(
    "body",
    [
        b"<html><body><p>Gone</p></body></html>",
        # No <body>: an AssertionError escaped the parser here (issue 12 A9).
        b'<html><head><title id="headline">Gone</title></head></html>',
    ],
    ids=["no-landmarks", "no-body"],
)
def test_a_page_that_is_no_story_fails_and_is_marked_followed_and_failed(
    config: Settings, body: bytes
) -> None:
    """Recorded as followed (DOI count -1), so the next poll does not fetch it again."""
    spider = news_spider(config)
    story = story_item(spider, STORY)
    page = HtmlResponse(url=STORY, body=body)
    assert list(spider.parse_story_page(page, story)) == []
    assert len(spider.report.failures) == 1 and spider.report.followed == [(STORY, -1)]


# --- PubMed -----------------------------------------------------------------------------------


def pubmed_spider(config: Settings, cursor: datetime | None = None) -> PubmedSpider:
    source = SourceSettings(id="pm-fm", kind="pubmed", query="fibromyalgia", base_url=EUTILS)
    return PubmedSpider(source=source, config=config, state=PollState(cursor=cursor), now=NOW)


def params(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def esearch(count: int, webenv: str | None = "MCID_1", extra: str = "") -> bytes:
    history = f"<QueryKey>1</QueryKey><WebEnv>{webenv}</WebEnv>" if webenv else ""
    return (
        f"<eSearchResult><Count>{count}</Count><RetMax>0</RetMax><RetStart>0</RetStart>"
        f"{history}<IdList/>{extra}</eSearchResult>"
    ).encode()


def test_first_window_reaches_back_the_baseline(config: Settings) -> None:
    assert pubmed_spider(config).window() == (date(2024, 2, 9), date(2024, 3, 10))


def test_later_windows_start_at_the_cursor_minus_the_overlap(config: Settings) -> None:
    spider = pubmed_spider(config, cursor=datetime(2024, 3, 8, 23, 0, tzinfo=UTC))
    assert spider.window() == (date(2024, 3, 6), date(2024, 3, 10))


def test_a_cursor_in_the_future_never_inverts_the_window(config: Settings) -> None:
    spider = pubmed_spider(config, cursor=NOW + timedelta(days=5))
    assert spider.window() == (date(2024, 3, 10), date(2024, 3, 10))


def test_a_crawl_after_another_waits_ncbis_delay_before_its_first_request(
    config: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(pubmed.asyncio, "sleep", sleep)
    first_request(pubmed_spider(config))
    assert slept == []  # the first E-utilities crawl of a process starts at once
    source = SourceSettings(id="pm-2", kind="pubmed", query="lupus", base_url=EUTILS)
    spider = PubmedSpider(source=source, config=config, state=PollState(), after_another=True)
    assert "esearch.fcgi" in first_request(spider).url
    assert slept == [DELAY_WITHOUT_KEY]


def test_esearch_request_names_tool_email_and_entry_dates(config: Settings) -> None:
    spider = pubmed_spider(config)
    request = first_request(spider)
    query = params(request.url)
    assert request.url.startswith(EUTILS + "esearch.fcgi?")
    assert query["term"] == "fibromyalgia" and query["db"] == "pubmed"
    assert (query["datetype"], query["usehistory"]) == ("edat", "y")
    assert (query["mindate"], query["maxdate"]) == ("2024/02/09", "2024/03/10")
    assert query["tool"] == config.pubmed.tool and query["email"] == config.pubmed.email
    assert "api_key" not in query
    assert request.meta["dont_obey_robotstxt"]
    assert spider.report.cursor == NOW  # saved by the runner only if the poll succeeds


def test_api_key_is_sent_when_set(config: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NCBI_API_KEY", "k-123")
    assert params(first_request(pubmed_spider(config)).url)["api_key"] == "k-123"


def test_request_pacing_follows_ncbi_limits() -> None:
    assert ncbi_delay(None) == DELAY_WITHOUT_KEY and DELAY_WITHOUT_KEY > 1 / 3
    assert ncbi_delay("key") == DELAY_WITH_KEY and DELAY_WITH_KEY > 1 / 10
    settings = ScrapySettings({"LITWATCH_NCBI_DELAY": DELAY_WITH_KEY})
    PubmedSpider.update_settings(settings)
    assert settings.getfloat("DOWNLOAD_DELAY") == DELAY_WITH_KEY
    assert settings.getint("CONCURRENT_REQUESTS_PER_DOMAIN") == 1
    assert not settings.getbool("AUTOTHROTTLE_ENABLED")
    assert settings.getfloat("DOWNLOAD_DELAY_JITTER") == 0  # never randomly shorter


def test_results_are_fetched_in_batches_through_the_history_server(config: Settings) -> None:
    spider = pubmed_spider(config)
    spider.batch_size = 50
    response = xml(EUTILS + "esearch.fcgi", esearch(120))
    requests = list(spider.parse_search(response, start=date(2024, 3, 1), end=NOW.date()))
    fetches = [params(r.url) for r in requests]
    assert [(f["retstart"], f["retmax"]) for f in fetches] == [
        ("0", "50"),
        ("50", "50"),
        ("100", "50"),
    ]
    assert all(f["WebEnv"] == "MCID_1" and f["query_key"] == "1" for f in fetches)
    assert [r.cb_kwargs["expected"] for r in requests] == [50, 50, 20]


def test_a_window_over_the_esearch_cap_is_split_by_date(config: Settings) -> None:
    spider = pubmed_spider(config)
    start, end = date(2024, 3, 1), date(2024, 3, 10)
    response = xml(EUTILS + "esearch.fcgi", esearch(ESEARCH_CAP + 1))
    halves = [params(r.url) for r in spider.parse_search(response, start=start, end=end)]
    assert [(h["mindate"], h["maxdate"]) for h in halves] == [
        ("2024/03/01", "2024/03/05"),
        ("2024/03/06", "2024/03/10"),
    ]
    assert not spider.report.failures


def test_one_day_over_the_cap_is_an_error_not_a_truncation(config: Settings) -> None:
    spider = pubmed_spider(config)
    day = date(2024, 3, 4)
    response = xml(EUTILS + "esearch.fcgi", esearch(ESEARCH_CAP + 5))
    assert list(spider.parse_search(response, start=day, end=day)) == []
    (failure,) = spider.report.failures
    assert "10005" in failure and "2024-03-04" in failure


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<eSearchResult><ERROR>Invalid query</ERROR></eSearchResult>", "Invalid query"),
        (esearch(3, webenv=None), "no WebEnv"),
        (fixture("captcha.html"), "ESearch"),
    ],
)
def test_esearch_errors_fail_the_source(config: Settings, body: bytes, message: str) -> None:
    spider = pubmed_spider(config)
    response = xml(EUTILS + "esearch.fcgi", body)
    assert list(spider.parse_search(response, start=date(2024, 3, 1), end=NOW.date())) == []
    (failure,) = spider.report.failures
    assert message in failure


def test_no_results_is_a_quiet_success(config: Settings) -> None:
    spider = pubmed_spider(config)
    response = xml(EUTILS + "esearch.fcgi", esearch(0))
    assert list(spider.parse_search(response, start=date(2024, 3, 1), end=NOW.date())) == []
    assert not spider.report.failures


def fetched(batches: AsyncIterator[PaperBatch]) -> list[PaperBatch]:
    """What an (asynchronous) EFetch callback yields, collected outside a reactor."""

    async def collect() -> list[PaperBatch]:
        return [batch async for batch in batches]

    return asyncio.run(collect())


def test_efetch_page_gives_papers(config: Settings) -> None:
    spider = pubmed_spider(config)
    response = xml(EUTILS + "efetch.fcgi", fixture("pubmed_jci144201.xml"))
    (batch,) = fetched(spider.parse_fetch(response, retstart=0, expected=1))
    assert isinstance(batch, PaperBatch)
    (paper,) = batch.papers
    assert (paper.pmid, paper.doi, paper.origin) == ("34196305", "10.1172/jci144201", "pubmed")
    assert not spider.report.warnings and not spider.report.failures


def efetch_page(count: int, *, cut: int = 0) -> bytes:
    """An EFetch page of ``count`` copies of the fixture's article (PMIDs 1..count).

    ``cut`` bytes are taken off the end: a page broken inside its last article.
    """
    article = fixture("pubmed_jci144201.xml")
    start, end = article.index(b"<PubmedArticle>"), article.rindex(b"</PubmedArticle>") + 16
    one = article[start:end]
    copies = [one.replace(b">34196305<", f">{i + 1}<".encode()) for i in range(count)]
    page = article[:start] + b"".join(copies) + article[end:]
    return page[: len(page) - cut] if cut else page


def test_an_efetch_page_is_yielded_in_batches_with_every_paper_in_order(
    config: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pubmed, "ITEM_PAPERS", 2)
    spider = pubmed_spider(config)
    response = xml(EUTILS + "efetch.fcgi", efetch_page(5))
    batches = fetched(spider.parse_fetch(response, retstart=0, expected=5))
    assert [[p.pmid for p in b.papers] for b in batches] == [["1", "2"], ["3", "4"], ["5"]]
    assert not spider.report.warnings and not spider.report.failures


def test_papers_before_a_break_in_the_page_are_kept(
    config: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pubmed, "ITEM_PAPERS", 2)
    spider = pubmed_spider(config)
    broken = efetch_page(4, cut=len(b"</PubmedArticle></PubmedArticleSet>") + 500)
    batches = fetched(spider.parse_fetch(xml(EUTILS + "efetch.fcgi", broken), retstart=0))
    assert [[p.pmid for p in b.papers] for b in batches] == [["1", "2"], ["3"]]
    (failure,) = spider.report.failures
    assert failure.startswith("EFetch from record 0")


def test_a_short_efetch_page_is_reported(config: Settings) -> None:
    spider = pubmed_spider(config)
    response = xml(EUTILS + "efetch.fcgi", fixture("pubmed_jci144201.xml"))
    (batch,) = fetched(spider.parse_fetch(response, retstart=500, expected=3))
    assert len(batch.papers) == 1
    assert spider.report.warnings == ["EFetch from record 500: 1 of 3 records returned"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (fixture("efetch_bomb.xml"), "entit"),
        (b"<eFetchResult><ERROR>Unable to obtain query #1</ERROR></eFetchResult>", "Unable"),
        (fixture("pubmed_jci144201.xml")[:900], "EFetch from record 0"),
    ],
)
def test_efetch_errors_fail_the_source(config: Settings, body: bytes, message: str) -> None:
    spider = pubmed_spider(config)
    fetched(spider.parse_fetch(xml(EUTILS + "efetch.fcgi", body), retstart=0, expected=1))
    (failure,) = spider.report.failures
    assert failure.startswith("EFetch from record 0") and message in failure


# --- Failures common to every spider ----------------------------------------------------------


def failed(exc: Exception, url: str = FEED_URL) -> Failure:
    failure = Failure(exc)
    failure.request = scrapy.Request(url)  # type: ignore[attr-defined]
    return failure


def test_http_errors_name_status_url_and_retry_after() -> None:
    request = scrapy.Request(FEED_URL)
    gone = Response(FEED_URL, status=404, request=request)
    assert describe_failure(failed(HttpError(gone))) == f"HTTP 404 from {FEED_URL}"
    limited = Response(FEED_URL, status=429, headers={"Retry-After": "3600"}, request=request)
    assert describe_failure(failed(HttpError(limited))) == (
        f"HTTP 429 from {FEED_URL} (Retry-After: 3600)"
    )


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (DownloadTimeoutError("took longer than 30.0 seconds"), f"timed out fetching {FEED_URL}"),
        (CannotResolveHostError("nope"), f"cannot resolve host of {FEED_URL}"),
        (IgnoreRequest("Forbidden by robots.txt"), f"{FEED_URL}: forbidden by robots.txt"),
        (ValueError("odd"), f"ValueError: odd fetching {FEED_URL}"),
    ],
)
def test_network_failures_are_one_clear_line(exc: Exception, expected: str) -> None:
    assert describe_failure(failed(exc)) == expected


def test_an_exception_escaping_a_callback_fails_the_source(config: Settings) -> None:
    spider = feed_spider(config)
    try:
        raise KeyError("title")
    except KeyError:
        failure = Failure()
    spider.on_spider_error(failure, Response(FEED_URL), spider)
    (message,) = spider.report.failures
    assert message == f"unexpected error reading {FEED_URL}: KeyError: 'title'"
