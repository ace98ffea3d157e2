"""The items spiders yield: a :class:`Paper`, a :class:`PaperBatch` of them, or a
:class:`NewsStory` (press coverage that names no paper).

A spider turns response bytes into :class:`Paper` items and nothing else: no database, no
identity decisions. Text fields hold plain text (parsers flatten markup with
:func:`crawler.normalise.html_to_text`); identifiers hold what the source printed and are
normalised by the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from crawler.events import PaperEvent, VersionLink

#: How much a record from each origin is trusted when two disagree (higher wins).
ORIGIN_RANK = {"news": 1, "feed": 2, "pubmed": 3}

SIGHTING_KINDS = ("article", "news", "preprint")


@dataclass
class Paper:
    """One paper as one source saw it."""

    source_id: str
    #: ``pubmed`` | ``feed`` | ``news``: what kind of record this is (decides field authority).
    origin: str
    #: Where it was seen (the article page, the feed item link, the news story).
    url: str | None = None
    #: ``article`` | ``news`` | ``preprint``.
    sighting_kind: str = "article"
    #: The title as shown at that place (a news headline for stories).
    seen_title: str | None = None
    doi: str | None = None
    pmid: str | None = None
    pmcid: str | None = None
    title: str | None = None
    abstract: str | None = None
    journal: str | None = None
    published: date | None = None
    authors: list[str] = field(default_factory=list)
    publication_types: list[str] = field(default_factory=list)
    mesh: list[str] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)
    #: Topics assigned by the pipeline (or preset by a source with ``topics``).
    topics: list[str] = field(default_factory=list)
    #: Text around the sighting (a news story's headline and summary) used only to decide
    #: topics; never stored as the paper's own text.
    context: str | None = None
    #: What the record says happened to it or to another paper (a retraction, an erratum...).
    events: list[PaperEvent] = field(default_factory=list)
    #: Preprint-to-journal links the record reports (its own or another paper's).
    versions: list[VersionLink] = field(default_factory=list)
    #: Set by the pipeline for an off-topic record that carries events: its events are
    #: stored (a notice about a paper litwatch holds), the record itself is not.
    events_only: bool = False

    @property
    def rank(self) -> int:
        return ORIGIN_RANK.get(self.origin, 0)


@dataclass
class PaperBatch:
    """Several papers from one response, passed through the pipelines as one item.

    For spiders that read hundreds of records per response (a PubMed EFetch page holds 500):
    Scrapy's machinery for each item (scheduling, the pipeline chain, the ``item_scraped``
    signal) is not free, so the whole page travels as one item. The pipelines treat it as
    its papers, in order; a spider yielding few papers per response yields them one by one.
    """

    papers: list[Paper] = field(default_factory=list)


@dataclass
class NewsStory:
    """A news story that names no paper: press coverage, stored and shown as such.

    A story whose page gives a DOI, a PMID or a paper's title yields :class:`Paper` items
    (``origin="news"``) that the identity store attaches to the paper; a story naming none
    of these is not a paper and must never become a nameless one ("(untitled)" in digests,
    ``anonnduntitled`` in BibTeX). It is stored once per URL in ``news_items``.
    """

    source_id: str
    #: The story page (unique: one row per story, whichever feed listed it).
    url: str
    headline: str
    #: The journalist's summary (the feed's description, else the page's), never an abstract.
    summary: str | None = None
    #: Who put the story out (ScienceDaily's "Source": a university, an institute).
    outlet: str | None = None
    published: date | None = None
    #: Topics assigned by the pipeline (or preset by a source with ``topics``).
    topics: list[str] = field(default_factory=list)


def names_no_paper(paper: Paper) -> bool:
    """Whether ``paper`` is really press coverage: no identifier and no title of its own.

    Such a record can never be matched to a paper (the identity store matches on DOI, PMID,
    PMCID or title) and has nothing to show but "(untitled)". Versions before this rule
    stored such stories as papers; :mod:`digests.selection` and :mod:`crawler.export` use
    the same test on stored rows (with "only news sightings") to treat those as news.
    """
    return not (paper.doi or paper.pmid or paper.pmcid or (paper.title or "").strip())
