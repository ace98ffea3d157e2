"""Page rendering for the subscriber web: a Jinja2 environment of its own, autoescaped.

The templates are ``digests/templates/web/*.html``; the archive page imports the digests'
``_entry.html`` macro so an entry looks the same in the e-mail and on the web. Only ``.html``
names are escaped (``select_autoescape``), and every page template ends in ``.html``.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import jinja2
from starlette.responses import HTMLResponse

from digests.render import format_day, http_url


@cache
def environment() -> jinja2.Environment:
    """The page environment (shared by all apps: it holds no per-installation state)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("digests", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    # The two filters _entry.html relies on, with the same meaning as in digests.render.
    env.filters.update(href=lambda url: http_url(url) or "", day=format_day)
    return env


@cache
def stylesheet() -> bytes:
    """The one stylesheet (served from this origin: the CSP allows no inline styles)."""
    return resources.files("digests").joinpath("templates/web/site.css").read_bytes()


def url_root(base_url: str) -> str:
    """The path prefix of ``[web] base_url`` ("" or e.g. "/litwatch") for links in pages."""
    return urlsplit(base_url).path.rstrip("/")


def page(
    name: str, root: str, status: int = 200, headers: dict[str, str] | None = None, **context: Any
) -> HTMLResponse:
    """Render ``web/<name>`` into a response."""
    html = environment().get_template(f"web/{name}").render(root=root, **context)
    return HTMLResponse(html, status_code=status, headers=headers)
