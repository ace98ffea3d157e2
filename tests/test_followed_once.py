"""A story is followed once across concurrent crawl processes (issue 12 A11, part).

Two ``litwatch crawl`` processes, each polling its own ScienceDaily feed, both feeds listing
the same 30 stories: before, both fetched all 30 (the "followed" set lived in each process).
Now each story is claimed in ``followed_links`` before it is fetched. A claim left by a
process that died is taken over (its source's crawl lock is free) or given back when its
source runs again; it never blocks a story for good.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from crawler.db import polls
from crawler.db.models import FollowedLink
from crawler.ingest.claims import LinkClaims
from crawler.locks import NamedLock, crawl_lock
from crawler.poll import PollReport, SourceResult
from tests.support.db import migrated_engine
from tests.support.httpserver import LocalHTTPServer, Response
from tests.test_crawl_e2e import (
    FIXTURES,
    RSS,
    db_engines,  # noqa: F401 (a fixture)
    litwatch_background,
    summary_rows,
    wait_until,
    write_config,
)

STORY = (FIXTURES / "story_jci144201.html").read_bytes()
N_STORIES = 30


def news_feed(links: list[str], title: str) -> bytes:
    items = "".join(
        f"<item><title>Fibromyalgia story {i}</title><link>{link}</link>"
        f"<description>fibromyalgia</description></item>"
        for i, link in enumerate(links)
    )
    head = f'<?xml version="1.0"?><rss version="2.0"><channel><title>{title}</title>'
    return f"{head}{items}</channel></rss>".encode()


def held_feed(body: bytes, gate: threading.Event, arrivals: list[float]) -> Any:
    def answer(_request: Any) -> Response:
        arrivals.append(time.monotonic())
        gate.wait(timeout=60)
        return Response(200, body, content_type=RSS)

    return answer


@pytest.mark.slow
def test_two_crawl_processes_listing_the_same_stories_fetch_each_once(
    db_url: str,
    http_server: LocalHTTPServer,
    tmp_path: Path,
    db_engines: Callable[[str], Engine],  # noqa: F811
) -> None:
    paths = [f"/releases/story-{i}.htm" for i in range(N_STORIES)]
    for path in paths:
        http_server.add(path, STORY, content_type="text/html", delay=0.05)
    links = [http_server.url(path) for path in paths]
    gate, arrivals = threading.Event(), []  # both feeds answer once both crawls asked
    for name in ("a", "b"):
        handler = held_feed(news_feed(links, name), gate, arrivals)
        http_server.add_handler(f"/rss/{name}.xml", handler)
    sources = [
        {"id": f"sd-{n}", "kind": "sciencedaily", "url": http_server.url(f"/rss/{n}.xml")}
        for n in ("a", "b")
    ]
    config = write_config(
        tmp_path / "litwatch.toml",
        db_url,
        [{**s, "topics": ["fibromyalgia"]} for s in sources],
        crawl={"max_story_follows": 100},
    )
    migrated_engine(db_url).dispose()  # two first runs would race to create the schema

    with (
        litwatch_background(config, "sd-a") as first,
        litwatch_background(config, "sd-b") as second,
    ):
        try:
            wait_until(lambda: len(arrivals) == 2, what="both crawls to ask for their feed")
        finally:
            gate.set()
        outputs = [proc.communicate(timeout=90) for proc in (first, second)]

    for proc, (out, err) in zip((first, second), outputs, strict=True):
        assert proc.returncode == 0, out + err
        assert "Traceback" not in out + err
    assert {path: http_server.count(path) for path in paths} == dict.fromkeys(paths, 1)
    rows = [summary_rows(out) for out, _err in outputs]
    assert rows[0]["sd-a"]["status"] == rows[1]["sd-b"]["status"] == "ok"
    engine = db_engines(db_url)
    with engine.connect() as conn:
        followed = {
            r.url: r.dois for r in conn.execute(select(FollowedLink.url, FollowedLink.dois))
        }
    assert followed == dict.fromkeys(links, 1)  # every claim became a record


# --- Claims, in process, on both backends ------------------------------------------------------

URL = "https://www.sciencedaily.com/releases/2021/07/210701120626.htm"


def test_a_claim_of_a_live_crawl_holds_and_one_of_a_dead_crawl_is_taken_over(
    engine: Engine,
) -> None:
    assert polls.claim_link(engine, URL, "sd-dead") == (True, None)
    assert polls.load_followed(engine) == set()  # a claim is not a record
    alive = LinkClaims(engine, engine, "sd-alive")
    holder = NamedLock(engine, crawl_lock("sd-dead"))
    assert holder.acquire()  # the claiming crawl still runs: its claim holds
    try:
        assert alive.claim(URL) is False
    finally:
        holder.release()
    assert alive.claim(URL) is True  # its crawl died: taken over, not blocked for good
    with engine.connect() as conn:
        row = conn.execute(select(FollowedLink).where(FollowedLink.url == URL)).one()
    assert (row.source_id, row.dois) == ("sd-alive", polls.CLAIMED)


def test_closing_a_run_records_stored_stories_and_gives_back_the_others(engine: Engine) -> None:
    run = polls.open_run(engine, "sd-a", "sciencedaily", "cli")
    for url in (URL, URL + "?failed"):
        assert polls.claim_link(engine, url, "sd-a") == (True, None)
    report = PollReport(followed=[(URL, 1)])
    polls.close_run(engine, run, report, SourceResult("sd-a", "sciencedaily", requests=3))
    with engine.connect() as conn:
        rows = {r.url: r.dois for r in conn.execute(select(FollowedLink.url, FollowedLink.dois))}
    assert rows == {URL: 1}  # the failed story is free for the next poll
    assert polls.claim_link(engine, URL, "sd-b") == (False, None)  # recorded: followed once


def test_a_dead_crawls_claims_are_given_back_when_its_source_runs_again(engine: Engine) -> None:
    polls.open_run(engine, "sd-a", "sciencedaily", "cli")
    polls.claim_link(engine, URL, "sd-a")  # then the process is killed
    polls.open_run(engine, "sd-a", "sciencedaily", "cli")
    assert polls.claim_link(engine, URL, "sd-b") == (True, None)
