"""Compose one subscriber's digest message: render once per distinct content, personalise cheaply.

Most subscribers of one week share a digest's content (same topics, same papers, same
format); only the greeting, the address and the signed links differ. Rendering (Jinja2 plus
CSS inlining) is by far the costliest step of a send, so a digest is rendered with
placeholders for the personal parts and cached by content; each subscriber's copy is then a
few string replacements, with values escaped for HTML where they land in HTML.
"""

from __future__ import annotations

import html
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from crawler.settings import Settings
from digests.mail import quoted_printable, quoted_printable_lines
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
        self._cache: OrderedDict[tuple[object, ...], _Template] = OrderedDict()
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
            rendered = render(self.digest(entries, topics, period, fmt, placeholder, news, updates))
            template = _Template(rendered)
            self.renders += 1
            self._cache[key] = template
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return template.fill(personal)


class _Template:
    """A rendered digest with placeholders, and its bodies cut once at the lines that hold
    one: a subscriber's copy, and its quoted-printable form for the wire, are then the
    constant parts (encoded once) joined with the few personal lines filled and encoded."""

    def __init__(self, rendered: Rendered) -> None:
        self.rendered = rendered
        self.text = _Lines(rendered.text)
        self.html = _Lines(rendered.html) if rendered.html is not None else None

    def fill(self, personal: Personal) -> Rendered:
        text, text_qp = self.text.fill(personal, escape=False)
        html, html_qp = self.html.fill(personal, escape=True) if self.html else (None, None)
        return Rendered(self.rendered.subject, text, html, text_qp, html_qp)


class _Lines:
    """One body's lines: runs without a placeholder (kept, and encoded once), and lines with
    one (filled for each subscriber). Quoted-printable never joins lines, so encoding the
    parts one by one gives the bytes encoding the filled body would."""

    def __init__(self, body: str) -> None:
        self.body = body
        #: (constant text with its line ends, its encoding) or (a line to fill, None).
        self.parts: list[tuple[str, str | None]] | None = None
        if _OTHER_BREAKS.search(body):
            return  # only "\n" is cut here: such a body is filled and encoded whole
        parts: list[tuple[str, str | None]] = []
        run: list[str] = []
        for line in body.splitlines() or [""]:
            if _PLACEHOLDER.search(line) is None:
                run.append(line)
                continue
            if run:
                parts.append(_constant(run))
                run = []
            parts.append((line, None))
        if run:
            parts.append(_constant(run))
        self.parts = parts

    def fill(self, personal: Personal, *, escape: bool) -> tuple[str, str | None]:
        """The body filled for ``personal``, and its quoted-printable form (None when the
        body could not be cut)."""
        if self.parts is None:
            return _fill(self.body, personal, escape=escape), None
        plain: list[str] = []
        encoded: list[str] = []
        open_end = not self.body.endswith("\n")  # the last line has no line end of its own
        last = len(self.parts) - 1
        for n, (text, qp) in enumerate(self.parts):
            if qp is None:
                text = _fill(text, personal, escape=escape)
                if n == last and open_end:  # its lines as the whole body would have them
                    qp = quoted_printable_lines(text) if text.splitlines() else ""
                else:
                    text += "\n"
                    qp = quoted_printable_lines(text)
            plain.append(text)
            encoded.append(qp)
        body = "".join(plain)
        if open_end and self.parts[last][1] is not None:
            body = body[:-1]  # a constant part ends every line, the body's last one included
        return body, "".join(encoded) or "\r\n"  # an empty body is still one line


def _constant(lines: list[str]) -> tuple[str, str]:
    text = "\n".join(lines) + "\n"
    return text, quoted_printable(text)


def _fill(text: str, personal: Personal, *, escape: bool) -> str:
    def value(v: str | None) -> str:
        return html.escape(v or "", quote=True) if escape else (v or "")

    return (
        text.replace(_NAME, value(personal.name))
        .replace(_EMAIL, value(personal.email))
        .replace(_UNSUB, value(personal.unsubscribe))
        .replace(_PREFS, value(personal.preferences))
    )


_PLACEHOLDER = re.compile("|".join(re.escape(p) for p in (_NAME, _EMAIL, _UNSUB, _PREFS)))
#: Line breaks that str.splitlines() knows besides "\n" (a rendered body has none).
_OTHER_BREAKS = re.compile("[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def make_composer(settings: Settings) -> Composer:
    """The composer of an installation: its topics' titles and its web pages' addresses."""
    titles = {name: settings.topic_title(name) for name in settings.topics}
    return Composer(titles, f"{settings.web.base_url}/archive", settings.web.base_url)
