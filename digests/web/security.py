"""Security plumbing for the subscriber pages: headers, body limit, CSRF, rate limiting.

CSRF scheme (signed double submit): a GET of a form page sets a server-made random value
(marked with the installation's key, so a value a client chose is never taken) in a
``SameSite=Strict; HttpOnly`` cookie (``__Host-`` prefixed over https) and puts the same
value, *signed* with the installation's key and time-stamped, in a hidden field. A POST is
accepted only when the field's signature is valid and fresh and its value equals the cookie.
Another site can make a browser send the cookie (not with Strict) or a field, but cannot
read the cookie nor forge a signature for it. An ``Origin`` header, when the browser sends
one, must also be this site's.

Rate limits are counted in the database (``rate_limits``), so several web processes share
them and a restart keeps them. The client is ``request.client``: uvicorn takes it from
X-Forwarded-For only when the peer is one of ``[web] trusted_proxies``.
"""

from __future__ import annotations

import hmac
import itertools
import secrets
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Engine
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crawler.db import ratelimits
from crawler.db.models import utcnow
from digests.tokens import Signer, TokenError

#: No page embeds anything from elsewhere, runs a script or is framed; forms post only here.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
    "object-src 'none'"
)
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    # Token URLs (/u/..., /preferences/...) must not leak to the DOI resolver or a journal
    # through the Referer header when a reader follows a link. Not "no-referrer": with it
    # Chromium sends "Origin: null" on our own form POSTs, which the CSRF check must refuse.
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate CSP 2
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
#: Forms here are a few hundred bytes; refuse anything much larger before parsing it.
MAX_BODY_BYTES = 64 * 1024

CSRF_PURPOSE = "csrf"
CSRF_COOKIE = "litwatch_csrf"
CSRF_FIELD = "csrf_token"
#: A form left open longer than this must be reloaded.
CSRF_MAX_AGE = 12 * 3600


def apply_security_headers(headers: MutableHeaders) -> None:
    """Add the security headers; pages that may be cached set Cache-Control themselves."""
    for name, value in SECURITY_HEADERS.items():
        headers[name] = value
    if "cache-control" not in headers:
        # Most pages carry a personal token in their URL: no shared cache may keep them.
        headers["Cache-Control"] = "no-store"


class SecurityMiddleware:
    """Pure ASGI middleware: security headers on every response, and a request body cap."""

    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                apply_security_headers(MutableHeaders(scope=message))
            await send(message)

        declared = _content_length(scope)
        if declared is not None and declared > self.max_body:
            response = Response("Request body too large.\n", 413, media_type="text/plain")
            await response(scope, receive, send_with_headers)
            return
        await self.app(scope, self._capped(receive), send_with_headers)

    def _capped(self, receive: Receive) -> Receive:
        # A chunked body has no Content-Length: count what arrives instead.
        seen = 0

        async def capped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise HTTPException(413, "Request body too large.")
            return message

        return capped


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class Csrf:
    """Signed double-submit CSRF tokens (see the module docstring)."""

    def __init__(self, signer: Signer, *, secure: bool, allowed_origin: str) -> None:
        self.signer = signer
        self.secure = secure
        self.allowed_origin = allowed_origin
        # Over https the cookie takes the __Host- prefix: browsers then refuse it from a
        # sibling subdomain or plain http, so nobody else can plant one (RFC 6265bis 4.1.3.2).
        self.cookie_name = f"__Host-{CSRF_COOKIE}" if secure else CSRF_COOKIE

    def cookie_value(self, request: Request) -> str:
        """The browser's CSRF value when this server made it, else a fresh one.

        A value the client chose (or a cookie planted by someone else) is replaced, never
        signed: the field is only ever issued for a value carrying the server's mark.
        """
        current = request.cookies.get(self.cookie_name, "")
        if len(current) <= 200 and current.isascii() and self.signer.marked(CSRF_COOKIE, current):
            return current
        return self.signer.mark(CSRF_COOKIE, secrets.token_urlsafe(32))

    def token_for(self, value: str) -> str:
        """The hidden form field that goes with cookie ``value`` (one from :meth:`cookie_value`)."""
        return self.signer.sign(CSRF_PURPOSE, value)

    def attach(self, response: Response, value: str) -> None:
        """Set (or refresh) the CSRF cookie on a page that shows a protected form."""
        response.set_cookie(
            self.cookie_name,
            value,
            max_age=CSRF_MAX_AGE,
            path="/",
            secure=self.secure,
            httponly=True,
            samesite="strict",
        )

    def check(self, request: Request, form: Mapping[str, Any]) -> bool:
        """True when the POST carries a fresh signed field matching a server-made cookie."""
        if not self._origin_ok(request):
            return False
        cookie = request.cookies.get(self.cookie_name, "")
        field = form.get(CSRF_FIELD)
        if not cookie or not isinstance(field, str) or len(field) > 500 or len(cookie) > 200:
            return False
        if not self.signer.marked(CSRF_COOKIE, cookie):
            return False
        try:
            signed = self.signer.verify(CSRF_PURPOSE, field, max_age=CSRF_MAX_AGE)
        except TokenError:
            return False
        return isinstance(signed, str) and hmac.compare_digest(signed, cookie)

    def _origin_ok(self, request: Request) -> bool:
        origin = request.headers.get("origin")
        if origin is None:
            return True  # older browsers and non-browser clients send none
        own = f"{request.url.scheme}://{request.headers.get('host', '')}"
        return origin in (self.allowed_origin, own)


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of ``url`` (what a browser sends as Origin)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class RateLimiter:
    """At most ``limit`` hits per key in each fixed ``window`` seconds, counted in the database.

    Every web process (and every app on one database) shares the counters, and a restart
    keeps them (``crawler.db.ratelimits``). :meth:`hit` does blocking I/O: call it from a
    worker thread (``run_in_threadpool``), never on the event loop. Old windows are pruned
    every ``prune_every`` hits, so a flood of distinct keys costs bounded rows.
    """

    def __init__(
        self,
        engine: Engine,
        scope: str,
        limit: int,
        window: float,
        *,
        clock: Callable[[], datetime] = utcnow,
        prune_every: int = 500,
    ) -> None:
        self.engine = engine
        self.scope = scope
        self.limit = limit
        self.window = window
        self.clock = clock
        self.prune_every = prune_every
        self._hits = itertools.count(1)

    def hit(self, key: str) -> float:
        """Record a hit; 0 when allowed, else the seconds to wait before the next one."""
        now = self.clock()
        if next(self._hits) % self.prune_every == 0:
            ratelimits.prune(self.engine, self.scope, self.window, now)
        current = ratelimits.hit(self.engine, self.scope, key, self.window, now)
        if current.count <= self.limit:
            return 0.0
        left = (current.started - now).total_seconds() + self.window
        return max(left, 1.0)


def client_address(request: Request) -> str:
    """The client's IP (uvicorn resolves X-Forwarded-For only from trusted proxies)."""
    return request.client.host if request.client else "unknown"
