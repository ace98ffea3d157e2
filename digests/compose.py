"""Compose one subscriber's digest message: render once per distinct content, personalise cheaply.

Most subscribers of one week share a digest's content (same topics, same papers, same
format); only the greeting, the address and the signed links differ. Rendering (Jinja2 plus
CSS inlining) is by far the costliest step of a send, so a digest is rendered with
placeholders for the personal parts and cached by content; each subscriber's copy is then a
few string replacements, with values escaped for HTML where they land in HTML.
"""

from __future__ import annotations

import html
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from crawler.settings import Settings
from digests.model import Digest, DigestLinks, Entry, NewsEntry, build_news, build_sections
from digests.render import Rendered, render
from digests.updates import Update

# Placeholders: plain ASCII letters and digits, so escaping, inlining and wrapping leave them
# intact, and unlikely in any real text.
_NAME = "Qz9NAMEqZ9"
_EMAIL = "qz9mail9zq@placeholder.invalid"
_UNSUB = "https://placeholder.invalid/Qz9UNSUB9zQ"
_PREFS = "https://placeholder.invalid/Qz9PREFS9zQ"
_CACHE_SIZE = 64


@dataclass(frozen=True)
class Personal:
    """What differs between two subscribers receiving the same content."""

    name: str | None
    email: str
    unsubscribe: str
    preferences: str


class Composer:
    """Renders digests, caching the rendering of each distinct content."""

    def __init__(self, topic_titles: dict[str, str], archive_url: str, home_url: str) -> None:
        self.topic_titles = topic_titles
        self.archive_url = archive_url
        self.home_url = home_url
        self._cache: OrderedDict[tuple[object, ...], Rendered] = OrderedDict()
        self.renders = 0

    def digest(
        self,
        entries: Sequence[Entry],
        topics: Sequence[str],
        period: date,
        fmt: str,
        personal: Personal,
        news: Sequence[NewsEntry] = (),
        updates: Sequence[Update] = (),
    ) -> Digest:
        """The Digest for one subscriber (used directly by previews and the web archive).

        ``news``: stories naming no paper, for the "In the news" section (which also takes
        the stories older versions stored as papers, see :func:`digests.model.build_news`).
        """
        titles = {t: self.topic_titles.get(t, t) for t in topics}
        return Digest(
            subscriber_name=personal.name,
            subscriber_email=personal.email,
            period=period,
            period_start=None,
            sections=build_sections(entries, titles),
            links=DigestLinks(
                unsubscribe=personal.unsubscribe,
                preferences=personal.preferences,
                archive=f"{self.archive_url}/{period.isoformat()}",
                home=self.home_url,
            ),
            format="text" if fmt == "text" else "html",
            news=build_news(entries, news, topics),
            updates=tuple(updates),
        )

    def compose(
        self,
        entries: Sequence[Entry],
        topics: Sequence[str],
        period: date,
        fmt: str,
        personal: Personal,
        news: Sequence[NewsEntry] = (),
        updates: Sequence[Update] = (),
    ) -> Rendered:
        key = (
            tuple(e.paper_id for e in entries),
            tuple(n.url for n in news),
            tuple(u.event_id for u in updates),
            tuple(topics),
            period,
            fmt,
            bool(personal.name),
        )
        template = self._cache.get(key)
        if template is None:
            placeholder = Personal(_NAME if personal.name else None, _EMAIL, _UNSUB, _PREFS)
            template = render(self.digest(entries, topics, period, fmt, placeholder, news, updates))
            self.renders += 1
            self._cache[key] = template
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return Rendered(
            subject=template.subject,
            text=_fill(template.text, personal, escape=False),
            html=_fill(template.html, personal, escape=True) if template.html is not None else None,
        )


def _fill(text: str, personal: Personal, *, escape: bool) -> str:
    def value(v: str | None) -> str:
        return html.escape(v or "", quote=True) if escape else (v or "")

    return (
        text.replace(_NAME, value(personal.name))
        .replace(_EMAIL, value(personal.email))
        .replace(_UNSUB, value(personal.unsubscribe))
        .replace(_PREFS, value(personal.preferences))
    )


def make_composer(settings: Settings) -> Composer:
    """The composer of an installation: its topics' titles and its web pages' addresses."""
    titles = {name: settings.topic_title(name) for name in settings.topics}
    return Composer(titles, f"{settings.web.base_url}/archive", settings.web.base_url)
