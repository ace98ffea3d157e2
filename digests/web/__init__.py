"""The subscriber web side: sign-up with double opt-in, one-click unsubscribe, preferences,
the archive of sent digests, Atom feeds and a health check (Starlette, served by uvicorn).

Use :func:`create_app`; ``crawler.daemon.web`` and ``litwatch web`` serve it.
"""

from __future__ import annotations

from digests.web.app import create_app
from digests.web.state import WebOptions

__all__ = ["WebOptions", "create_app"]
