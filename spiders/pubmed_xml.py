"""PubMed EFetch XML to :class:`~crawler.items.Paper` items, read incrementally.

Pure functions (fetching: the spider; ESearch and URLs: :mod:`spiders.eutils`; dates:
:mod:`spiders.pubmed_dates`; events: :mod:`spiders.pubmed_events`). Quirks (DTD 2013-2025):

* The article's own DOI is ``PubmedData/ArticleIdList/ArticleId[@IdType="doi"]`` or
  ``Article/ELocationID[@EIdType="doi"]``. ``PubmedData/ReferenceList`` also holds ArticleIdLists,
  but those are *cited* papers, so ids are only read from an ArticleIdList that is a direct child
  of PubmedData / BookDocument / PubmedBookData.
* Inline markup (``<i>``, ``<sub>``, ``<sup>``) and MathML are flattened to plain text.
* Dates: Year/Month/Day, Year/Season or free-text MedlineDate; missing parts mean "the first".
* A book chapter (``PubmedBookArticle``) keeps everything under BookDocument, not MedlineCitation.
* A failed EFetch (expired WebEnv, say) answers ``<eFetchResult><ERROR>…`` with HTTP 200.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from lxml.etree import XMLSyntaxError
from lxml.etree import _Element as Element

from crawler.events import PaperEvent
from crawler.items import Paper
from crawler.xmlsafe import Readable, UnsafeXMLError, safe_iterparse
from spiders.pubmed_dates import Partial, earliest, partial_date
from spiders.pubmed_text import abstract_text, author_name, clean_text, plain_text

PUBMED_URL = "https://pubmed.ncbi.nlm.nih.gov/{pmid}/"
_ARTICLE_TAGS = ("PubmedArticle", "PubmedBookArticle")
_SET_TAGS = {"PubmedArticleSet", "PubmedBookArticleSet"}


class EFetchError(ValueError):
    """EFetch answered with an error document, or something that is no PubmedArticleSet."""


# --------------------------------------------------------------------------- EFetch


def iter_efetch(
    source: bytes | Readable,
    source_id: str,
    read_events: Callable[[Element], list[PaperEvent]] | None = None,
) -> Iterator[Paper]:
    """Yield one :class:`Paper` per PubmedArticle / PubmedBookArticle in an EFetch answer.

    Parses incrementally: each article is emptied once read and unlinked when the next one
    arrives, so memory is bounded by one article, not by the document. Raises
    :class:`EFetchError` and nothing else: for an NCBI error document (an expired WebEnv is
    not "no papers"), entity declarations (``__cause__``: ``UnsafeXMLError``) or a broken
    document, after the papers before the break. Articles without a PMID are skipped.
    ``read_events`` (:func:`spiders.pubmed_events.events_from_article`) fills each paper's
    ``events`` from the same element, read once.
    """
    try:
        for element in _article_elements(source):
            paper = _read_record(element, source_id)
            if paper is not None and read_events is not None:
                paper.events = read_events(element)
            if paper is not None:
                yield paper
    except (UnsafeXMLError, XMLSyntaxError) as exc:  # one documented error (issue 12 A9)
        raise EFetchError(f"unreadable EFetch answer: {type(exc).__name__}: {exc}") from exc


def _article_elements(source: bytes | Readable) -> Iterator[Element]:
    events = safe_iterparse(source, tag=(*_ARTICLE_TAGS, "ERROR"))
    for _, element in events:
        if element.tag == "ERROR":
            raise EFetchError(clean_text(element.text) or "EFetch returned ERROR")
        yield element
        # Free what was read: the article's subtree, and the (already emptied) articles before
        # it, which the root would otherwise keep as a growing list of empty children.
        element.clear(keep_tail=False)
        parent = element.getparent()
        while parent is not None and element.getprevious() is not None:
            del parent[0]
    root = events.root  # type: ignore[attr-defined]
    if root is not None and root.tag not in _SET_TAGS:
        raise EFetchError(f"unexpected EFetch root element <{root.tag}>")


@dataclass(slots=True)
class _Record:
    """What one article or book record says, before it becomes a Paper."""

    pmid: str | None = None
    title: str | None = None
    vernacular_title: str | None = None
    book_title: str | None = None
    abstract: str | None = None
    id_doi: str | None = None
    elocation_doi: str | None = None
    pmcid: str | None = None
    journal: str | None = None
    iso_abbreviation: str | None = None
    medline_ta: str | None = None
    article_date: Partial | None = None
    pub_date: Partial | None = None
    authors: list[str] = field(default_factory=list)
    book_authors: list[str] = field(default_factory=list)
    publication_types: list[str] = field(default_factory=list)
    mesh: list[str] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)


# Elements whose children are read as if they were the record's own: the article layout
# (MedlineCitation/Article, PubmedData) and the book layout (BookDocument/Book, PubmedBookData).
# Anything else (ReferenceList, CommentsCorrectionsList, ...) is never descended into.
_CONTAINERS = frozenset(
    {"MedlineCitation", "Article", "PubmedData", "BookDocument", "Book", "PubmedBookData"}
)


def _read_record(element: Element, source_id: str) -> Paper | None:
    record = _Record()
    _walk(element, record)
    if not record.pmid:
        return None
    title = record.title or record.book_title or record.vernacular_title
    types = record.publication_types
    return Paper(
        source_id=source_id,
        origin="pubmed",
        url=PUBMED_URL.format(pmid=record.pmid),
        sighting_kind="preprint" if "Preprint" in types else "article",
        seen_title=title,
        doi=record.id_doi or record.elocation_doi,
        pmid=record.pmid,
        pmcid=record.pmcid,
        title=title,
        abstract=record.abstract,
        journal=_journal(record),
        published=earliest(record.article_date, record.pub_date),
        authors=record.authors or record.book_authors,
        publication_types=types,
        mesh=record.mesh,
        keywords=record.keywords,
    )


def _journal(record: _Record) -> str | None:
    if record.journal or record.iso_abbreviation or record.medline_ta:
        return record.journal or record.iso_abbreviation or record.medline_ta
    # A book chapter's venue is its book; a whole book has no venue beyond its own title.
    return record.book_title if record.title else None


def _walk(element: Element, record: _Record) -> None:
    for child in element:
        tag = child.tag
        if tag in _CONTAINERS:
            _walk(child, record)
        else:
            handler = _HANDLERS.get(tag)
            if handler is not None:
                handler(child, record)


def _on_pmid(el: Element, record: _Record) -> None:
    record.pmid = record.pmid or clean_text(el.text)


def _on_article_title(el: Element, record: _Record) -> None:
    title = plain_text(el)
    # NLM writes "[Not Available]." when a record has no English title.
    record.title = None if title == "[Not Available]." else title


def _on_vernacular_title(el: Element, record: _Record) -> None:
    record.vernacular_title = plain_text(el)


def _on_book_title(el: Element, record: _Record) -> None:
    record.book_title = plain_text(el)


def _on_elocation(el: Element, record: _Record) -> None:
    # ValidYN="N" marks an identifier the publisher got wrong.
    if el.get("EIdType") == "doi" and el.get("ValidYN") != "N" and not record.elocation_doi:
        record.elocation_doi = clean_text(el.text)


def _on_article_ids(el: Element, record: _Record) -> None:
    for article_id in el:
        kind = article_id.get("IdType")
        if kind == "doi" and not record.id_doi:
            record.id_doi = clean_text(article_id.text)
        elif kind == "pmc" and not record.pmcid:
            record.pmcid = clean_text(article_id.text)


def _on_abstract(el: Element, record: _Record) -> None:
    record.abstract = abstract_text(el)


def _on_author_list(el: Element, record: _Record) -> None:
    if el.get("Type") == "editors":
        return
    names = [name for author in el if (name := author_name(author))]
    # A chapter's own authors (BookDocument/AuthorList) beat the book's (Book/AuthorList).
    parent = el.getparent()
    if parent is not None and parent.tag == "Book":
        record.book_authors = names
    else:
        record.authors = names


def _on_publication_types(el: Element, record: _Record) -> None:
    record.publication_types += [t for pt in el if (t := plain_text(pt))]


def _on_publication_type(el: Element, record: _Record) -> None:
    # Book records list PublicationType directly under BookDocument, without a list element.
    if text := plain_text(el):
        record.publication_types.append(text)


def _on_mesh(el: Element, record: _Record) -> None:
    for heading in el:
        # DescriptorName comes first in a MeshHeading; find() only as a fallback.
        first = heading[0] if len(heading) else None
        descriptor = first if first is not None and first.tag == "DescriptorName" else None
        descriptor = descriptor if descriptor is not None else heading.find("DescriptorName")
        if descriptor is not None and (text := plain_text(descriptor)):
            record.mesh.append(text)


def _on_keywords(el: Element, record: _Record) -> None:
    record.keywords += [k for kw in el if kw.tag == "Keyword" and (k := plain_text(kw))]


def _on_journal(el: Element, record: _Record) -> None:
    for child in el:
        if child.tag == "Title":
            record.journal = clean_text(child.text)
        elif child.tag == "ISOAbbreviation":
            record.iso_abbreviation = clean_text(child.text)
        elif child.tag == "JournalIssue":
            for part in child:  # a loop over a few children is cheaper than find()
                if part.tag == "PubDate":
                    record.pub_date = partial_date(part)
                    break


def _on_pub_date(el: Element, record: _Record) -> None:
    record.pub_date = partial_date(el)  # Book/PubDate; a journal's is read by _on_journal


def _on_article_date(el: Element, record: _Record) -> None:
    record.article_date = record.article_date or partial_date(el)


def _on_journal_info(el: Element, record: _Record) -> None:
    for child in el:
        if child.tag == "MedlineTA":
            record.medline_ta = clean_text(child.text)
            return
    record.medline_ta = None


_HANDLERS: dict[str, Callable[[Element, _Record], None]] = {
    "PMID": _on_pmid,
    "ArticleTitle": _on_article_title,
    "VernacularTitle": _on_vernacular_title,
    "BookTitle": _on_book_title,
    "ELocationID": _on_elocation,
    "ArticleIdList": _on_article_ids,
    "Abstract": _on_abstract,
    "AuthorList": _on_author_list,
    "PublicationTypeList": _on_publication_types,
    "PublicationType": _on_publication_type,
    "MeshHeadingList": _on_mesh,
    "KeywordList": _on_keywords,
    "Journal": _on_journal,
    "PubDate": _on_pub_date,
    "ArticleDate": _on_article_date,
    "MedlineJournalInfo": _on_journal_info,
}


# --------------------------------------------------------------------------- text
