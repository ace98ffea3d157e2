"""Europe PMC REST ``search`` answers (JSON) to papers with their preprint facts: pure functions.

No Scrapy and no database: the spider fetches, this module only builds URLs and parses.
Quirks, checked against real answers (corpus ``apis/europepmc_search_*.json``, version 6.9):

* ``resultType=lite`` and ``core`` differ in shape. Lite: ``journalTitle`` (the abbreviation),
  ``pubType`` as one "a; b" string in lower case, ``authorString`` only. Core: ``journalInfo``,
  ``pubTypeList.pubType`` (PubMed's spelling), ``authorList.author[].fullName``, ``abstractText``,
  ``meshHeadingList``, ``keywordList``, ``fullTextUrlList``, ``commentCorrectionList``.
* The request echo percent-encodes the cursor (``"cursorMark": "%2A"`` for ``*``); the last page
  hands back the cursor it was sent, so paging stops when ``nextCursorMark`` repeats.
* One page may list a paper twice: a MED record (DOI + PMID) and a PMC record (PMCID only)
  whose titles differ by a final full stop, a U+2010 hyphen or a curly apostrophe (16 such
  pairs in the corpus's 1000-result page).
* Preprints are source ``PPR`` (id ``PPR1036674``), pubType ``preprint``, the server in
  ``bookOrReportDetails.publisher`` ("bioRxiv", "medRxiv", "Research Square", "Preprints.org"),
  ``versionNumber`` on most of them.
* ``abstractText`` is HTML: sections as ``<h4>Background</h4>text``, ``<sub>``/``<i>`` inline.
* ``commentCorrectionList`` links records by Europe PMC id: ``Erratum for`` in the corpus;
  ``Preprint of`` (on a preprint, to its journal version) and ``Preprint in`` (the reverse) in
  answers quoted by public client code. A DOI appears only inside the free-text ``reference``
  citation, when it is printed at all; Europe PMC gives no preprint DOI for ``Preprint in``.
* DOIs are lower case; dates are ISO ``YYYY-MM-DD``; flags are "Y"/"N".
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from urllib.parse import quote, unquote, urlencode

from crawler import normalise
from crawler.items import Paper
from crawler.normalise import clean_doi, find_dois, html_to_text
from spiders.authors import split_author_string
from spiders.europepmc_records import PreprintRecord, RecordLink, dedupe_page
from spiders.json_fields import as_date, as_int, as_text, at, items, load_object

__all__ = [
    "DEFAULT_BASE_URL",
    "EuropePMCError",
    "PreprintRecord",
    "RecordLink",
    "SearchPage",
    "cursor_after",
    "parse_search",
    "search_url",
]

DEFAULT_BASE_URL = "https://www.ebi.ac.uk/europepmc/webservices/rest/"
ARTICLE_URL = "https://europepmc.org/article/{source}/{id}"
FIRST_CURSOR = "*"
_SAFE_ID = re.compile(r"^[A-Za-z0-9]{1,40}$")
# Headings are plain text; "[^<]*" (not ".*?") keeps a page of unclosed "<h4>" linear.
_HEADING = re.compile(r"<h4>([^<]*)</h4>", re.IGNORECASE)


class EuropePMCError(ValueError):
    """The body is not a Europe PMC search answer (empty, not JSON, no resultList/hitCount)."""


@dataclass
class SearchPage:
    """One search answer: its papers (each once) and where the next page starts."""

    papers: list[PreprintRecord] = field(default_factory=list)
    #: The cursor for the next page; None on the last page.
    next_cursor: str | None = None
    hit_count: int = 0
    #: The cursor this page answered (from the request echo, or as given to parse_search).
    cursor: str | None = None
    #: Records folded into another record of the same page.
    merged: int = 0


def search_url(
    base_url: str,
    query: str,
    since: date,
    until: date,
    cursor: str = FIRST_CURSOR,
    page_size: int = 1000,
) -> str:
    """The ``search`` URL for records first indexed from ``since`` to ``until`` (inclusive).

    The configured query is parenthesised so an ``OR`` in it cannot escape the date window.
    ``FIRST_IDATE`` is Europe PMC's first-index date: a record indexed late still falls in the
    window of the week it appeared, whatever its publication date. Page size is 1 to 1000.
    """
    if not query.strip():
        raise ValueError("empty Europe PMC query")
    if since > until:
        raise ValueError(f"date window ends before it starts: {since} > {until}")
    if not 1 <= page_size <= 1000:
        raise ValueError(f"Europe PMC pageSize must be 1..1000, not {page_size}")
    window = f"FIRST_IDATE:[{since.isoformat()} TO {until.isoformat()}]"
    params = {
        "query": f"({query.strip()}) AND {window}",
        "resultType": "core",
        "format": "json",
        "pageSize": str(page_size),
        "cursorMark": cursor,
    }
    base = base_url if base_url.endswith("/") else base_url + "/"
    return f"{base}search?{urlencode(params, quote_via=quote)}"


def cursor_after(sent: str | None, returned: str | None) -> str | None:
    """The cursor for the next page, or None when there is none or it repeats ``sent``."""
    if not returned or returned == sent:
        return None
    return returned


def parse_search(body: bytes, source_id: str, *, sent_cursor: str | None = None) -> SearchPage:
    """Parse one ``search`` answer (lite or core) into records, each paper once.

    ``sent_cursor`` is the cursorMark of the request (default: the answer's own echo).
    Raises :class:`EuropePMCError` when the body is not a search answer. Example::

        page = parse_search(response.body, "epmc-fibromyalgia", sent_cursor="*")
    """
    try:
        data = load_object(body)
    except ValueError as exc:
        raise EuropePMCError(f"not a Europe PMC answer: {exc}") from exc
    results = at(data, "resultList", "result")
    hit_count = as_int(data.get("hitCount"))
    if not isinstance(results, list) or hit_count is None:
        raise EuropePMCError("not a Europe PMC search answer: no resultList or hitCount")
    echo = as_text(at(data, "request", "cursorMark"))
    cursor = sent_cursor if sent_cursor is not None else (unquote(echo) if echo else None)
    records = [record for raw in results if (record := _record(raw, source_id))]
    papers, merged = dedupe_page(records)
    for record in papers:
        record.paper.versions = record.version_links()
    returned = as_text(data.get("nextCursorMark"))
    next_cursor = cursor_after(cursor, returned) if results else None
    return SearchPage(papers, next_cursor, hit_count, cursor, merged)


# ---------------------------------------------------------------------------------------------
# One record


def _record(raw: Any, source_id: str) -> PreprintRecord | None:
    if not isinstance(raw, dict):
        return None
    source = (as_text(raw.get("source")) or "").upper()
    epmc_id = as_text(raw.get("id"))
    paper = _paper(raw, source_id, source, epmc_id)
    if not (epmc_id or paper.doi or paper.pmid or paper.pmcid or paper.title):
        return None
    preprint = source == "PPR"
    return PreprintRecord(
        paper=paper,
        epmc_ids=[f"{source}:{epmc_id}"] if source and epmc_id else [],
        ppr_id=epmc_id if preprint else None,
        is_preprint=preprint,
        server=as_text(at(raw, "bookOrReportDetails", "publisher")) if preprint else None,
        version=as_int(raw.get("versionNumber")),
        indexed=as_date(raw.get("firstIndexDate")),
        full_text_urls=_full_text_urls(raw),
        links=list(_links(raw)),
    )


def _paper(raw: dict[str, Any], source_id: str, source: str, epmc_id: str | None) -> Paper:
    pmid = normalise.pmid(as_text(raw.get("pmid")))
    title = html_to_text(as_text(raw.get("title")))
    preprint = source == "PPR"
    return Paper(
        source_id=source_id,
        origin=_origin(raw, source, pmid),
        url=_url(source, epmc_id),
        sighting_kind="preprint" if preprint else "article",
        seen_title=title,
        doi=clean_doi(as_text(raw.get("doi"))),
        pmid=pmid,
        pmcid=normalise.pmcid(as_text(raw.get("pmcid"))),
        title=title,
        abstract=_abstract(raw.get("abstractText")),
        journal=_journal(raw, preprint),
        published=_published(raw),
        authors=_authors(raw),
        publication_types=_types(raw),
        mesh=[t for h in items(raw, "meshHeadingList", "meshHeading") if (t := _mesh(h))],
        keywords=[k for k in map(as_text, items(raw, "keywordList", "keyword")) if k],
    )


def _origin(raw: dict[str, Any], source: str, pmid: str | None) -> str:
    """``pubmed`` for a full (core) MEDLINE record, ``feed`` for everything else.

    A core MED record is PubMed's own citation relayed (full journal title, PubMed's
    publication types, MeSH, the structured abstract), so it ranks with PubMed. A lite MED
    record carries the journal abbreviation and lower-case types and no abstract: at PubMed's
    rank it would overwrite the better record, so it ranks as a feed item, as do PMC and PPR.
    """
    core = isinstance(raw.get("pubTypeList"), dict) or isinstance(raw.get("journalInfo"), dict)
    return "pubmed" if source == "MED" and pmid and core else "feed"


def _url(source: str, epmc_id: str | None) -> str | None:
    if source and epmc_id and _SAFE_ID.match(source) and _SAFE_ID.match(epmc_id):
        return ARTICLE_URL.format(source=source, id=epmc_id)
    return None


def _abstract(raw: Any) -> str | None:
    """``abstractText`` as plain text, one ``Heading: text`` line per ``<h4>`` section.

    The same layout as the PubMed EFetch reader gives a labelled abstract.
    """
    if not isinstance(raw, str):
        return None
    pieces = _HEADING.split(raw)  # [lead, heading, text, heading, text, ...]
    lines = [html_to_text(pieces[0])]
    for heading, text in zip(pieces[1::2], pieces[2::2], strict=False):
        label, body = html_to_text(heading), html_to_text(text)
        lines.append(f"{label}: {body}" if label and body else body or label)
    return "\n".join(line for line in lines if line) or None


def _journal(raw: dict[str, Any], preprint: bool) -> str | None:
    if preprint:
        return as_text(at(raw, "bookOrReportDetails", "publisher"))
    for path in (
        ("journalInfo", "journal", "title"),
        ("journalTitle",),
        ("journalInfo", "journal", "medlineAbbreviation"),
        ("bookOrReportDetails", "comprisingTitle"),
    ):
        if name := as_text(at(raw, *path)):
            return name
    return None


def _published(raw: dict[str, Any]) -> date | None:
    """The earliest of the first, electronic and print publication dates."""
    dates = [
        as_date(raw.get("firstPublicationDate")),
        as_date(raw.get("electronicPublicationDate")),
        as_date(at(raw, "journalInfo", "printPublicationDate")),
    ]
    known = [d for d in dates if d]
    return min(known) if known else None


def _authors(raw: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for author in items(raw, "authorList", "author"):
        name = _author(author)
        if name and name not in names:
            names.append(name)
    return names or split_author_string(as_text(raw.get("authorString")))


def _author(author: Any) -> str | None:
    """ "Schoenfeld JD" as Europe PMC prints it (PubMed's form), or a collective name."""
    for key in ("fullName", "collectiveName"):
        if name := as_text(at(author, key)):
            return name
    last, initials = as_text(at(author, "lastName")), as_text(at(author, "initials"))
    return f"{last} {initials}" if last and initials else last


def _types(raw: dict[str, Any]) -> list[str]:
    core = [t for t in map(as_text, items(raw, "pubTypeList", "pubType")) if t]
    lite = as_text(raw.get("pubType"))
    found = core or ([t.strip() for t in lite.split(";") if t.strip()] if lite else [])
    # PubMed spells it "Preprint", and the digests look for that spelling.
    return ["Preprint" if t.lower() == "preprint" else t for t in found]


def _mesh(heading: Any) -> str | None:
    return as_text(at(heading, "descriptorName"))


def _full_text_urls(raw: dict[str, Any]) -> list[str]:
    urls = [as_text(at(entry, "url")) for entry in items(raw, "fullTextUrlList", "fullTextUrl")]
    return list(dict.fromkeys(u for u in urls if u and u.startswith(("https://", "http://"))))


def _links(raw: dict[str, Any]) -> Iterator[RecordLink]:
    for entry in items(raw, "commentCorrectionList", "commentCorrection"):
        relation = as_text(at(entry, "type"))
        if relation:
            dois = find_dois(as_text(at(entry, "reference")))
            yield RecordLink(
                relation=relation,
                source=as_text(at(entry, "source")),
                id=as_text(at(entry, "id")),
                doi=dois[0] if dois else None,
            )
