"""Hardened XML parsing shared by every XML parser in litwatch.

Everything we parse came off the network, so two classic attacks apply:

* entity expansion ("billion laughs"): a few hundred bytes of nested ``<!ENTITY>`` declarations
  that expand to gigabytes;
* external entities (XXE): ``<!ENTITY x SYSTEM "file:///etc/passwd">`` pulls local files or
  network resources into the parsed text.

Both need entity declarations in the document's DOCTYPE, and no feed or E-utilities answer we
consume declares any (PubMed only names an external DTD, which we never load). So we do two
things: a cheap byte-level pre-check that rejects any DOCTYPE declaring entities, and, as a second
line of defence, an lxml parser configured never to expand entities, never to load a DTD and
never to touch the network.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import lxml.etree

#: How much of a stream the pre-check inspects. Real prologs (XML declaration, comments and a
#: DOCTYPE naming an external DTD) are a few hundred bytes; a DOCTYPE that does not end within
#: this many bytes is rejected rather than waved through.
HEAD_BYTES = 64 * 1024

# The parser options that make lxml safe for untrusted input (lxml >= 5 defaults to expanding
# internal entities, so every option is spelled out).
_SAFE_OPTIONS: dict[str, Any] = {
    "resolve_entities": False,  # never substitute entity references, internal or external
    "no_network": True,  # never fetch a DTD or entity over the network
    "load_dtd": False,  # never read the external DTD subset (PubMed's DOCTYPE names one)
    "dtd_validation": False,
    "huge_tree": False,  # keep libxml2's limits on depth and text-node size
}

# Tokens inside a DOCTYPE: quoted literals and comments are skipped whole so that a ``]`` or ``>``
# inside them cannot end the declaration early.
_DOCTYPE_TOKEN = re.compile(
    rb"\"[^\"]*\"|'[^']*'|<!--.*?-->|[\[\]>]|[^\"'\[\]<>]+|<",
    re.DOTALL,
)
# What may come before a DOCTYPE: an XML declaration, processing instructions, comments, space.
_PROLOG_ITEM = re.compile(rb"\s+|<\?.*?\?>|<!--.*?-->", re.DOTALL)
_ENTITY_DECL = re.compile(rb"<!ENTITY", re.IGNORECASE)
_BOM = b"\xef\xbb\xbf"


class UnsafeXMLError(ValueError):
    """The document declares entities (or hides its DOCTYPE) and is refused unparsed."""


class Readable(Protocol):
    """Anything with a binary ``read``: an open file, ``gzip.open(...)``, a socket reader."""

    def read(self, size: int = -1, /) -> bytes: ...


def safe_parser(**overrides: Any) -> lxml.etree.XMLParser:
    """A new lxml ``XMLParser`` that expands no entities and loads nothing external.

    ``overrides`` may add harmless options (``remove_blank_text=True``); the safety options
    themselves cannot be overridden.
    """
    return lxml.etree.XMLParser(**{**overrides, **_SAFE_OPTIONS})


def reject_entity_declarations(head: bytes) -> None:
    """Raise :class:`UnsafeXMLError` when the DOCTYPE at the start of ``head`` declares entities.

    ``head`` is the start of the document (the first :data:`HEAD_BYTES` are plenty). Only a
    DOCTYPE in the prolog counts: ``<!ENTITY`` quoted in the body (in CDATA, say) is text. A
    DOCTYPE that does not end within ``head`` is refused too, since its unseen part could
    declare entities.
    """
    # NUL bytes are what UTF-16/UTF-32 put around ASCII; dropping them lets one byte-level
    # scan serve every encoding an XML parser would auto-detect.
    text = head.replace(b"\x00", b"")
    text = text.removeprefix(_BOM).removeprefix(b"\xff\xfe").removeprefix(b"\xfe\xff")
    pos = _skip_prolog(text)
    if not text.startswith(b"<!DOCTYPE", pos):
        return
    doctype = _doctype_extent(text, pos)
    if doctype is None:
        raise UnsafeXMLError("DOCTYPE does not end within the inspected head of the document")
    if _ENTITY_DECL.search(doctype):
        raise UnsafeXMLError("DOCTYPE declares entities (entity expansion / XXE attempt)")


def _skip_prolog(text: bytes) -> int:
    pos = 0
    while match := _PROLOG_ITEM.match(text, pos):
        pos = match.end()
    return pos


def _doctype_extent(text: bytes, start: int) -> bytes | None:
    """The bytes of the DOCTYPE starting at ``start``, or None when it does not end in ``text``."""
    in_subset = False
    for token in _DOCTYPE_TOKEN.finditer(text, start + len(b"<!DOCTYPE")):
        value = token.group()
        if value == b"[":
            in_subset = True
        elif value == b"]":
            in_subset = False
        elif value == b">" and not in_subset:
            return text[start : token.end()]
    return None


def parse_bytes(body: bytes) -> lxml.etree._Element:
    """Parse a whole (small) document safely and return its root element.

    Raises :class:`UnsafeXMLError` for entity declarations and ``lxml.etree.XMLSyntaxError`` for
    a document that is not well-formed.
    """
    reject_entity_declarations(body[:HEAD_BYTES])
    return lxml.etree.fromstring(body, parser=safe_parser())


def safe_iterparse(
    source: bytes | Readable,
    *,
    events: Iterable[str] = ("end",),
    tag: str | Iterable[str] | None = None,
) -> Iterator[tuple[str, Any]]:
    """Incrementally parse ``source`` (bytes or a binary file object) with the safe options.

    Returns lxml's ``iterparse`` iterator (its ``.root`` is available once parsing started).
    The first :data:`HEAD_BYTES` are checked with :func:`reject_entity_declarations` before the
    parser sees anything; for a file object they are read ahead and replayed, so unseekable
    streams (a socket, ``gzip.open``) work.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        reject_entity_declarations(data[:HEAD_BYTES])
        stream: Readable = io.BytesIO(data)
    else:
        head = _read_head(source)
        reject_entity_declarations(head)
        stream = _Replay(head, source)
    return lxml.etree.iterparse(stream, events=tuple(events), tag=tag, **_SAFE_OPTIONS)


def _read_head(source: Readable) -> bytes:
    # read() may return short counts on pipes and sockets; loop until we have enough or EOF.
    chunks: list[bytes] = []
    size = 0
    while size < HEAD_BYTES:
        chunk = source.read(HEAD_BYTES - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


class _Replay:
    """A read-only stream that returns ``head`` and then the rest of ``rest``."""

    def __init__(self, head: bytes, rest: Readable) -> None:
        self._head = head
        self._rest = rest

    def read(self, size: int = -1, /) -> bytes:
        if not self._head:
            return self._rest.read(size)
        if size < 0:
            out, self._head = self._head + self._rest.read(), b""
            return out
        out, self._head = self._head[:size], self._head[size:]
        return out
