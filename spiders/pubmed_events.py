"""A paper's life as PubMed records it: retractions, errata, expressions of concern, updates.

Pure functions from a ``PubmedArticle`` element (or a whole EFetch answer) to
:class:`crawler.events.PaperEvent` values; no network, no database.

What PubMed says, and how it is read (DTD 2013-2025):

* ``MedlineCitation/CommentsCorrectionsList/CommentsCorrections@RefType`` links two records.
  The changed paper carries ``RetractionIn``, ``ErratumIn``, ``ExpressionOfConcernIn``,
  ``UpdateIn``, ``RepublishedIn`` and the ``...andRepublishedIn`` pair (paper-side events); the
  notice carries ``RetractionOf``, ``ErratumFor``, ``ExpressionOfConcernFor``, ``UpdateOf``,
  ``RepublishedFrom`` and the ``...andRepublishedFrom`` pair (notice-side events). ``CommentIn``,
  ``CommentOn``, ``Cites``, ``ReprintIn`` and the rest are not events.
* A link names the other record by ``PMID`` and/or a ``RefSource`` citation ("J Biol Chem 1999
  May 7;274(19):13728"). Many ``ErratumIn`` carry only the RefSource: still an event, with the
  RefSource as ``notice_title``. Newer RefSources end with "doi: 10....", which is read too.
* ``RepublishedIn`` / ``RepublishedFrom`` (the same article published again, often with
  changes) are read as ``updated`` / ``update_of``: a newer publication of the paper exists.
  ``RetractedandRepublishedIn`` (retraction and replacement) is a retraction; its notice is the
  replacement article.
* Publication types: "Retracted Publication" marks the retracted paper; without a retraction
  link it gives a ``retracted`` event with no notice (none is invented). "Retraction of
  Publication", "Published Erratum" and "Expression of Concern" mark notices: they give no event
  by themselves (the target is unknown) but :func:`notice_kind` reports them. A notice not yet
  indexed spells its type in capitals with an empty UI, so types are compared case-insensitively.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date

from lxml.etree import _Element as Element

from crawler.events import (
    CONCERN,
    CONCERN_OF,
    CORRECTED,
    CORRECTION_OF,
    NOTICE_KIND,
    PUBMED,
    RETRACTED,
    RETRACTION_OF,
    UPDATE_OF,
    UPDATED,
    PaperEvent,
    gravest_kind,
)
from crawler.normalise import doi_key, find_dois, pmid
from crawler.xmlsafe import Readable, safe_iterparse
from spiders.pubmed_dates import earliest, medline_date, partial_date
from spiders.pubmed_text import plain_text
from spiders.pubmed_xml import PUBMED_URL, EFetchError

# RefType (lower-cased) on the changed paper's record -> what happened to that paper.
_PAPER_LINKS = {
    "retractionin": RETRACTED,
    "retractedandrepublishedin": RETRACTED,
    "erratumin": CORRECTED,
    "correctedandrepublishedin": CORRECTED,
    "expressionofconcernin": CONCERN,
    "updatein": UPDATED,
    "republishedin": UPDATED,
}
# RefType (lower-cased) on the notice's (or newer version's) record -> notice-side type.
_NOTICE_LINKS = {
    "retractionof": RETRACTION_OF,
    "retractedandrepublishedfrom": RETRACTION_OF,
    "erratumfor": CORRECTION_OF,
    "correctedandrepublishedfrom": CORRECTION_OF,
    "expressionofconcernfor": CONCERN_OF,
    "updateof": UPDATE_OF,
    "republishedfrom": UPDATE_OF,
}
# Links only a notice carries (a republication or new version is a paper, not a notice).
_NOTICE_LINK_KINDS = {
    "retractionof": NOTICE_KIND[RETRACTED],
    "erratumfor": NOTICE_KIND[CORRECTED],
    "expressionofconcernfor": NOTICE_KIND[CONCERN],
}
_NOTICE_PUB_TYPES = {
    "retraction of publication": NOTICE_KIND[RETRACTED],
    "published erratum": NOTICE_KIND[CORRECTED],
    "expression of concern": NOTICE_KIND[CONCERN],
}
_RETRACTED_PUB_TYPE = "retracted publication"
# The cited record's date in a RefSource: "<TA>. 2001 Mar 30;276(13):10576" (MEDLINE citation
# format puts the date right before the ";" that starts volume and issue).
_REF_DATE = re.compile(r"\b((?:1[89]|2[01])\d\d(?: [A-Za-z][^;]{0,20})?);")
_ROOTS = {"PubmedArticleSet", "PubmedArticle", "PubmedBookArticleSet", "PubmedBookArticle"}


@dataclass(frozen=True, slots=True)
class _Link:
    """One CommentsCorrections entry: the other record as PubMed names it."""

    ref_type: str
    pmid: str | None
    doi: str | None
    ref_source: str | None

    @property
    def cited_date(self) -> date | None:
        """The linked record's date, from its RefSource citation."""
        found = _REF_DATE.search(self.ref_source or "")
        parsed = medline_date(found.group(1)) if found else None
        return parsed[0] if parsed else None


@dataclass(slots=True)
class _Record:
    """What one PubmedArticle says about itself and its links."""

    pmid: str | None = None
    doi: str | None = None
    title: str | None = None
    published: date | None = None
    pub_types: set[str] = field(default_factory=set)
    links: list[_Link] = field(default_factory=list)


def events_from_article(element: Element) -> list[PaperEvent]:
    """Every lifecycle event one ``PubmedArticle`` element records, in document order.

    Paper-side events name this record as their target; notice-side events name the linked
    record. A ``PubmedBookArticle`` (or any other element) has none.
    """
    record = _read(element)
    if record is None:
        return []
    events: list[PaperEvent] = []
    for link in record.links:
        event = _link_event(link, record)
        if event is not None and event not in events:
            events.append(event)
    linked = any(e.type == RETRACTED for e in events)
    if _RETRACTED_PUB_TYPE in record.pub_types and not linked:
        # PubMed says the paper is retracted but links no notice: keep the fact, invent nothing.
        doi, pmid_ = record.doi, record.pmid
        events.append(PaperEvent(type=RETRACTED, source=PUBMED, target_doi=doi, target_pmid=pmid_))
    return events


def notice_kind(element: Element) -> str | None:
    """What kind of notice this record is ("retraction", "concern", "correction"), or None.

    From its publication types, else from the links only a notice carries; a retraction notice
    that is also typed as an erratum is a retraction (the gravest kind wins).
    """
    record = _read(element)
    if record is None:
        return None
    kinds = {_NOTICE_PUB_TYPES[t] for t in record.pub_types if t in _NOTICE_PUB_TYPES}
    kinds |= {
        _NOTICE_LINK_KINDS[link.ref_type]
        for link in record.links
        if link.ref_type in _NOTICE_LINK_KINDS
    }
    return gravest_kind(kinds)


def events_by_pmid(source: bytes | Readable) -> dict[str, list[PaperEvent]]:
    """``{pmid: events}`` for every PubmedArticle in an EFetch answer (an empty list: none).

    Accepts a ``PubmedArticleSet`` or one bare ``PubmedArticle`` fragment (how test fixtures
    store single records). Parsed incrementally with the safe parser (no entity expansion, no
    DTD, no network). Raises :class:`spiders.pubmed_xml.EFetchError` for an NCBI error document
    or an unexpected root, :class:`crawler.xmlsafe.UnsafeXMLError` for entity declarations and
    ``lxml.etree.XMLSyntaxError`` for a broken document.
    """
    return {
        key: events_from_article(element)
        for element in _articles(source)
        if (key := pmid(element.findtext("MedlineCitation/PMID")))
    }


# --------------------------------------------------------------------------- reading


def _articles(source: bytes | Readable) -> Iterator[Element]:
    events = safe_iterparse(source, tag=("PubmedArticle", "PubmedBookArticle", "ERROR"))
    for _, element in events:
        if element.tag == "ERROR":
            raise EFetchError(" ".join((element.text or "").split()) or "EFetch returned ERROR")
        if element.tag == "PubmedArticle":
            yield element
        # Bound memory by one article: empty this one and drop the emptied ones before it.
        element.clear(keep_tail=False)
        parent = element.getparent()
        while parent is not None and element.getprevious() is not None:
            del parent[0]
    root = events.root  # type: ignore[attr-defined]
    if root is not None and root.tag not in _ROOTS:
        raise EFetchError(f"unexpected EFetch root element <{root.tag}>")


def _read(element: Element) -> _Record | None:
    citation = element.find("MedlineCitation") if element.tag == "PubmedArticle" else None
    if citation is None:
        return None
    article = citation.find("Article")
    record = _Record(pmid=pmid(citation.findtext("PMID")), doi=_own_doi(element, article))
    if article is not None:
        title = article.find("ArticleTitle")
        record.title = plain_text(title) if title is not None else None
        record.published = _own_date(article)
        record.pub_types = {
            " ".join(t.split()).lower()
            for t in article.xpath("PublicationTypeList/PublicationType/text()")
        }
    record.links = [_link(cc) for cc in citation.iterfind("CommentsCorrectionsList/*")]
    return record


def _own_doi(element: Element, article: Element | None) -> str | None:
    # The record's own ids sit in PubmedData/ArticleIdList; ReferenceList holds cited papers'.
    for article_id in element.iterfind("PubmedData/ArticleIdList/ArticleId"):
        if article_id.get("IdType") == "doi" and (key := doi_key(article_id.text)):
            return key
    for location in article.iterfind("ELocationID") if article is not None else ():
        # ValidYN="N" marks a DOI the publisher got wrong.
        valid = location.get("EIdType") == "doi" and location.get("ValidYN") != "N"
        if valid and (key := doi_key(location.text)):
            return key
    return None


def _own_date(article: Element) -> date | None:
    electronic = article.find("ArticleDate")
    issue = article.find("Journal/JournalIssue/PubDate")
    return earliest(
        partial_date(electronic) if electronic is not None else None,
        partial_date(issue) if issue is not None else None,
    )


def _link(cc: Element) -> _Link:
    ref_source = " ".join((cc.findtext("RefSource") or "").split()) or None
    dois = find_dois(ref_source)
    return _Link(
        ref_type=(cc.get("RefType") or "").lower(),
        pmid=pmid(cc.findtext("PMID")),
        doi=doi_key(dois[0]) if dois else None,
        ref_source=ref_source,
    )


def _link_event(link: _Link, record: _Record) -> PaperEvent | None:
    if link.ref_type in _PAPER_LINKS:
        return PaperEvent(
            type=_PAPER_LINKS[link.ref_type],
            source=PUBMED,
            target_doi=record.doi,
            target_pmid=record.pmid,
            notice_doi=link.doi,
            notice_pmid=link.pmid,
            notice_title=link.ref_source,
            notice_url=_url(link.pmid, link.doi),
            date=link.cited_date,
        )
    if link.ref_type in _NOTICE_LINKS and (link.pmid or link.doi):
        # The link names the target; this record is the notice, dated by its own publication
        # (the RefSource date is the target's).
        return PaperEvent(
            type=_NOTICE_LINKS[link.ref_type],
            source=PUBMED,
            target_doi=link.doi,
            target_pmid=link.pmid,
            notice_doi=record.doi,
            notice_pmid=record.pmid,
            notice_title=record.title,
            notice_url=_url(record.pmid, record.doi),
            date=record.published,
        )
    return None  # not a lifecycle link, or a notice whose target has no id: no event


def _url(pmid_: str | None, doi: str | None) -> str | None:
    if pmid_:
        return PUBMED_URL.format(pmid=pmid_)
    return f"https://doi.org/{doi}" if doi else None
