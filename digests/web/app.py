"""The Starlette application: routes, error pages and middleware."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from crawler.settings import Settings
from digests.tokens import signer_for
from digests.web import manage, public, signup, webhooks
from digests.web.security import (
    Csrf,
    RateLimiter,
    SecurityMiddleware,
    apply_security_headers,
    origin_of,
)
from digests.web.state import WebOptions, WebState, web_state

log = logging.getLogger("litwatch.web")

Endpoint = Callable[[Request], Awaitable[Response]]


def get_or_post(get: Endpoint, post: Endpoint) -> Endpoint:
    """One endpoint for a path served by GET and POST (one Route, so a 405 lists both)."""

    async def endpoint(request: Request) -> Response:
        return await (post if request.method == "POST" else get)(request)

    return endpoint


ROUTES = [
    Route("/", public.home, methods=["GET"]),
    Route("/static/site.css", public.css, methods=["GET"]),
    Route("/static/icon.svg", public.icon, methods=["GET"]),
    Route("/favicon.ico", public.icon, methods=["GET"]),
    Route(
        "/subscribe",
        get_or_post(signup.subscribe_form, signup.subscribe_post),
        methods=["GET", "POST"],
    ),
    Route(
        "/confirm/{token}",
        get_or_post(signup.confirm_page, signup.confirm_post),
        methods=["GET", "POST"],
    ),
    Route(
        "/u/{token}",
        get_or_post(manage.unsubscribe_page, manage.unsubscribe_post),
        methods=["GET", "POST"],
    ),
    Route(
        "/preferences/{token}",
        get_or_post(manage.preferences_page, manage.preferences_post),
        methods=["GET", "POST"],
    ),
    Route("/archive", public.archive, methods=["GET"]),
    Route("/archive/{period}", public.archive_period, methods=["GET"]),
    Route("/feed.atom", public.feed_all, methods=["GET"]),
    Route("/feed/{topic}.atom", public.feed_topic, methods=["GET"]),
    Route("/healthz", public.healthz, methods=["GET"]),
    Route("/webhooks/bounces/{provider}", webhooks.bounce_webhook, methods=["POST"]),
    Route("/webhooks/bounces/{provider}/{secret}", webhooks.bounce_webhook, methods=["POST"]),
]

_TITLES = {
    404: ("Page not found", "There is nothing at this address."),
    405: ("Not allowed", "This page cannot be used that way."),
    413: ("Too large", "The request was too large."),
}


async def http_error(request: Request, exc: Exception) -> Response:
    """Error pages for Starlette's HTTP errors (unknown path, wrong method, body too large)."""
    assert isinstance(exc, HTTPException)
    title, message = _TITLES.get(exc.status_code, ("Request not understood", str(exc.detail)))
    response = web_state(request).error(exc.status_code, title, message)
    if exc.headers:
        response.headers.update(exc.headers)  # e.g. Allow on a 405
    return response


async def server_error(request: Request, exc: Exception) -> Response:
    """A plain 500 page; this one is built outside the middleware, so add the headers here."""
    log.error("event=web.error path=%s error=%r", request.url.path, exc, exc_info=exc)
    response = web_state(request).error(
        500, "Something went wrong", "Please try again in a few minutes."
    )
    apply_security_headers(MutableHeaders(raw=response.raw_headers))
    return response


def create_app(settings: Settings, engine: Engine, options: WebOptions | None = None) -> Starlette:
    """The subscriber web application for this installation."""
    options = options or WebOptions()
    signer = signer_for(engine)
    base = settings.web.base_url
    state = WebState(
        settings=settings,
        engine=engine,
        signer=signer,
        options=options,
        csrf=Csrf(signer, secure=base.startswith("https://"), allowed_origin=origin_of(base)),
        per_address=RateLimiter(engine, "signup-address", *options.address_limit),
        per_client=RateLimiter(engine, "signup-client", *options.client_limit),
    )
    app = Starlette(
        routes=ROUTES,
        middleware=[Middleware(SecurityMiddleware)],
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    app.state.web = state
    return app
