"""What every request handler shares: settings, engine, signer, CSRF and rate limiters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from starlette.requests import Request
from starlette.responses import HTMLResponse

from crawler.settings import Settings
from digests.tokens import LINK_MAX_AGE, Links, Signer, TokenError
from digests.web.pages import page, url_root
from digests.web.security import Csrf, RateLimiter

#: Confirmation links expire after this long (the issue asks for an expiring link).
CONFIRM_MAX_AGE = 48 * 3600
#: The longest token any of our links carries is far below this; longer is not ours.
MAX_TOKEN_CHARS = 512


@dataclass(frozen=True)
class WebOptions:
    """Tunables of the web app (tests shorten them; the defaults suit production)."""

    confirm_max_age: int = CONFIRM_MAX_AGE
    #: Sign-up requests per address: (how many, per seconds).
    address_limit: tuple[int, float] = (3, 3600.0)
    #: Sign-up requests per client IP: (how many, per seconds).
    client_limit: tuple[int, float] = (20, 3600.0)
    #: Unsubscribe and preferences links work this long after they were sent (seconds).
    link_max_age: int = LINK_MAX_AGE
    #: Papers per page of a period in the public archive.
    archive_page_size: int = 100
    #: Papers in an Atom feed.
    feed_size: int = 100


@dataclass
class WebState:
    """Per-app state, kept on ``app.state.web``."""

    settings: Settings
    engine: Engine
    signer: Signer
    options: WebOptions
    csrf: Csrf
    per_address: RateLimiter
    per_client: RateLimiter
    root: str = field(init=False)

    def __post_init__(self) -> None:
        self.root = url_root(self.settings.web.base_url)

    @property
    def links(self) -> Links:
        """Signed per-subscriber links, built exactly as the digests build them."""
        return Links(self.settings, self.signer)

    def page(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        """Render a page template with the site's root path."""
        return page(name, self.root, status, **context)

    def error(self, status: int, title: str, message: str) -> HTMLResponse:
        """The error page (also used for bad links: it explains, it never changes anything)."""
        return page("error.html", self.root, status, title=title, message=message)

    def verify(self, purpose: str, token: str, *, max_age: int | None = None) -> Any:
        """The value signed in ``token``; TokenError when it is not a valid ``purpose`` link."""
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenError("this link is not valid")
        return self.signer.verify(purpose, token, max_age=max_age)


def web_state(request: Request) -> WebState:
    """The app's :class:`WebState`."""
    state: WebState = request.app.state.web
    return state


def bad_link(st: WebState, exc: TokenError) -> HTMLResponse:
    """400 for a forged, mangled or expired link."""
    return st.error(
        400,
        "This link does not work",
        f"{str(exc).capitalize()}. Copy the whole link from the e-mail, or ask for a new one.",
    )


def unknown_link(st: WebState) -> HTMLResponse:
    """404 for a genuine link whose subscriber no longer exists."""
    return st.error(
        404, "Subscription not found", "This link belongs to a subscription that no longer exists."
    )
