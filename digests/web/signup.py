"""Sign-up with double opt-in: ``/subscribe`` and ``/confirm/{token}``.

The POST /subscribe answer is the same page whatever the address's state (new, pending,
active, unsubscribed), and every state costs one e-mail, so neither the page nor its timing
tells a visitor whether an address is known (no enumeration). The mail is queued, never
sent inside the request (see :mod:`digests.web.mails`): a stalled relay cannot hold the web
server's threads.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from crawler.db.models import utcnow
from digests import subscribers
from digests.mail import Addressed
from digests.outbound import envelope_sender
from digests.tokens import CONFIRM, TokenError
from digests.web import records
from digests.web.mails import MailUnavailable, already_message, confirmation_message, queue_mail
from digests.web.records import SignupChoice
from digests.web.security import CSRF_FIELD, client_address
from digests.web.state import WebState, bad_link, unknown_link, web_state

FORMAT_LABELS = {"html": "Formatted (HTML)", "text": "Plain text"}
MAX_FIELD_CHARS = 400


@dataclass(frozen=True)
class ConfirmLink:
    """What a confirmation token carries: the secret, the choices, when it was issued."""

    secret: str
    topics: list[str]
    fmt: str
    issued: float


def form_text(form: Mapping[str, Any], name: str) -> str:
    """A text field of a parsed form ("" when absent, a file, or absurdly long)."""
    value = form.get(name)
    return value if isinstance(value, str) and len(value) <= MAX_FIELD_CHARS else ""


def form_list(form: Any, name: str) -> list[str]:
    """All text values of a repeated field (checkboxes)."""
    return [v for v in form.getlist(name) if isinstance(v, str) and len(v) <= MAX_FIELD_CHARS]


def topic_choices(st: WebState) -> list[tuple[str, str]]:
    """(name, title) of every configured topic, in configuration order."""
    return [(name, st.settings.topic_title(name)) for name in st.settings.topics]


def csrf_failed(st: WebState) -> HTMLResponse:
    """403 for a POST without a valid CSRF token (a stale form or another site's request)."""
    return st.error(
        403,
        "Please try again",
        "This form has expired or was not sent from this site. Reload the page and send it again.",
    )


def too_many(st: WebState, wait: float) -> HTMLResponse:
    """429 with Retry-After."""
    minutes = max(1, round(wait / 60))
    response = st.error(
        429,
        "Too many requests",
        f"Too many sign-up requests. Please try again in about {minutes} minute(s).",
    )
    response.headers["Retry-After"] = str(int(wait + 0.999))
    return response


def _form_page(
    st: WebState,
    request: Request,
    *,
    status: int = 200,
    email: str = "",
    chosen: list[str] | None = None,
    fmt: str = "html",
    error: str | None = None,
) -> HTMLResponse:
    value = st.csrf.cookie_value(request)
    response = st.page(
        "subscribe.html",
        status,
        topics=topic_choices(st),
        chosen=list(st.settings.topics) if chosen is None else chosen,
        formats=FORMAT_LABELS,
        fmt=fmt,
        email=email,
        error=error,
        csrf_field=CSRF_FIELD,
        csrf=st.csrf.token_for(value),
    )
    st.csrf.attach(response, value)
    return response


async def subscribe_form(request: Request) -> Response:
    """GET /subscribe: the sign-up form."""
    return _form_page(web_state(request), request)


async def subscribe_post(request: Request) -> Response:
    """POST /subscribe: validate, rate-limit, record, mail; the same answer for any address."""
    st = web_state(request)
    wait = await run_in_threadpool(st.per_client.hit, client_address(request))
    if wait:
        return too_many(st, wait)
    form = await request.form()
    if not st.csrf.check(request, form):
        return csrf_failed(st)
    email, chosen, fmt = (
        form_text(form, "email"),
        form_list(form, "topics"),
        form_text(form, "format"),
    )
    try:
        address, key = subscribers.normalise_email(email)
        topics = subscribers.check_topics(chosen, st.settings.topics)
        subscribers.check_format(fmt)
    except subscribers.SubscriberError as exc:
        return _form_page(
            st, request, status=400, email=email, chosen=chosen, fmt=fmt or "html", error=str(exc)
        )
    wait = await run_in_threadpool(st.per_address.hit, key)
    if wait:
        return too_many(st, wait)
    try:
        await run_in_threadpool(request_subscription, st, SignupChoice(address, key, topics, fmt))
    except MailUnavailable:
        return st.error(
            503, "Please try again later", "We could not send the e-mail just now. Please retry."
        )
    hours = st.options.confirm_max_age // 3600
    return st.page("subscribe_sent.html", hours=hours)


def request_subscription(st: WebState, choice: SignupChoice) -> None:
    """Record the request and queue the matching mail (confirmation, or "already
    subscribed"); MailUnavailable only when the mail queue is full."""
    sub = records.record_signup(
        st.engine, choice, list(st.settings.topics), st.settings.digest.timezone
    )
    now = utcnow()
    if sub.status == "active":
        msg = already_message(st.settings, sub.email, st.links.preferences(sub), now)
    else:
        payload = {"s": sub.token, "t": choice.topics, "f": choice.fmt, "i": time.time()}
        link = f"{st.settings.web.base_url}/confirm/{st.signer.sign(CONFIRM, payload)}"
        hours = st.options.confirm_max_age // 3600
        msg = confirmation_message(st.settings, sub.email, link, hours, now)
    # VERP like every digest: a bounce of this mail names its subscriber too.
    sender = envelope_sender(st.settings, st.engine, sub.id)
    queue_mail(st.settings, Addressed(msg, sender) if sender else msg, sub.email)


def read_confirm_link(st: WebState, token: str) -> ConfirmLink:
    """The checked content of a confirmation token; TokenError when forged or expired."""
    value = st.verify(CONFIRM, token, max_age=st.options.confirm_max_age)
    if not isinstance(value, dict):
        raise TokenError("this link is not valid")
    secret, topics, fmt, issued = (value.get(k) for k in ("s", "t", "f", "i"))
    if (
        not isinstance(secret, str)
        or not isinstance(topics, list)
        or not all(isinstance(t, str) for t in topics)
        or not isinstance(fmt, str)
        or not isinstance(issued, int | float)
    ):
        raise TokenError("this link is not valid")
    return ConfirmLink(secret, topics, fmt, float(issued))


async def confirm_page(request: Request) -> Response:
    """GET /confirm/{token}: a page whose button confirms (a GET never changes anything)."""
    st = web_state(request)
    token = request.path_params["token"]
    try:
        link = read_confirm_link(st, token)
    except TokenError as exc:
        return bad_link(st, exc)
    sub = await run_in_threadpool(records.find_by_secret, st.engine, link.secret)
    if sub is None:
        return unknown_link(st)
    return st.page("confirm.html", token=token, email=sub.email, active=sub.status == "active")


async def confirm_post(request: Request) -> Response:
    """POST /confirm/{token}: activate the subscription (idempotent)."""
    st = web_state(request)
    try:
        link = read_confirm_link(st, request.path_params["token"])
    except TokenError as exc:
        return bad_link(st, exc)
    outcome, sub = await run_in_threadpool(
        records.activate,
        st.engine,
        link.secret,
        link.topics,
        link.fmt,
        link.issued,
        list(st.settings.topics),
    )
    if sub is None:
        return unknown_link(st)
    if outcome == "stale":
        return st.error(
            410,
            "This link is out of date",
            "You unsubscribed after this link was sent. To subscribe again, use the sign-up form.",
        )
    return st.page("confirmed.html", preferences=st.links.preferences(sub), email=sub.email)
