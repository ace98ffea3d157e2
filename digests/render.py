"""Render a :class:`~digests.model.Digest` into the parts of an e-mail.

Pure: no database, no SMTP. Templates live in ``digests/templates``: ``*.html`` ones are
autoescaped, ``*.txt`` ones are not (``select_autoescape`` decides by the last extension, so a
``x.html.j2`` name would silently turn escaping off). Stored text is plain text and is escaped
exactly once, by Jinja; the CSS written in the template's ``<style>`` block is inlined afterwards
with css-inline because Gmail and Outlook ignore most ``<style>`` rules.
"""

from __future__ import annotations

import textwrap
import unicodedata
from dataclasses import dataclass, replace
from datetime import date
from functools import cache
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import css_inline
import jinja2

from digests.model import Digest, Entry, Section

#: Gmail clips an HTML body over about 102 KB behind a "[Message clipped]" link, which also
#: hides the unsubscribe footer; entries are dropped from the end to stay under this.
MAX_HTML_BYTES = 100_000
#: The text part lists this many entries at most, then points to the web version. It is not
#: clipped anywhere, but a 400 KB plain-text mail is not something anyone reads to the end.
TEXT_MAX_ENTRIES = 250
#: Plain-text line width (RFC 5322 asks for at most 78; 72 leaves room for quoting).
TEXT_WIDTH = 72

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_SCHEMES = frozenset({"http", "https"})


@dataclass(frozen=True)
class Rendered:
    """The parts of one digest e-mail; ``html`` is None for text-only subscribers."""

    subject: str
    text: str
    html: str | None
    #: ``text`` and ``html`` quoted-printable encoded for the wire, when the composer could
    #: fill them from a template encoded once (:mod:`digests.compose`); else None and
    #: encoded as the message is built.
    text_qp: str | None = None
    html_qp: str | None = None


class _Numbered(NamedTuple):
    number: int
    entry: Entry


class _SectionView(NamedTuple):
    title: str
    items: tuple[_Numbered, ...]


def render(digest: Digest) -> Rendered:
    """Render the subject, the text part and (for HTML subscribers) the HTML part."""
    html = render_html(digest) if digest.format == "html" else None
    return Rendered(subject(digest), render_text(digest), html)


def subject(digest: Digest) -> str:
    """The subject line, built only from a count and a date (never from network text)."""
    n, k, u = digest.paper_count, len(digest.news), len(digest.updates)
    parts = [f"{u} update{'' if u == 1 else 's'} on papers you were sent"] if u else []
    if n:
        parts.append(f"{n} new paper{'' if n == 1 else 's'}")
    if k:
        parts.append(f"{k} news stor{'y' if k == 1 else 'ies'}")
    what = ", ".join(parts) or "nothing new"
    return f"litwatch weekly digest: {what} ({digest.period.isoformat()})"


def render_text(digest: Digest) -> str:
    """The plain-text part: everything up to :data:`TEXT_MAX_ENTRIES` entries."""
    views, omitted = _views(digest.sections, TEXT_MAX_ENTRIES)
    return _template("digest.txt").render(_context(digest, views, omitted, web=False))


def render_html(digest: Digest, max_bytes: int = MAX_HTML_BYTES) -> str:
    """The inlined HTML part, with entries dropped from the end to fit in ``max_bytes``.

    Dropped entries are the lowest ranked of the last sections; a note says how many and
    links to the web version.
    """
    total = sum(len(s.entries) for s in digest.sections)
    html = _html(digest, total, web=False)
    if len(html.encode()) <= max_bytes:
        return html
    # Size grows with every entry kept, so binary-search the largest count that fits.
    low, high = 0, total - 1
    best = _html(digest, 0, web=False)
    while low <= high:
        mid = (low + high) // 2
        candidate = _html(digest, mid, web=False)
        if len(candidate.encode()) <= max_bytes:
            best, low = candidate, mid + 1
        else:
            high = mid - 1
    return best


def render_web(digest: Digest) -> str:
    """A complete HTML page for the web archive: the same body, every entry, no size cap."""
    total = sum(len(s.entries) for s in digest.sections)
    return _html(digest, total, web=True)


def http_url(url: str | None) -> str | None:
    """``url`` when it is an absolute http(s) URL, else None (no ``javascript:``, ``data:``).

    White space and control characters anywhere are refused rather than cleaned: browsers
    strip them, so ``java\\tscript:`` would otherwise slip past a scheme check.
    """
    if not url:
        return None
    url = url.strip()
    if any(ch.isspace() or unicodedata.category(ch) == "Cc" for ch in url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. "http://[::1" (unbalanced IPv6 bracket)
        return None
    if parts.scheme.lower() not in _SCHEMES or not parts.netloc:
        return None
    return url


def _html(digest: Digest, keep: int, *, web: bool) -> str:
    views, omitted = _views(digest.sections, keep)
    page = _template("digest.html").render(_context(digest, views, omitted, web=web))
    return _inliner().inline(page)


def _views(sections: tuple[Section, ...], keep: int) -> tuple[list[_SectionView], int]:
    """Number entries across sections and keep the first ``keep``; also return the rest."""
    views: list[_SectionView] = []
    number = 0
    for section in sections:
        items = []
        for entry in section.entries:
            number += 1
            if number <= keep:
                items.append(_Numbered(number, entry))
        if items:
            views.append(_SectionView(section.title, tuple(items)))
    return views, max(0, number - keep)


def _context(
    digest: Digest, views: list[_SectionView], omitted: int, *, web: bool
) -> dict[str, Any]:
    return {
        "digest": digest,
        "sections": views,
        "omitted": omitted,
        "web": web,
        "subject": subject(digest),
        "links": replace(
            digest.links,
            **{k: http_url(v) or "" for k, v in vars(digest.links).items()},
        ),
    }


def _template(name: str) -> jinja2.Template:
    return _environment().get_template(name)


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("digests", "templates"),
        # Only *.html escapes; text templates must show "<5 pg/mL" exactly as written.
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        href=lambda url: http_url(url) or "",
        day=format_day,
        wrap=_wrap,
        plain=_plain,
        underline=lambda text, char="-": char * len(text),
        bullet=lambda number: f"{number}. ".ljust(4),
    )
    return env


@cache
def _inliner() -> css_inline.CSSInliner:
    # keep_at_rules leaves the @media rules (phones) in a <style> block, since they cannot be
    # inlined; remote stylesheets are never fetched while rendering.
    return css_inline.CSSInliner(keep_at_rules=True, minify_css=True, load_remote_stylesheets=False)


def format_day(value: date | None) -> str:
    """``3 Mar 2025``: locale-independent, unambiguous on both sides of the Atlantic."""
    if value is None:
        return ""
    return f"{value.day} {_MONTHS[value.month - 1]} {value.year}"


def _plain(text: str | None) -> str:
    """Text for the plain part: control characters (ANSI escapes, stray CR/LF) become spaces."""
    if not text:
        return ""
    cleaned = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text)
    return " ".join(cleaned.split())


def _wrap(text: str | None, indent: int = 0, first: str = "") -> str:
    """Word-wrap ``text`` to :data:`TEXT_WIDTH`, never breaking inside a word or a URL."""
    pad = " " * indent
    return textwrap.fill(
        _plain(text),
        width=TEXT_WIDTH,
        initial_indent=first or pad,
        subsequent_indent=pad,
        break_long_words=False,
        break_on_hyphens=False,
    )
