"""api.biorxiv.org answers (``details`` and ``pubs``) to preprint records: pure functions.

No Scrapy and no database: the spider fetches, this module builds URLs and parses. Quirks of
the API, from its documentation and answers quoted in public client code:

* Both endpoints answer ``{"messages": [{...}], "collection": [...]}``; ``messages[0]`` has
  ``status`` ("ok"), ``cursor`` (an int or a string), ``count`` (an int) and ``total`` (a
  string, "1029"). Pages hold up to 100 records (30 for ``details`` in some 2026 answers), so
  the next cursor is ``cursor + count``, not ``cursor + 100``.
* Errors come with HTTP 200: ``status: "error"``, an empty body, or for an empty window a
  free-text status such as "no posts found" (not an error: an empty page).
* ``details`` lists every version of a preprint as its own record under the same DOI
  (``version`` is a string, "1", "2"). ``authors`` is one "Surname, I.; Surname, I." string.
  ``published`` is "NA" or the journal version's DOI. ``server`` is "bioRxiv" or "medRxiv"
  (sometimes lower case); ``category`` is lower case with spaces ("cell biology").
* New bioRxiv DOIs (late 2025 on) use the prefix 10.64898, not 10.1101: no prefix is assumed.
* ``pubs`` names the preprint DOI ``preprint_doi`` in current answers, ``biorxiv_doi`` in
  older ones and documentation; both are read.
* Withdrawal posts a new version whose abstract is the withdrawal notice ("Withdrawal
  Statement: ...", "The authors have withdrawn ..."); some titles start "WITHDRAWN:". A
  ``type`` of "withdrawn" is read too, though no answer seen carries one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from crawler import normalise
from crawler.events import BIORXIV, WITHDRAWN, PaperEvent, VersionLink
from crawler.items import Paper
from crawler.normalise import clean_doi, html_to_text
from spiders.authors import split_author_string
from spiders.json_fields import as_date, as_int, as_text, at, items, load_object

__all__ = [
    "DEFAULT_BASE_URL",
    "BiorxivError",
    "BiorxivRecord",
    "DetailsPage",
    "Paging",
    "PublicationLink",
    "PubsPage",
    "details_url",
    "parse_details",
    "parse_pubs",
    "pubs_url",
]

DEFAULT_BASE_URL = "https://api.biorxiv.org/"
SERVERS = {"biorxiv": "bioRxiv", "medrxiv": "medRxiv"}
_EMPTY_STATUS = re.compile(r"^no \w+ found", re.IGNORECASE)
_WITHDRAWN_TITLE = re.compile(r"^\s*(?:WITHDRAWN\b|(?i:\[withdrawn\]|withdrawn\s*:))")
_WITHDRAWN_ABSTRACT = re.compile(
    r"^\s*(?:\[withdrawn\]|withdrawal statement\b|withdrawn\s*:|(?:the |all )?authors? "
    r"(?:have|has) withdrawn\b|this (?:manuscript|preprint|paper|article) has been withdrawn\b)",
    re.IGNORECASE,
)


class BiorxivError(ValueError):
    """The body is not a usable api.biorxiv.org answer (empty, not JSON, an error status)."""


@dataclass(frozen=True)
class Paging:
    """Where a page sits in its result set, from ``messages[0]``."""

    cursor: int = 0
    count: int = 0
    total: int = 0

    @property
    def next_cursor(self) -> int | None:
        """The cursor of the next page, or None after the last one."""
        following = self.cursor + self.count
        return following if self.count > 0 and following < self.total else None


@dataclass
class BiorxivRecord:
    """One preprint (its highest version on the page) with what a Paper cannot hold yet."""

    paper: Paper
    doi: str
    version: int | None = None
    server: str | None = None  # "bioRxiv" | "medRxiv"
    category: str | None = None
    type: str | None = None  # "new results", "confirmatory results", "PUBLISHAHEADOFPRINT"
    license: str | None = None
    author_corresponding: str | None = None
    author_corresponding_institution: str | None = None
    #: The journal version's DOI (``published``), None while it is "NA".
    published_doi: str | None = None
    withdrawn: bool = False
    #: The withdrawal notice that replaced the abstract of a withdrawn version.
    withdrawal_notice: str | None = None
    #: The date this version was posted (``paper.published`` is the earliest on the page).
    version_date: date | None = None
    jats_url: str | None = None


@dataclass
class DetailsPage:
    """One ``details`` answer: preprints (one per DOI) and the paging state."""

    records: list[BiorxivRecord] = field(default_factory=list)
    paging: Paging = field(default_factory=Paging)
    #: Records left out by the category filter.
    filtered_out: int = 0

    @property
    def next_cursor(self) -> int | None:
        return self.paging.next_cursor


@dataclass(frozen=True)
class PublicationLink:
    """One ``pubs`` record: a preprint and the journal article it became."""

    preprint_doi: str
    published_doi: str
    published_journal: str | None = None
    preprint_date: date | None = None
    published_date: date | None = None
    server: str | None = None
    preprint_title: str | None = None

    def version_link(self) -> VersionLink:
        """This record as a preprint-to-journal link (:mod:`crawler.db.versions`)."""
        return VersionLink(
            preprint_doi=self.preprint_doi, published_doi=self.published_doi, source=BIORXIV,
            server=self.server, preprint_posted=self.preprint_date,
            published_journal=self.published_journal, published_date=self.published_date,
        )  # fmt: skip


@dataclass
class PubsPage:
    """One ``pubs`` answer: preprint-to-article links and the paging state."""

    links: list[PublicationLink] = field(default_factory=list)
    paging: Paging = field(default_factory=Paging)

    @property
    def next_cursor(self) -> int | None:
        return self.paging.next_cursor


# ---------------------------------------------------------------------------------------------
# URLs


def details_url(
    server: str, since: date, until: date, cursor: int = 0, *, base_url: str = DEFAULT_BASE_URL
) -> str:
    """``{base}details/{server}/{since}/{until}/{cursor}/json``: preprints posted in a window."""
    return _url("details", server, since, until, cursor, base_url)


def pubs_url(
    server: str, since: date, until: date, cursor: int = 0, *, base_url: str = DEFAULT_BASE_URL
) -> str:
    """``{base}pubs/{server}/{since}/{until}/{cursor}/json``: preprints published in a window."""
    return _url("pubs", server, since, until, cursor, base_url)


def _url(endpoint: str, server: str, since: date, until: date, cursor: int, base: str) -> str:
    if server not in SERVERS:
        raise ValueError(f"unknown preprint server {server!r} (expected one of {list(SERVERS)})")
    if since > until:
        raise ValueError(f"date window ends before it starts: {since} > {until}")
    if cursor < 0:
        raise ValueError(f"negative cursor {cursor}")
    base = base if base.endswith("/") else base + "/"
    return f"{base}{endpoint}/{server}/{since.isoformat()}/{until.isoformat()}/{cursor}/json"


# ---------------------------------------------------------------------------------------------
# details


def parse_details(body: bytes, source_id: str, *, categories: Sequence[str] = ()) -> DetailsPage:
    """Parse a ``details`` answer: one record per DOI (its highest version), in page order.

    ``categories`` keeps only preprints in those subject categories, compared without case
    and with "-", "_" and spaces alike ("Cell_Biology" matches "cell biology"); empty keeps
    all. Raises :class:`BiorxivError` for anything but a details answer. Example::

        page = parse_details(response.body, "biorxiv-immunology", categories=["immunology"])
    """
    collection, paging = _page(body)
    wanted = {_category_key(c) for c in categories if _category_key(c)}
    records: dict[str, BiorxivRecord] = {}
    filtered_out = 0
    for raw in collection:
        record = _record(raw, source_id)
        if record is None:
            continue
        if wanted and _category_key(record.category) not in wanted:
            filtered_out += 1
            continue
        key = normalise.doi_key(record.doi) or record.doi
        records[key] = _newer(records[key], record) if key in records else record
    return DetailsPage([_told(r) for r in records.values()], paging, filtered_out)


def _told(record: BiorxivRecord) -> BiorxivRecord:
    """The record's paper with what the server says of its life: withdrawn, published."""
    paper = record.paper
    if record.published_doi:
        paper.versions = [VersionLink(
            preprint_doi=record.doi, published_doi=record.published_doi, source=BIORXIV,
            server=record.server, preprint_posted=paper.published,
        )]  # fmt: skip
    if record.withdrawn:
        paper.events = [PaperEvent(
            type=WITHDRAWN, source=BIORXIV, target_doi=normalise.doi_key(record.doi),
            notice_title=record.withdrawal_notice, notice_url=paper.url, date=record.version_date,
        )]  # fmt: skip
    return record


def _record(raw: Any, source_id: str) -> BiorxivRecord | None:
    if not isinstance(raw, dict):
        return None
    doi = clean_doi(as_text(raw.get("doi")))
    if doi is None:
        return None
    version = as_int(raw.get("version"))
    server = _server_name(as_text(raw.get("server")))
    kind = as_text(raw.get("type"))
    printed = html_to_text(as_text(raw.get("title")))
    gone = _withdrawal(printed, html_to_text(as_text(raw.get("abstract"))), kind)
    posted = as_date(raw.get("date"))
    paper = Paper(
        source_id=source_id,
        origin="feed",
        url=_content_url(server, doi, version),
        sighting_kind="preprint",
        seen_title=printed,
        doi=doi,
        title=gone.title,
        abstract=gone.abstract,
        journal=server,
        published=posted,
        authors=split_author_string(as_text(raw.get("authors"))),
        publication_types=["Preprint"],
    )
    return BiorxivRecord(
        paper=paper,
        doi=doi,
        version=version,
        server=server,
        category=as_text(raw.get("category")),
        type=kind,
        license=as_text(raw.get("license")),
        author_corresponding=as_text(raw.get("author_corresponding")),
        author_corresponding_institution=as_text(raw.get("author_corresponding_institution")),
        published_doi=clean_doi(as_text(raw.get("published"))),
        withdrawn=gone.withdrawn,
        withdrawal_notice=gone.notice,
        version_date=posted,
        jats_url=_http(as_text(raw.get("jatsxml"))),
    )


def _newer(kept: BiorxivRecord, other: BiorxivRecord) -> BiorxivRecord:
    """The higher version of one preprint, dated by the earliest version on the page.

    What the newer version lacks (a withdrawn version's abstract, its authors) is taken from
    the older one.
    """
    newer, older = (other, kept) if (other.version or 0) > (kept.version or 0) else (kept, other)
    dates = [d for d in (newer.paper.published, older.paper.published) if d]
    newer.paper.published = min(dates) if dates else None
    newer.paper.title = newer.paper.title or older.paper.title
    newer.paper.abstract = newer.paper.abstract or older.paper.abstract
    newer.paper.authors = newer.paper.authors or older.paper.authors
    newer.published_doi = newer.published_doi or older.published_doi
    return newer


@dataclass(frozen=True)
class _Withdrawal:
    title: str | None
    abstract: str | None
    notice: str | None
    withdrawn: bool


def _withdrawal(title: str | None, abstract: str | None, kind: str | None) -> _Withdrawal:
    """Whether a version withdraws the preprint; its title and abstract without the notice.

    The "WITHDRAWN:" prefix leaves the title (the paper keeps its identity) and a withdrawal
    notice is not the paper's abstract: it goes to ``withdrawal_notice`` instead, so the
    stored abstract of an earlier version is not replaced by it.
    """
    notice = abstract if abstract and _WITHDRAWN_ABSTRACT.match(abstract) else None
    prefixed = bool(title and _WITHDRAWN_TITLE.match(title))
    withdrawn = prefixed or notice is not None or (kind or "").strip().lower() == "withdrawn"
    if prefixed and title:
        title = _WITHDRAWN_TITLE.sub("", title, count=1).lstrip(" :") or None
    return _Withdrawal(title, None if notice else abstract, notice, withdrawn)


def _server_name(raw: str | None) -> str | None:
    if not raw:
        return None
    return SERVERS.get(raw.lower(), raw)


def _content_url(server: str | None, doi: str, version: int | None) -> str:
    """The preprint's page ("https://www.biorxiv.org/content/10.1101/...v2"), else the DOI."""
    host = server.lower() if server else ""
    if host in SERVERS and version is not None:
        return f"https://www.{host}.org/content/{doi}v{version}"
    return f"https://doi.org/{doi}"


def _category_key(category: str | None) -> str:
    return " ".join(re.split(r"[\s_\-]+", category.casefold())).strip() if category else ""


def _http(url: str | None) -> str | None:
    return url if url and url.startswith(("https://", "http://")) else None


# ---------------------------------------------------------------------------------------------
# pubs


def parse_pubs(body: bytes) -> PubsPage:
    """Parse a ``pubs`` answer into preprint-to-journal links, each pair once, in page order.

    Records without a usable preprint and published DOI are skipped. Raises
    :class:`BiorxivError` for anything but a pubs answer.
    """
    collection, paging = _page(body)
    links: dict[tuple[str, str], PublicationLink] = {}
    for raw in collection:
        link = _link(raw)
        if link is not None:
            key = (normalise.doi_key(link.preprint_doi), normalise.doi_key(link.published_doi))
            links.setdefault((key[0] or "", key[1] or ""), link)
    return PubsPage(list(links.values()), paging)


def _link(raw: Any) -> PublicationLink | None:
    if not isinstance(raw, dict):
        return None
    preprint = clean_doi(as_text(raw.get("preprint_doi")) or as_text(raw.get("biorxiv_doi")))
    published = clean_doi(as_text(raw.get("published_doi")))
    if preprint is None or published is None:
        return None
    return PublicationLink(
        preprint_doi=preprint,
        published_doi=published,
        published_journal=as_text(raw.get("published_journal")),
        preprint_date=as_date(raw.get("preprint_date")),
        published_date=as_date(raw.get("published_date")),
        server=_server_name(as_text(raw.get("preprint_platform"))),
        preprint_title=html_to_text(as_text(raw.get("preprint_title"))),
    )


# ---------------------------------------------------------------------------------------------
# The envelope


def _page(body: bytes) -> tuple[list[Any], Paging]:
    """The collection and paging of an answer; BiorxivError for errors and non-answers."""
    try:
        data = load_object(body)
    except ValueError as exc:
        raise BiorxivError(f"not an api.biorxiv.org answer: {exc}") from exc
    message = at(data, "messages")
    message = message[0] if isinstance(message, list) and message else None
    if not isinstance(message, dict):
        raise BiorxivError("not an api.biorxiv.org answer: no messages[0]")
    status = as_text(message.get("status")) or ""
    collection = items(data, "collection")
    if status.lower() != "ok":
        if _EMPTY_STATUS.match(status) and not collection:
            return [], Paging()
        raise BiorxivError(f"api.biorxiv.org answered status {status[:200]!r}")
    return collection, _paging(message, len(collection))


def _paging(message: dict[str, Any], received: int) -> Paging:
    cursor = max(as_int(message.get("cursor")) or 0, 0)
    count = as_int(message.get("count"))
    count = received if count is None else max(count, 0)
    total = as_int(message.get("total"))
    # Without a total there is no telling how many remain: stop after this page.
    return Paging(cursor, count, cursor + count if total is None else total)
