"""The crawl runner's bookkeeping, in process: a run's result from what its spider reported,
and followed stories recorded by two crawls (crawler/ingest/runner.py, crawler/db/polls.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select

from crawler.db.engine import transaction
from crawler.db.models import FollowedLink
from crawler.db.polls import load_followed, record_followed
from crawler.ingest.runner import _result
from crawler.poll import PollState
from crawler.settings import SourceSettings, load_settings
from spiders.feed import FeedSpider


def utc_now() -> datetime:
    return datetime.now(UTC)


def test_a_story_recorded_meanwhile_by_another_crawl_is_left_alone(engine: Engine) -> None:

    story = "https://www.sciencedaily.com/releases/2021/07/210701120626.htm"
    earlier = datetime(2024, 3, 1, tzinfo=UTC)
    with transaction(engine) as session:
        record_followed(session, "sd-immune", [(story, 1)], earlier)
    with transaction(engine) as session:  # the other crawl: no primary-key collision
        record_followed(session, "sd-pain", [(story, 1), (story + "?x", 0)], utc_now())
    assert load_followed(engine) == {story, story + "?x"}
    with engine.connect() as conn:
        kept = conn.execute(select(FollowedLink).where(FollowedLink.url == story)).one()
    assert kept.source_id == "sd-immune"


def _spider_with(failures: list[str]) -> Any:

    source = SourceSettings(id="jprn", kind="feed", url="https://pain.example.org/rss.xml")
    spider = FeedSpider(source=source, config=load_settings(None, environ={}), state=PollState())
    spider.report.failures.extend(failures)
    spider.report.items, spider.report.new = 3, 2
    return spider


def test_run_result_of_a_clean_poll() -> None:

    result = _result(_spider_with([]), {"downloader/request_count": 2}, "finished", 1.5)
    assert (result.status, result.requests, result.items, result.new) == ("ok", 2, 3, 2)
    assert result.error is None and result.errors == 0


def test_run_result_of_an_interrupted_or_silent_poll_is_a_failure() -> None:

    stopped = _result(
        _spider_with(["HTTP 404 from x"]), {"downloader/request_count": 1}, "shutdown", 1.0
    )
    assert stopped.status == "failed" and stopped.errors == 2
    assert stopped.error == "HTTP 404 from x; crawl stopped early (shutdown)"
    silent = _result(_spider_with([]), {}, "finished", 0.1)
    assert silent.status == "failed" and "no request was made" in (silent.error or "")
