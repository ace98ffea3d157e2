"""ScienceDaily news: read the feed, follow each relevant story once, take the paper's DOI.

Quirks: feed items link to the story on sciencedaily.com, never to the paper; the paper is
named in the story's ``div#journal_references`` (parsing in spiders/sciencedaily_parse.py).
A story is followed once, ever, by whichever feed lists it first: the runner passes the
stories already followed (a set shared by the crawl's spiders) and a claimer that claims each
story in the database before it is fetched (so two crawl processes do not both fetch it), and
records the new ones after their items were stored. A story link that leaves the feed's site
for a non-public address is refused before any request (crawler/ingest/addresses.py) and
recorded as followed, without a paper, so it is not tried again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import scrapy
from scrapy.http import Response
from twisted.python.failure import Failure

from crawler.items import NewsStory, Paper, names_no_paper
from crawler.topics import TopicMatcher
from crawler.xmlsafe import UnsafeXMLError
from spiders.base import TOO_LARGE, ForbiddenAddress, LitwatchSpider, describe_failure
from spiders.sciencedaily_parse import (
    UNREADABLE_STORY,
    NewsFeedError,
    NewsItem,
    StoryPageError,
    parse_news_feed,
    parse_story,
    story_summary,
)


class ScienceDailySpider(LitwatchSpider):
    name = kind = "sciencedaily"
    follows_links = True
    size_limit_setting = "LITWATCH_FEED_MAXSIZE"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.matcher = TopicMatcher(self.config.topics)

    async def start(self) -> AsyncIterator[scrapy.Request]:
        assert self.source.url
        yield scrapy.Request(
            self.source.url,
            headers=self.conditional_headers(),
            callback=self.parse_news,
            errback=self.on_error,
            meta={"handle_httpstatus_list": [304]},
            dont_filter=True,
        )

    def relevant(self, item: NewsItem) -> bool:
        """A story is worth following when its source is on-topic or its text matches a topic."""
        if self.source.topics:
            return True
        return bool(self.matcher.classify(item.title, item.summary))

    def parse_news(self, response: Response) -> Iterator[scrapy.Request]:
        """Read the feed and follow the relevant stories not followed before."""
        if response.status == 304:
            self.report.not_modified += 1
            return
        try:
            stories = parse_news_feed(response.body, response.url)
        except NewsFeedError as exc:
            self.fail(f"{response.url}: {exc}")
            return
        except UnsafeXMLError as exc:  # entity declarations: a billion-laughs or XXE attempt
            self.fail(f"{response.url}: XML entity declarations are not allowed ({exc})")
            return
        chosen, complete = self.choose(stories)
        if complete:
            # Stories left for the next poll (follow limit) must not meet a 304 there.
            self.remember_validators(response)
        for story in chosen:
            yield scrapy.Request(
                story.url,
                callback=self.parse_story_page,
                errback=self.on_story_error,
                cb_kwargs={"story": story},
                # A story page is rarely over a few hundred KB; an endless one must not
                # fill memory (Scrapy keeps the whole body). Redirects inherit the limit.
                meta={"download_maxsize": self.config.crawl.max_story_bytes},
            )

    def choose(self, stories: list[NewsItem]) -> tuple[list[NewsItem], bool]:
        """The stories to follow now, and whether that is every story still to follow.

        Each chosen story is claimed in the shared ``followed`` set at once, so that another
        feed of this crawl (or a repeat in this one) does not fetch it too.
        """
        budget = self.config.crawl.max_story_follows
        chosen: list[NewsItem] = []
        for story in stories:
            if story.url in self.state.followed:
                continue
            if not self.relevant(story):
                self.report.skipped += 1
                continue
            if len(chosen) >= budget:
                self.report.warnings.append(
                    "story follow limit reached; the rest wait for the next poll"
                )
                return chosen, False
            claimed = self.link_claims is None or self.link_claims.claim(story.url)
            self.state.followed.add(story.url)
            if claimed:  # else another crawl process fetches it, or has recorded it
                chosen.append(story)
        return chosen, True

    def on_story_error(self, failure: Failure) -> None:
        """Errback of a story: a refused link, or a page over the size limit, is a warning
        and is recorded as followed (no paper): trying it again would end the same way."""
        story = failure.request.cb_kwargs["story"]  # type: ignore[attr-defined]
        if failure.check(ForbiddenAddress):
            self.report.warnings.append(f"{story.url}: {failure.getErrorMessage()}")
        elif TOO_LARGE and failure.check(*TOO_LARGE):
            self.report.warnings.append(describe_failure(failure, self.size_limit(failure)))
        else:
            self.on_error(failure)
            return
        self.report.followed.append((story.url, 0))

    def parse_story_page(self, response: Response, story: NewsItem) -> Iterator[Paper | NewsStory]:
        try:
            papers = parse_story(response.body, story.url, self.source.id)
        except StoryPageError as exc:
            self.fail(f"{story.url}: {exc}")
            # Followed-and-failed: an unreadable page is not fetched again on every poll.
            self.report.followed.append((story.url, UNREADABLE_STORY))
            return
        context = " ".join(filter(None, [story.title, story.summary]))
        for paper in papers:
            if names_no_paper(paper):  # press coverage, not a paper (issue 12, B1)
                yield self.news_story(response.body, story)
                continue
            paper.context = context
            paper.seen_title = paper.seen_title or story.title
            yield paper
        self.report.followed.append((story.url, sum(1 for p in papers if p.doi)))

    def news_story(self, body: bytes, story: NewsItem) -> NewsStory:
        """The story as press coverage: headline, outlet and date from its page."""
        meta = story_summary(body)
        published = meta.date_posted or (story.published.date() if story.published else None)
        return NewsStory(
            source_id=self.source.id,
            url=story.url,
            headline=meta.headline or story.title or story.url,
            summary=story.summary or meta.abstract,
            outlet=meta.source,
            published=published,
        )
