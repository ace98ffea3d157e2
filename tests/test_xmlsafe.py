"""The hardened XML setup: attacks fail fast with bounded memory, normal documents parse."""

from __future__ import annotations

import io
import resource
import time
from itertools import pairwise
from pathlib import Path

import lxml.etree
import pytest

from crawler.xmlsafe import (
    HEAD_BYTES,
    UnsafeXMLError,
    parse_bytes,
    reject_entity_declarations,
    safe_iterparse,
    safe_parser,
)


def _billion_laughs() -> bytes:
    """Nine levels of ten-fold expansion: 10**9 "lol"s, 3 GB if a parser expanded them."""
    names = ["lol"] + [f"lol{level}" for level in range(1, 10)]
    decls = [' <!ENTITY lol "lol">']
    decls += [f' <!ENTITY {name} "{f"&{prev};" * 10}">' for prev, name in pairwise(names)]
    return "\n".join(
        ['<?xml version="1.0"?>', "<!DOCTYPE lolz [", *decls, "]>", "<lolz>&lol9;</lolz>"]
    ).encode()


BILLION_LAUGHS = _billion_laughs()

PUBMED_PROLOG = (
    b'<?xml version="1.0" ?>\n'
    b'<!DOCTYPE PubmedArticleSet PUBLIC "-//NLM//DTD PubMedArticle, 1st January 2025//EN" '
    b'"https://dtd.nlm.nih.gov/ncbi/pubmed/out/pubmed_250101.dtd">\n'
)


def _xxe(path: Path) -> bytes:
    return (
        b'<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY xxe SYSTEM "'
        + path.as_uri().encode()
        + b'">]>\n<r>before &xxe; after</r>'
    )


def _max_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def test_bomb_is_built_as_intended() -> None:
    # Guard the fixture itself: nine nested levels of ten references each.
    assert BILLION_LAUGHS.count(b"&lol8;") == 10
    assert b'<!ENTITY lol1 "&lol;&lol;' in BILLION_LAUGHS


def test_billion_laughs_fails_fast_with_bounded_memory() -> None:
    before, started = _max_rss_kib(), time.perf_counter()
    with pytest.raises(UnsafeXMLError):
        parse_bytes(BILLION_LAUGHS)
    with pytest.raises(UnsafeXMLError):
        list(safe_iterparse(BILLION_LAUGHS))
    with pytest.raises(UnsafeXMLError):
        list(safe_iterparse(io.BytesIO(BILLION_LAUGHS)))
    assert time.perf_counter() - started < 1.0
    assert _max_rss_kib() - before < 50 * 1024


def test_parser_alone_does_not_expand_the_bomb() -> None:
    # Second line of defence: with the pre-check skipped, the parser must still not expand.
    before, started = _max_rss_kib(), time.perf_counter()
    try:
        root = lxml.etree.fromstring(BILLION_LAUGHS, parser=safe_parser())
    except lxml.etree.XMLSyntaxError:
        pass  # libxml2's amplification guard refused it: also fine
    else:
        assert len("".join(root.itertext())) < 100
    assert time.perf_counter() - started < 1.0
    assert _max_rss_kib() - before < 50 * 1024


def test_external_entity_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    with pytest.raises(UnsafeXMLError):
        parse_bytes(_xxe(secret))
    with pytest.raises(UnsafeXMLError):
        list(safe_iterparse(io.BytesIO(_xxe(secret))))


def test_parser_alone_does_not_read_external_entity(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    root = lxml.etree.fromstring(_xxe(secret), parser=safe_parser())
    assert "TOP-SECRET" not in lxml.etree.tostring(root, encoding="unicode")
    assert "TOP-SECRET" not in "".join(root.itertext())


def test_safety_options_cannot_be_overridden() -> None:
    doc = b'<!DOCTYPE r [<!ENTITY x "EXPANDED">]><r>&x;</r>'
    root = lxml.etree.fromstring(doc, parser=safe_parser(resolve_entities=True))
    assert "EXPANDED" not in "".join(root.itertext())


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param(b'<!DOCTYPE r [<!ENTITY % p "x">]><r/>', id="parameter-entity"),
        pytest.param(b'<!DOCTYPE r [<!-- ] > --><!ENTITY x "y">]><r/>', id="comment-hides-end"),
        pytest.param(b'<!DOCTYPE r [<!ATTLIST r a CDATA "]>">\n<!ENTITY x "y">]><r/>', id="quoted"),
        pytest.param(
            b'<?xml version="1.0"?><!-- c --><?pi x?>\n<!DOCTYPE r [<!ENTITY x "y">]><r/>'
        ),
        pytest.param(b"\xef\xbb\xbf<!DOCTYPE r [<!ENTITY x 'y'>]><r/>", id="utf8-bom"),
        pytest.param('<!DOCTYPE r [<!ENTITY x "y">]><r/>'.encode("utf-16"), id="utf-16"),
        pytest.param(b"<!DOCTYPE r [" + b" " * HEAD_BYTES + b"]><r/>", id="doctype-too-long"),
    ],
)
def test_entity_declarations_are_found(doc: bytes) -> None:
    with pytest.raises(UnsafeXMLError):
        reject_entity_declarations(doc[:HEAD_BYTES])


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param(PUBMED_PROLOG + b"<PubmedArticleSet/>", id="pubmed-external-dtd"),
        pytest.param(b"<r><![CDATA[<!DOCTYPE x [<!ENTITY a 'b'>]>]]></r>", id="entity-as-text"),
        pytest.param(b'<?xml version="1.0"?><rss version="2.0"/>', id="no-doctype"),
        pytest.param(b"", id="empty"),
    ],
)
def test_harmless_documents_pass_the_precheck(doc: bytes) -> None:
    reject_entity_declarations(doc)


def test_normal_document_parses() -> None:
    root = parse_bytes(
        PUBMED_PROLOG + b"<PubmedArticleSet><X>a &lt;5 &amp; b</X></PubmedArticleSet>"
    )
    assert root.findtext("X") == "a <5 & b"


def test_external_dtd_is_not_fetched() -> None:
    # Port 9 (discard) on localhost: a fetch attempt would fail or hang; neither may happen.
    started = time.perf_counter()
    root = parse_bytes(b'<!DOCTYPE r SYSTEM "http://127.0.0.1:9/evil.dtd"><r>ok</r>')
    assert root.text == "ok"
    assert time.perf_counter() - started < 1.0


class _Trickle:
    """An unseekable stream that hands out at most 1000 bytes per read, like a socket."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._data.read(1000 if size < 0 else min(size, 1000))


def test_iterparse_replays_the_inspected_head_of_a_stream() -> None:
    # More than HEAD_BYTES, so the parser sees the replayed head and then the live stream.
    items = b"".join(b"<i>%d</i>" % n for n in range(20_000))
    doc = PUBMED_PROLOG + b"<PubmedArticleSet>" + items + b"</PubmedArticleSet>"
    assert len(doc) > 2 * HEAD_BYTES
    texts = [el.text for _, el in safe_iterparse(_Trickle(doc), tag="i")]
    assert texts == [str(n) for n in range(20_000)]


def test_iterparse_rejects_a_bomb_in_a_stream() -> None:
    with pytest.raises(UnsafeXMLError):
        next(iter(safe_iterparse(_Trickle(BILLION_LAUGHS))))
