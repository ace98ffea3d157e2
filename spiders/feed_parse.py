"""Journal RSS/Atom feeds to :class:`~crawler.items.Paper` items: pure functions over bytes.

No Scrapy and no database: the spider fetches, this module only parses (feedparser is never
given anything it could fetch). Site quirks, each checked against a saved real feed:

* Wiley (Atypon Literatum) RSS 2.0: guid and dc:identifier are a bare DOI, prism:doi too;
  dc:creator holds one author per line, each line ending in ", "; the useful abstract is in
  content:encoded, while description is just "TAXON, EarlyView.".
* Wiley's older RSS 1.0, re-serialised with ``ns1:``/``ns3:`` prefixes: feedparser does not
  know the PRISM 2.0 namespace URI, so it names the keys after the document's prefix
  (``ns3_doi``); we look PRISM keys up by namespace URI. ``rdf:about`` is a relative URL.
* ScienceDirect: no DOI anywhere (only the PII in link and guid); the description is
  "Publication date / Source / Author(s)" lines, not an abstract, and the only place that
  names date, journal and authors (read by spiders/feed_sciencedirect.py).
* Microbiology Society (IJSEM): the DOI is only in the link path
  (``/content/journal/ijsem/10.1099/ijsem.0.005019?TRACK=RSS``).
* Pensoft: the DOI is only printed as "DOI: 10.3897/..." in the description; titles start with
  U+FEFF.
* PKP OJS: HTML (``<p><strong><em>``) inside titles.
* bioRxiv/medRxiv: titles and links padded with white space inside CDATA; 10.1101 DOIs; all
  authors in one dc:creator ("LAPALU, N., SIMON, A., ...").
* Elsevier on Atypon: bare DOI in dc:identifier; dates like "2018-12-17-08:00".
* PubMed saved-search RSS: guid ``pubmed:NNN``, two dc:identifier elements (``pmid:`` and
  ``doi:``) of which feedparser keeps only the last, unencoded spaces in links
  (``utm_source=Mobile Safari UI/WKWebView``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from email.utils import parsedate_tz
from time import struct_time
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

from crawler.items import Paper
from crawler.normalise import clean_doi, find_dois, html_to_text, pmcid, pmid, squash
from spiders.authors import split_author_string
from spiders.feed_notices import with_notice
from spiders.feed_safe import FeedError, bozo_message, safe_feedparser, text_construct
from spiders.feed_sciencedirect import Labelled, feed_journal, labelled_fields

__all__ = ["FeedError", "FeedResult", "parse_feed"]


@dataclass
class FeedResult:
    """What one feed document yielded."""

    papers: list[Paper] = field(default_factory=list)
    #: Problems feedparser reported ("bozo") on a feed that was still usable, one line each.
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Context:
    source_id: str
    base_url: str
    #: Key prefixes feedparser used for PRISM elements ("prism", or "ns3" when unknown URI).
    prism: tuple[str, ...]
    feed_title: str | None
    #: The journal name for entries that name none: the channel's PRISM name or its title.
    feed_journal: str | None


def parse_feed(
    body: bytes, base_url: str, source_id: str, *, headers: Mapping[str, str] | None = None
) -> FeedResult:
    """Parse an RSS 0.9x/1.0/2.0 or Atom feed into papers (``origin="feed"``), in feed order.

    ``base_url`` is the URL the body came from: relative links resolve against it.
    ``headers`` are the HTTP response headers; only the charset of ``Content-Type`` is used.
    Raises :class:`FeedError` when the body is not a feed: empty, JSON, an HTML page (a login
    or captcha page served with 200), XML declaring entities, or a document so broken that it
    yields neither an entry nor a feed title. Example::

        result = parse_feed(response.body, response.url, "wiley-taxon")
    """
    parsed = safe_feedparser(body, base_url, headers)
    problem = bozo_message(parsed)
    ctx = _context(parsed, source_id, base_url)
    papers = [with_notice(p) for p in (_paper(e, ctx) for e in parsed.entries) if p is not None]
    if problem and not papers and not ctx.feed_title:
        raise FeedError(f"broken feed with no usable entry: {problem}")
    warnings = [problem] if problem else []
    if skipped := len(parsed.entries) - len(papers):
        noun = "entry" if skipped == 1 else "entries"
        warnings.append(f"skipped {skipped} {noun} with no title, link or identifier")
    return FeedResult(papers=papers, warnings=warnings)


def _prism_prefixes(parsed: Any) -> tuple[str, ...]:
    # feedparser renames namespaces it knows to its own prefix ("prism" for PRISM 1.2) and
    # keeps the document's prefix for the rest (PRISM 2.0 bound to "ns3" gives "ns3_doi").
    namespaces: dict[str, str] = parsed.get("namespaces") or {}
    found = [prefix for prefix, uri in namespaces.items() if prefix and "prismstandard" in uri]
    return ("prism", *sorted(set(found) - {"prism"}))


def _context(parsed: Any, source_id: str, base_url: str) -> _Context:
    prism = _prism_prefixes(parsed)
    title = text_construct(parsed.feed.get("title_detail"))
    # bioRxiv names the journal on the channel only ("bioRxiv"; the title is "bioRxiv
    # Subject Collection: Genomics").
    journal = _get(parsed.feed, (f"{prefix}_publicationname" for prefix in prism))
    journal = journal or feed_journal(title)  # "ScienceDirect Publication: X" names X
    return _Context(source_id, base_url, prism, title, journal)


# ---------------------------------------------------------------------------------------------
# One entry


def _paper(entry: Any, ctx: _Context) -> Paper | None:
    """The paper an entry describes, or None when nothing identifies it."""
    url = _url(entry, ctx.base_url)
    doi = _doi(entry, ctx, url)
    title = text_construct(entry.get("title_detail"))
    ids = (pmid_ := _pmid(entry), pmcid_ := _pmcid(entry))
    if not (doi or url or title or any(ids)):
        return None
    kind = _kind(doi, url)
    # ScienceDirect prints date, journal and authors in the description only.
    labelled = _labelled(entry) or Labelled()
    return Paper(
        source_id=ctx.source_id,
        origin="feed",
        url=url,
        sighting_kind=kind,
        seen_title=title,
        doi=doi,
        pmid=pmid_,
        pmcid=pmcid_,
        title=title,
        abstract=_abstract(entry),
        journal=_journal(entry, ctx, labelled.journal),
        published=_published(entry, ctx) or labelled.published,
        authors=_authors(entry, preprint=kind == "preprint") or labelled.authors,
    )


def _entry_texts(entry: Any, needle: str) -> list[str]:
    """The entry's description and content as plain text, where the raw value has ``needle``.

    Flattening HTML is the slow part of an entry; the needle ("doi", "pmcid") skips it for
    the many entries whose text cannot hold the label sought.
    """
    details = [entry.get("summary_detail"), *entry.get("content", [])]
    wanted = [d for d in details if d and needle in (d.get("value") or "").lower()]
    return [text for text in map(text_construct, wanted) if text]


def _get(entry: Any, keys: Iterable[str]) -> str | None:
    for key in keys:
        value = squash(entry.get(key))
        if value:
            return value
    return None


def _prism(entry: Any, ctx: _Context, name: str) -> str | None:
    return _get(entry, (f"{prefix}_{name}" for prefix in ctx.prism))


# ---------------------------------------------------------------------------------------------
# Identifiers

# "DOI: 10.3897/zookeys.1078.47616" (Pensoft), "doi: 10.11646/..." (PubMed citation line).
# Only a labelled DOI counts: descriptions also link to other DOIs (IJSEM's Names for Life).
_LABELLED_DOI = re.compile(r"\bdoi\s*:\s*(10\.\d{4,9}/\S+)", re.IGNORECASE)
# Prefixed ids only: a bare number in a guid is not evidence of a PubMed id.
_PMID_ID = re.compile(r"^(?:pmid|pubmed)\s*:\s*\d+$", re.IGNORECASE)
_PMCID_ID = re.compile(r"^(?:pmcid|pmc)\s*:\s*(?:PMC)?\d+$", re.IGNORECASE)
# PubMed RSS footer: "PMID:34811339 | PMCID:PMC8612345 | DOI:10...." describes the item itself.
_FOOTER_PMCID = re.compile(r"\bPMID:\s*\d+\s*\|\s*PMCID:\s*(PMC\d+)", re.IGNORECASE)
# bioRxiv/medRxiv DOIs are numeric (10.1101/2023.12.16.571984, older 10.1101/123456); CSHL
# journals share the prefix with letters (10.1101/gr.123, 10.1101/gad.1).
_PREPRINT_DOI = re.compile(r"^10\.1101/[\d.]+$")
_PREPRINT_HOSTS = ("biorxiv.org", "medrxiv.org")
_DOI_HOSTS = ("doi.org", "dx.doi.org", "www.doi.org")
_PREPRINT_VERSION = re.compile(r"^(10\.1101/[\d.]+)v\d+$")


def _doi(entry: Any, ctx: _Context, url: str | None) -> str | None:
    """The entry's DOI, from the most to the least explicit place that may hold it."""
    for raw in (_prism(entry, ctx, "doi"), entry.get("dc_identifier"), entry.get("id")):
        if doi := clean_doi(raw):
            return doi
    links = [link.get("href") or "" for link in entry.get("links", [])]
    for href in links:
        if _host(href) in _DOI_HOSTS and (doi := clean_doi(href)):
            return doi
    for href in (url, *links):
        if found := find_dois(href):
            # bioRxiv/medRxiv content URLs append the version ("...24301234v1"); the DOI
            # is registered without it.
            return _PREPRINT_VERSION.sub(r"\1", found[0])
    for text in _entry_texts(entry, "doi"):
        if (match := _LABELLED_DOI.search(text)) and (doi := clean_doi(match.group(1))):
            return doi
    return None


def _pmid(entry: Any) -> str | None:
    for raw in (entry.get("dc_identifier"), entry.get("id")):
        if raw and _PMID_ID.match(raw.strip()):
            return pmid(raw)
    return None


def _pmcid(entry: Any) -> str | None:
    for raw in (entry.get("dc_identifier"), entry.get("id")):
        if raw and _PMCID_ID.match(raw.strip()):
            return pmcid(raw.split(":", 1)[1])
    for text in _entry_texts(entry, "pmcid"):
        if match := _FOOTER_PMCID.search(text):
            return pmcid(match.group(1))
    return None


def _kind(doi: str | None, url: str | None) -> str:
    if doi and _PREPRINT_DOI.match(doi):
        return "preprint"
    host = _host(url or "")
    if any(host == h or host.endswith("." + h) for h in _PREPRINT_HOSTS):
        return "preprint"
    return "article"


def _url(entry: Any, base_url: str) -> str | None:
    """The entry link, resolved against the feed URL, with white space percent-encoded.

    Falls back to the id when it is a URL (RSS 1.0 ``rdf:about``, relative at Wiley). Only
    http(s) survives: the link ends up in an e-mail, and ``javascript:`` must not.
    """
    raw = squash(entry.get("link")) or squash(entry.get("id"))
    if not raw:
        return None
    try:
        url = urljoin(base_url, raw)
        if urlsplit(url).scheme not in ("http", "https"):
            return None
    except ValueError:  # "http://[broken": urllib rejects a malformed IPv6 host
        return None
    # PubMed RSS links carry raw spaces ("utm_source=Mobile Safari UI/WKWebView").
    return re.sub(r"\s", lambda m: quote(m.group()), url)


def _host(url: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError:  # malformed IPv6 host in an untrusted link
        return ""


# ---------------------------------------------------------------------------------------------
# Descriptive fields

# Split HTML into blocks (paragraphs, headings, line breaks) before flattening, so that whole
# boilerplate lines can be dropped.
_HTML_BLOCK = re.compile(r"</?(?:p|div|h[1-6]|li|ul|ol|blockquote|tr)\b[^>]*>|<br\s*/?>", re.I)
# "Abstract" as a heading, or "Abstract: ..." as a label (Pensoft): what precedes is front
# matter (citation, DOI, authors).
_ABSTRACT_LABEL = re.compile(r"^abstract\b\s*:?\s*", re.IGNORECASE)
# Lines that are never abstract text: ScienceDirect's "Publication date: February 2022",
# "Source: ...", "Author(s): ..."; PubMed's "PMID: ... | DOI: ..." footer; Pensoft's
# "DOI: ...", "Authors: ..." and HTML/XML/PDF links.
_BOILERPLATE = re.compile(
    r"^(?:(?:publication date|source|author\(s\)|authors?|doi|pmid|pmcid)\s*:|(?:html|xml|pdf)$)",
    re.IGNORECASE,
)


def _abstract(entry: Any) -> str | None:
    """The abstract: content:encoded (HTML preferred) over the description, boilerplate cut."""
    contents = entry.get("content", [])
    html = [c for c in contents if "html" in (c.get("type") or "")]
    detail = (html or contents or [entry.get("summary_detail")])[0]
    if not detail or not detail.get("value"):
        return None
    return _join_abstract(_blocks(detail))


def _blocks(detail: Any) -> list[str]:
    """A text construct's paragraphs and lines as plain text, empty ones left out."""
    value = detail["value"]
    if "html" in (detail.get("type") or ""):
        blocks = [html_to_text(piece) for piece in _HTML_BLOCK.split(value)]
    else:
        blocks = [squash(line) for line in value.splitlines()]
    return [b for b in blocks if b]


def _labelled(entry: Any) -> Labelled | None:
    """ScienceDirect's "Publication date: / Source: / Author(s):" description lines."""
    detail = entry.get("summary_detail")
    if not detail or "Author(s):" not in (value := detail.get("value") or ""):
        return None
    return labelled_fields(_blocks(detail)) if "Publication date:" in value else None


def _join_abstract(blocks: list[str]) -> str | None:
    for i, block in enumerate(blocks):
        if _ABSTRACT_LABEL.match(block):
            rest = _ABSTRACT_LABEL.sub("", block, count=1)
            blocks = ([rest] if rest else []) + blocks[i + 1 :]
            break
    kept = [b for b in blocks if not _BOILERPLATE.match(b)]
    return " ".join(kept) or None


def _journal(entry: Any, ctx: _Context, printed: str | None) -> str | None:
    """prism:publicationName, else dc:source when it is a bare name, else the journal the
    description printed (ScienceDirect's "Source:"), else the feed's name."""
    if name := _prism(entry, ctx, "publicationname"):
        return name
    # PubMed RSS puts the journal in dc:source ("Zootaxa"); Atypon puts a citation there
    # ("The Journal of Pediatrics 203,  (2018)"), recognisable by its digits.
    source = squash(entry.get("dc_source"))
    if source and not any(ch.isdigit() for ch in source):
        return source
    return printed or ctx.feed_journal


_ISO_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})")


def _published(entry: Any, ctx: _Context) -> date | None:
    """The publication date as the publisher printed it (its local calendar date).

    PRISM dates first (publicationDate, then coverDate), then the entry's published and
    updated dates (feedparser files dc:date under ``updated``). Raw strings are read before
    feedparser's parsed tuples, which are converted to UTC and can shift the day.
    """
    # dict.get, not entry.get: FeedParserDict answers "updated" with "published" plus a
    # DeprecationWarning (feedparser issue 310) when an entry has no updated date.
    candidates = (
        _prism(entry, ctx, "publicationdate"),
        _prism(entry, ctx, "coverdate"),
        dict.get(entry, "published"),
        dict.get(entry, "updated"),
    )
    for raw in candidates:
        if raw and (day := _parse_date(raw)):
            return day
    for key in ("published_parsed", "updated_parsed"):
        parsed: struct_time | None = dict.get(entry, key)
        if parsed:
            return date(parsed.tm_year, parsed.tm_mon, parsed.tm_mday)
    return None


def _parse_date(raw: str) -> date | None:
    """An ISO date prefix ("2018-12-17-08:00", "2021-11-13T05:38:33-08:00") or RFC 822."""
    try:
        if match := _ISO_DATE.match(raw.strip()):
            return date(*map(int, match.groups()))
        if fields := parsedate_tz(raw):
            return date(*fields[:3])
    except ValueError:  # "2021-02-30"
        return None
    return None


def _authors(entry: Any, *, preprint: bool) -> list[str]:
    """The entry's authors, one name each.

    bioRxiv/medRxiv put every author in one ``dc:creator``, names and initials separated by
    the same comma ("LAPALU, N., SIMON, A., O'Connell, R. J."): stored whole, that was one
    author, garbling BibTeX (issue 12 B3). :func:`spiders.authors.split_author_string` splits
    them into PubMed-style names ("Lapalu N" as printed: "LAPALU N").
    """
    split = split_author_string if preprint else _split_names
    names: list[str] = []
    for author in entry.get("authors") or []:
        for name in split(author.get("name") or ""):
            if name not in names:
                names.append(name)
    return names


def _split_names(raw: str) -> list[str]:
    """Names in one creator field: one per line (Wiley), or "A B, C D and E F" on one line.

    A one-line list is split at commas only when every part has two words or more, so
    "Surname, Initials" lists ("LAPALU, N., SIMON, A.", bioRxiv) stay whole rather than torn.
    """
    lines = [name for line in raw.splitlines() if (name := squash(line.strip().rstrip(",")))]
    if len(lines) != 1 or "," not in lines[0]:
        return lines
    parts = [p.strip() for p in lines[0].split(",")]
    if parts[-1].count(" and ") == 1:
        parts[-1:] = parts[-1].split(" and ")
    if all(len(p.split()) >= 2 for p in parts):
        return parts
    return lines
