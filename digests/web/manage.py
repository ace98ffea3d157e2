"""Managing a subscription: ``/u/{token}`` (unsubscribe) and ``/preferences/{token}``.

Unsubscribe follows RFC 8058: mailbox providers POST ``List-Unsubscribe=One-Click`` to the
URL of the ``List-Unsubscribe`` header, without cookies, and expect it to work at once, so the
POST needs no CSRF token (the signed token in the URL is the only credential, and a forger
cannot make one). Link scanners follow GETs, so a GET only shows the button.
"""

from __future__ import annotations

import zoneinfo
from functools import cache

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from crawler.db.models import Subscriber
from digests import subscribers
from digests.tokens import PREFERENCES, UNSUBSCRIBE, TokenError
from digests.web import records
from digests.web.security import CSRF_FIELD
from digests.web.signup import FORMAT_LABELS, csrf_failed, form_list, form_text, topic_choices
from digests.web.state import WebState, bad_link, unknown_link, web_state

ONE_CLICK_FIELD = "List-Unsubscribe"
ONE_CLICK_VALUE = "One-Click"


@cache
def timezone_names() -> tuple[str, ...]:
    """IANA zone names for the time zone menu (the posix/ and right/ copies left out)."""
    names = zoneinfo.available_timezones()
    return tuple(
        sorted(
            n for n in names if not n.startswith(("posix/", "right/")) and n not in ("localtime",)
        )
    )


def _refused(st: WebState, exc: TokenError) -> HTMLResponse:
    """The page for a bad link; an expired one says where a working link is."""
    if exc.expired:
        days = st.options.link_max_age // 86400
        return st.error(
            400,
            "This link has expired",
            f"Links in digests work for {days} days. Use the link in your most recent digest.",
        )
    return bad_link(st, exc)


def _secret(st: WebState, purpose: str, token: str) -> str:
    value = st.verify(purpose, token, max_age=st.options.link_max_age)
    if not isinstance(value, str):
        raise TokenError("this link is not valid")
    return value


async def _linked(st: WebState, purpose: str, token: str) -> Subscriber | Response:
    """The subscriber a signed link points at, or the error page to show instead."""
    try:
        secret = _secret(st, purpose, token)
    except TokenError as exc:
        return _refused(st, exc)
    sub = await run_in_threadpool(records.find_by_secret, st.engine, secret)
    return unknown_link(st) if sub is None else sub


async def unsubscribe_page(request: Request) -> Response:
    """GET /u/{token}: the confirmation page with the one-click button."""
    st = web_state(request)
    token = request.path_params["token"]
    sub = await _linked(st, UNSUBSCRIBE, token)
    if isinstance(sub, Response):
        return sub
    return st.page(
        "unsubscribe.html",
        token=token,
        email=sub.email,
        left=sub.status == "unsubscribed",
        field=ONE_CLICK_FIELD,
        value=ONE_CLICK_VALUE,
    )


async def unsubscribe_post(request: Request) -> Response:
    """POST /u/{token} with ``List-Unsubscribe=One-Click``: unsubscribe now (idempotent)."""
    st = web_state(request)
    try:
        secret = _secret(st, UNSUBSCRIBE, request.path_params["token"])
    except TokenError as exc:
        return _refused(st, exc)
    form = await request.form()
    if form.get(ONE_CLICK_FIELD) != ONE_CLICK_VALUE:
        return st.error(
            400, "Nothing was changed", "To unsubscribe, use the button on the unsubscribe page."
        )
    sub = await run_in_threadpool(records.unsubscribe, st.engine, secret)
    if sub is None:
        return unknown_link(st)
    return st.page("unsubscribed.html", email=sub.email)


def _preferences_page(
    st: WebState,
    request: Request,
    token: str,
    sub: Subscriber,
    *,
    status: int = 200,
    notice: str | None = None,
    error: str | None = None,
) -> HTMLResponse:
    value = st.csrf.cookie_value(request)
    zones = timezone_names()
    response = st.page(
        "preferences.html",
        status,
        token=token,
        sub=sub,
        left=sub.status == "unsubscribed",
        topics=topic_choices(st),
        formats=FORMAT_LABELS,
        zones=zones if sub.timezone in zones else (sub.timezone, *zones),
        notice=notice,
        error=error,
        csrf_field=CSRF_FIELD,
        csrf=st.csrf.token_for(value),
    )
    st.csrf.attach(response, value)
    return response


async def preferences_page(request: Request) -> Response:
    """GET /preferences/{token}: topics, format, time zone, and a way to leave."""
    st = web_state(request)
    token = request.path_params["token"]
    sub = await _linked(st, PREFERENCES, token)
    if isinstance(sub, Response):
        return sub
    return _preferences_page(st, request, token, sub)


async def preferences_post(request: Request) -> Response:
    """POST /preferences/{token}: save (``action=save``) or leave (``action=leave``)."""
    st = web_state(request)
    token = request.path_params["token"]
    try:
        secret = _secret(st, PREFERENCES, token)
    except TokenError as exc:
        return _refused(st, exc)
    form = await request.form()
    if not st.csrf.check(request, form):
        return csrf_failed(st)
    if form_text(form, "action") == "leave":
        left = await run_in_threadpool(records.unsubscribe, st.engine, secret)
        return st.page("unsubscribed.html", email=left.email) if left else unknown_link(st)
    sub = await run_in_threadpool(records.find_by_secret, st.engine, secret)
    if sub is None:
        return unknown_link(st)
    if sub.status == "unsubscribed":
        return _preferences_page(st, request, token, sub, status=409)
    try:
        topics = subscribers.check_topics(form_list(form, "topics"), st.settings.topics)
        fmt = subscribers.check_format(form_text(form, "format"))
        tz = subscribers.check_timezone(form_text(form, "timezone") or "UTC")
    except subscribers.SubscriberError as exc:
        return _preferences_page(st, request, token, sub, status=400, error=str(exc))
    updates = form_text(form, "updates") == "yes"
    saved = await run_in_threadpool(
        records.update_preferences, st.engine, secret, topics, fmt, tz, updates
    )
    if saved is None:
        return unknown_link(st)
    return _preferences_page(st, request, token, saved, notice="Your preferences were saved.")
