"""Public pages: home, archive of sent digests, Atom feeds, health check, the stylesheet."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import distinct, func, select, text
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from crawler.db.engine import transaction
from crawler.db.models import CrawlRun, Delivery, DeliveryPaper, utcnow
from digests import feeds
from digests.model import Section, build_sections
from digests.selection import entries_for
from digests.web.pages import stylesheet
from digests.web.state import WebState, web_state

log = logging.getLogger("litwatch.web")

#: Public pages may be cached briefly by browsers and proxies (they hold nothing personal).
PUBLIC_CACHE = "public, max-age=300"
#: The site icon: a plain mark in the header's colour (browsers ask for one on every site).
ICON_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    '<rect width="16" height="16" rx="3" fill="#1a5276"/>'
    '<path d="M4 3v10h8" stroke="#fff" stroke-width="2" fill="none"/></svg>'
)
_PERIOD = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_PAGE = re.compile(r"^[1-9]\d{0,5}$")


@dataclass(frozen=True)
class ArchivedPeriod:
    """One period in the archive list."""

    period: date
    papers: int


async def home(request: Request) -> Response:
    """GET /: what this is, with links to sign up, the archive and the feeds."""
    st = web_state(request)
    topics = [(name, st.settings.topic_title(name)) for name in st.settings.topics]
    response = st.page("index.html", topics=topics)
    response.headers["Cache-Control"] = PUBLIC_CACHE
    return response


async def css(request: Request) -> Response:
    """GET /static/site.css."""
    return Response(
        stylesheet(), media_type="text/css", headers={"Cache-Control": "public, max-age=3600"}
    )


async def icon(request: Request) -> Response:
    """GET /static/icon.svg and /favicon.ico."""
    return Response(
        ICON_SVG, media_type="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"}
    )


def sent_periods(st: WebState) -> list[ArchivedPeriod]:
    """Periods with at least one sent digest, newest first, with their distinct papers."""
    stmt = (
        select(Delivery.period, func.count(distinct(DeliveryPaper.paper_id)))
        .outerjoin(DeliveryPaper, DeliveryPaper.delivery_id == Delivery.id)
        .where(Delivery.state == "sent")
        .group_by(Delivery.period)
        .order_by(Delivery.period.desc())
    )
    with transaction(st.engine) as session:
        return [ArchivedPeriod(p, n) for p, n in session.execute(stmt)]


async def archive(request: Request) -> Response:
    """GET /archive: the sent digests by period."""
    st = web_state(request)
    periods = await run_in_threadpool(sent_periods, st)
    response = st.page("archive.html", periods=periods)
    response.headers["Cache-Control"] = PUBLIC_CACHE
    return response


@dataclass(frozen=True)
class PeriodPage:
    """One page of a period's archived digest: its sections and where it sits."""

    sections: tuple[Section, ...]
    total: int  # distinct papers sent in the period
    page: int
    pages: int
    first: int  # 1-based numbers of the page's first and last papers
    last: int


def period_page(st: WebState, period: date, page: int) -> PeriodPage | None:
    """Page ``page`` of every paper sent in ``period`` (paper id order), in sections.

    None when nothing was sent that period or the page is past the last. A period can hold
    thousands of papers (5,000 took 2.9 s to render in one page), so it is paged.
    """
    size = st.options.archive_page_size
    sent = select(Delivery.id).where(Delivery.period == period, Delivery.state == "sent")
    papers = select(distinct(DeliveryPaper.paper_id)).where(DeliveryPaper.delivery_id.in_(sent))
    with transaction(st.engine) as session:
        if session.scalar(sent.limit(1)) is None:
            return None
        total = session.scalar(select(func.count()).select_from(papers.subquery())) or 0
        pages = max(1, -(-total // size))
        if page > pages:
            return None
        ids = list(
            session.scalars(
                papers.order_by(DeliveryPaper.paper_id).limit(size).offset((page - 1) * size)
            )
        )
        entries = entries_for(session, ids)
    titles = {name: st.settings.topic_title(name) for name in st.settings.topics}
    # A paper tagged with a topic since dropped from the configuration still belongs here.
    for entry in entries:
        for topic in entry.topics:
            titles.setdefault(topic, st.settings.topic_title(topic))
    sections = build_sections(entries, titles)
    first = (page - 1) * size + 1
    return PeriodPage(sections, total, page, pages, first, first + len(ids) - 1)


def parse_period(raw: str) -> date | None:
    """A ``YYYY-MM-DD`` period, or None for anything else."""
    if not _PERIOD.match(raw):
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        return None


def parse_page(raw: str | None) -> int | None:
    """``?page=N`` (absent: 1); None for anything but a positive number of a few digits."""
    if raw is None:
        return 1
    if not _PAGE.match(raw):
        return None
    return int(raw)


async def archive_period(request: Request) -> Response:
    """GET /archive/{period}[?page=N]: the web version of that period's digest, paged."""
    st = web_state(request)
    period = parse_period(request.path_params["period"])
    page = parse_page(request.query_params.get("page"))
    found = None
    if period is not None and page is not None:
        found = await run_in_threadpool(period_page, st, period, page)
    if period is None or found is None:
        return st.error(404, "No digest for that date", "No digest was sent for that date.")
    response = st.page("archive_period.html", period=period, view=found)
    response.headers["Cache-Control"] = PUBLIC_CACHE
    return response


def feed_bytes(st: WebState, topic: str | None, self_url: str) -> tuple[bytes, datetime]:
    """The Atom document for ``topic`` (None: all topics) and when it last changed."""
    with transaction(st.engine) as session:
        items = feeds.recent_items(session, topic, st.options.feed_size)
    base = st.settings.web.base_url
    title = "litwatch: new papers" + (f" on {st.settings.topic_title(topic)}" if topic else "")
    info = feeds.FeedInfo(
        feed_id=self_url,
        title=title,
        self_url=self_url,
        home_url=f"{base}/archive",
        subtitle="Research papers found by litwatch, newest first.",
    )
    now = utcnow()
    return feeds.build_feed(info, items, now), feeds.last_modified(items, now)


async def feed_all(request: Request) -> Response:
    """GET /feed.atom: recent papers on every topic."""
    st = web_state(request)
    body = await run_in_threadpool(feed_bytes, st, None, f"{st.settings.web.base_url}/feed.atom")
    return _feed_response(request, *body)


async def feed_topic(request: Request) -> Response:
    """GET /feed/{topic}.atom: recent papers on one configured topic; 404 for others."""
    st = web_state(request)
    topic = request.path_params["topic"]
    if topic not in st.settings.topics:
        return st.error(404, "No such feed", "There is no feed for that topic.")
    self_url = f"{st.settings.web.base_url}/feed/{topic}.atom"
    body = await run_in_threadpool(feed_bytes, st, topic, self_url)
    return _feed_response(request, *body)


def _feed_response(request: Request, body: bytes, modified: datetime) -> Response:
    """The feed with its validators; 304 without a body when the reader's copy is current."""
    tag = feeds.etag(body)
    headers = {
        "Cache-Control": PUBLIC_CACHE,
        "ETag": tag,
        "Last-Modified": feeds.http_date(modified),
    }
    asked = request.headers
    if feeds.not_modified(
        asked.get("if-none-match"), asked.get("if-modified-since"), tag, modified
    ):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=feeds.MEDIA_TYPE, headers=headers)


def health(st: WebState) -> dict[str, str | None]:
    """Database reachability and the times of the last successful crawl and sent digest."""
    try:
        with transaction(st.engine) as session:
            session.execute(text("SELECT 1"))
            crawled = session.scalar(
                select(func.max(CrawlRun.finished_at)).where(CrawlRun.status == "ok")
            )
            sent = session.scalar(select(func.max(Delivery.sent_at)))
    except SQLAlchemyError as exc:
        log.warning("event=web.health_failed error=%r", exc.__class__.__name__)
        return {"database": "error", "last_crawl": None, "last_digest": None}
    return {"database": "ok", "last_crawl": _iso(crawled), "last_digest": _iso(sent)}


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


async def healthz(request: Request) -> Response:
    """GET /healthz: 200 when the database answers, 503 otherwise (JSON either way)."""
    report = await run_in_threadpool(health, web_state(request))
    status = 200 if report["database"] == "ok" else 503
    return JSONResponse(report, status_code=status, headers={"Cache-Control": "no-store"})
