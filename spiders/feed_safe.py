"""feedparser on untrusted bytes, shared by every feed-reading spider (journals, ScienceDaily).

feedparser is only a parser here: it is handed bytes, never a URL, and what it cannot safely
read (entity declarations, JSON, HTML pages) is refused first with :class:`FeedError`.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Mapping
from typing import Any

import feedparser
from feedparser.encodings import convert_to_utf8

from crawler.normalise import html_to_text, squash
from crawler.xmlsafe import HEAD_BYTES, UnsafeXMLError, reject_entity_declarations


class FeedError(ValueError):
    """The body is not a feed at all (empty, HTML, JSON, broken beyond use, unsafe XML)."""


def safe_feedparser(
    body: bytes, base_url: str, headers: Mapping[str, str] | None = None
) -> feedparser.FeedParserDict:
    """feedparser on untrusted bytes: refuse what is not a feed, or is unsafe, with FeedError.

    Shared by every feed-reading spider (journals, ScienceDaily). Refused: an empty body, JSON,
    entity declarations (checked after feedparser's own decoding), and documents with no RSS
    or Atom root (HTML pages, truncated XML before the root).
    """
    if not body.strip():
        raise FeedError("empty response body")
    if body.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in (b"{", b"["):
        raise FeedError("JSON document, not an RSS or Atom feed")
    fp_headers = _feedparser_headers(body, base_url, headers or {})
    text = _reject_unsafe(body, fp_headers)
    bounded = bound_author_text(text)
    if bounded is not text:  # hostile author fields: feedparser reads the bounded UTF-8 text
        body, fp_headers = bounded, {**fp_headers, "content-type": "application/xml"}
    try:
        parsed = feedparser.parse(
            io.BytesIO(body),
            response_headers=fp_headers,
            # Markup is flattened to text afterwards; sanitising first is defence in depth,
            # while resolving URIs inside HTML would be wasted work (we keep no HTML).
            sanitize_html=True,
            resolve_relative_uris=False,
        )
    except Exception as exc:
        # feedparser's loose parser has internal errors on some broken documents (a KeyError
        # on "<channel<item<link</item</link>", issue 12 A9): such bytes are no usable feed.
        raise FeedError(f"feedparser could not read it ({type(exc).__name__}: {exc})") from exc
    if not parsed.get("version"):
        raise FeedError(_not_a_feed_message(text, bozo_message(parsed)))
    return parsed


_XML_DECL_ENCODING = re.compile(rb"^\s*<\?xml[^>]*\bencoding\s*=", re.IGNORECASE)
_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")
_CHARSET = re.compile(r";\s*charset\s*=\s*[\"']?([\w.:-]+)", re.IGNORECASE)


def _feedparser_headers(body: bytes, base_url: str, headers: Mapping[str, str]) -> dict[str, str]:
    """The response headers feedparser sees: base URL, and a charset only when it helps.

    feedparser reads lower-case keys. The base URL goes in as Content-Location so relative
    links resolve. The media type is always given as application/xml: servers label feeds
    text/html or text/xml, and RFC 3023's "text/xml without charset means US-ASCII" rule
    (obsoleted by RFC 7303) would otherwise flag every such feed. An HTTP charset is passed on
    only when the document declares none (no BOM, no XML encoding declaration): a server's
    default "ISO-8859-1" is more often wrong than the feed's own declaration.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    content_type = "application/xml"
    charset = _CHARSET.search(lowered.get("content-type", ""))
    if charset and not body.startswith(_BOMS) and not _XML_DECL_ENCODING.match(body[:1024]):
        content_type += f"; charset={charset.group(1)}"
    return {"content-location": base_url, "content-type": content_type}


def _reject_unsafe(body: bytes, fp_headers: dict[str, str]) -> bytes:
    """Refuse entity declarations in the text feedparser will parse; return that text (UTF-8).

    The check runs on feedparser's own UTF-8 conversion of the body, not on the raw bytes:
    feedparser decodes any codec a document declares (UTF-7, EBCDIC...) before expat sees it,
    and in such a codec ``<!ENTITY`` is not those bytes. Entity declarations are refused
    outright (billion laughs, external entities), harmless ones included.
    """
    try:
        text: bytes = convert_to_utf8(fp_headers, body, {})
    except UnicodeError as exc:
        # feedparser 6.0 itself crashes on non-UTF-8 bytes inside encoding="..." (found by
        # fuzzing); such a document is garbage, not a feed.
        raise FeedError(f"undecodable XML declaration ({exc})") from exc
    try:
        reject_entity_declarations(text[:HEAD_BYTES])
    except UnsafeXMLError as exc:
        raise FeedError(f"XML entity declarations are not allowed ({exc})") from exc
    return text


# Elements whose text feedparser runs through its author/e-mail regular expression
# (``_sync_author_detail``), which takes time quadratic in the length of a run of e-mail
# characters: 80 KB of "AAAA..." in one dc:creator took 49 s (issue 12 A4). Children of these
# elements (Atom's <name>, any unknown element) add their text to the same string.
_AUTHOR_OPEN = re.compile(
    rb"<((?:[A-Za-z_][\w.-]*:)?(?:author|creator|contributor|managingeditor|webmaster|publisher"
    rb"|owner))(?=[\s/>])",
    re.IGNORECASE,
)
_EMAIL_RUN = re.compile(rb"[A-Za-z0-9_.+-]+")
#: The most text kept in one author element (the longest real one, a consortium's
#: dc:creator, is a few KB) and the longest run of e-mail characters kept in it (an e-mail
#: local part is at most 64 by RFC 5321; "Wolfeschlegelsteinhausenbergerdorff" is 35).
AUTHOR_BYTES, AUTHOR_RUN = 64 * 1024, 64
#: feedparser's work on a document's author fields, as the sum of the squared run lengths:
#: a real feed of 500 items stays under a million; past this budget (about 0.1 s), runs are
#: cut to HOSTILE_RUN, which bounds the work by eight times the author text.
COST_BUDGET, HOSTILE_RUN = 5_000_000, 8


def bound_author_text(text: bytes) -> bytes:
    """``text`` with its author elements' text bounded; ``text`` itself when nothing was cut.

    Each author-like element (up to its closing tag) keeps :data:`AUTHOR_BYTES` and runs of
    e-mail characters of :data:`AUTHOR_RUN`; when the document's author text still costs
    over :data:`COST_BUDGET`, runs are cut to :data:`HOSTILE_RUN`. feedparser's author
    handling is then linear in the document. Real feeds come back unchanged.
    """
    regions = list(_author_regions(text))
    bounded = [_cut_runs(_truncate(text[start:end]), AUTHOR_RUN) for start, end in regions]
    cost = sum(len(run) ** 2 for region in bounded for run in _EMAIL_RUN.findall(region))
    if cost > COST_BUDGET:
        bounded = [_cut_runs(region, HOSTILE_RUN) for region in bounded]
    pieces: list[bytes] = []
    copied = 0  # text[:copied] is in pieces
    for (start, end), region in zip(regions, bounded, strict=True):
        if region != text[start:end]:
            pieces += [text[copied:start], region]
            copied = end
    if not pieces:
        return text
    return b"".join([*pieces, text[copied:]])


def _author_regions(text: bytes) -> Iterator[tuple[int, int]]:
    """(start, end) of each author element's content, from its start tag to its end tag."""
    skip_to = 0
    for match in _AUTHOR_OPEN.finditer(text):
        if match.start() < skip_to:
            continue  # inside the previous author element
        start = text.find(b">", match.end()) + 1
        if start == 0:
            return
        end = text.find(b"</" + match.group(1), start)
        skip_to = end = len(text) if end < 0 else end
        yield start, end


def _truncate(region: bytes) -> bytes:
    """The first :data:`AUTHOR_BYTES` of ``region``, closing a CDATA section it cut open."""
    if len(region) <= AUTHOR_BYTES:
        return region
    cut = region[:AUTHOR_BYTES]
    if cut.rfind(b"<![CDATA[") > cut.rfind(b"]]>"):
        cut += b"]]>"  # else the rest of the document would be read as this author's text
    return cut


def _cut_runs(region: bytes, longest: int) -> bytes:
    return _EMAIL_RUN.sub(lambda m: m.group()[:longest], region)


def bozo_message(parsed: Any) -> str | None:
    if not parsed.get("bozo"):
        return None
    exc = parsed.get("bozo_exception")
    return squash(f"{type(exc).__name__}: {exc}") if exc else "ill-formed feed"


def _not_a_feed_message(text: bytes, problem: str | None) -> str:
    head = text[:2048].lower()
    if b"<html" in head or b"<!doctype html" in head:
        return "HTML page, not a feed (a login, captcha or error page?)"
    return f"not an RSS or Atom feed ({problem or 'no feed root element'})"


def text_construct(detail: Any) -> str | None:
    """Plain text of a feedparser text construct, honouring its declared type.

    Only a value feedparser typed as HTML is parsed as HTML: a text/plain title such as
    "Serum IL-6 <5 pg/mL" is text and stays exactly that (white space squashed, U+FEFF gone).
    """
    if not detail:
        return None
    value = detail.get("value")
    if "html" in (detail.get("type") or ""):
        return html_to_text(value)
    return squash(value)
