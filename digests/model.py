"""What a digest is, ready to render: plain frozen dataclasses, no database.

Selection (which papers, for whom, which week) builds these from the store; :mod:`digests.render`
turns them into an e-mail. Every text field holds plain text exactly as stored (not HTML): the
templates escape it once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from crawler.normalise import doi_url, pmcid, pubmed_url, squash
from digests import evidence
from digests.evidence import Badge

#: Key of the section for papers about both topics; it always comes first.
OVERLAP_KEY = "fibromyalgia+autoimmunity"
OVERLAP_TITLE = "Where fibromyalgia meets autoimmunity"
OVERLAP_TOPICS = ("fibromyalgia", "autoimmunity")

#: Abstract excerpts stop at the last word boundary before this many characters.
EXCERPT_CHARS = 300
#: How many authors are named before "et al.".
AUTHORS_SHOWN = 3
#: How many news stories a digest lists at most ("In the news" stays short).
NEWS_SHOWN = 10

# Characters a DOI may keep in a URL path; the rest ("#", "?", "%", "<", space...) must be
# percent-encoded or the resolver receives a different name (DOI Handbook, section 2.5.2.4).


@dataclass(frozen=True)
class PressLink:
    """A news story that covered the paper."""

    title: str
    url: str
    outlet: str


@dataclass(frozen=True)
class NewsEntry:
    """A news story that names no paper: shown under its own headline, never as a paper.

    From ``news_items`` (``news_id``), or a story that a version before issue 12 stored as a
    nameless paper (``paper_id``; see :func:`digests.selection.press_only`).
    """

    headline: str
    url: str
    #: Where it was published ("ScienceDaily") and who put it out (a university).
    site: str
    outlet: str | None
    published: date | None
    summary: str | None
    topics: tuple[str, ...] = ()
    news_id: int | None = None
    paper_id: int | None = None

    @property
    def excerpt(self) -> str | None:
        """The start of the summary, cut at a word boundary with an ellipsis."""
        return excerpt(self.summary)

    @property
    def credit(self) -> str:
        """ "ScienceDaily · University of X": where it ran and whose story it is."""
        return " · ".join(part for part in (self.site, self.outlet) if part)


@dataclass(frozen=True)
class Entry:
    """One paper in a digest (or, with ``story`` set, a stored row that is only news)."""

    paper_id: int
    title: str
    #: Where the title links: the DOI resolver, or PubMed when there is no DOI (see paper_url).
    url: str
    doi: str | None
    pmid: str | None
    pmcid: str | None
    authors: tuple[str, ...]
    journal: str | None
    published: date | None
    publication_types: tuple[str, ...]
    topics: tuple[str, ...]
    abstract: str | None
    press: tuple[PressLink, ...]
    preprint: bool
    #: Set for a stored "paper" that is press coverage naming no paper (rows from before
    #: issue 12): it is shown in the news, never among the papers.
    story: NewsEntry | None = None
    #: What happened to it since (crawler.events: ``retracted``, ``concern``, ...), shown as
    #: a warning badge however its record reads.
    status: str = "current"
    #: A preprint's journal version (digests.works): where and the link; it is no longer
    #: badged as a preprint.
    published_in: str | None = None
    published_url: str | None = None
    #: A journal article's preprint history: "first posted as a preprint on <date> (<server>)".
    preprint_posted: date | None = None
    preprint_server: str | None = None

    @property
    def pubmed_url(self) -> str | None:
        """The PubMed page, when the paper has a PMID."""
        return pubmed_url(self.pmid)

    @property
    def pmc_url(self) -> str | None:
        """The free full text in PubMed Central, when the paper has a PMCID."""
        canonical = pmcid(self.pmcid)
        return f"https://pmc.ncbi.nlm.nih.gov/articles/{canonical}/" if canonical else None

    @property
    def doi_url(self) -> str | None:
        """The DOI resolver link, when the paper has a DOI."""
        return doi_url(self.doi)

    @property
    def authors_short(self) -> str:
        """The first three authors, then "et al." when there are more ("" when none)."""
        names = [name for name in (squash(a) for a in self.authors) if name]
        shown = ", ".join(names[:AUTHORS_SHOWN])
        return f"{shown} et al." if len(names) > AUTHORS_SHOWN else shown

    @property
    def badges(self) -> tuple[Badge, ...]:
        """Evidence and warning badges (see :func:`digests.evidence.badges`)."""
        types = (*self.publication_types, *evidence.status_types(self.status))
        found = evidence.badges(types, self.title, self.doi, self._kinds)
        if self.published_in is not None:  # peer reviewed since: "Now published in ..."
            found = tuple(b for b in found if b.key != "preprint")
        return found

    @property
    def strength(self) -> int:
        """Ordering weight within a section (see :func:`digests.evidence.strength`)."""
        types = (*self.publication_types, *evidence.status_types(self.status))
        return evidence.strength(types, self.title, self.doi, self._kinds)

    @property
    def excerpt(self) -> str | None:
        """The start of the abstract, cut at a word boundary with an ellipsis."""
        return excerpt(self.abstract)

    @property
    def _kinds(self) -> tuple[str, ...]:
        return ("preprint",) if self.preprint else ()


@dataclass(frozen=True)
class Section:
    """A titled group of entries, already ordered."""

    key: str
    title: str
    entries: tuple[Entry, ...]


@dataclass(frozen=True)
class DigestLinks:
    """Per-subscriber links (signed tokens are the caller's business)."""

    unsubscribe: str
    preferences: str
    #: The web version of this very digest.
    archive: str
    home: str


@dataclass(frozen=True)
class Digest:
    """One subscriber's digest for one period."""

    subscriber_name: str | None
    subscriber_email: str
    #: The digest's date in the subscriber's time zone.
    period: date
    period_start: date | None
    sections: tuple[Section, ...]
    links: DigestLinks
    format: Literal["html", "text"] = "html"
    #: Press coverage naming no paper, in its own short "In the news" section.
    news: tuple[NewsEntry, ...] = ()
    #: What happened to papers this subscriber was sent before (digests.updates.Update):
    #: the "Updates on papers you were sent" section, first.
    updates: tuple[Any, ...] = ()

    @property
    def paper_count(self) -> int:
        """Distinct papers in the digest."""
        return len({e.paper_id for s in self.sections for e in s.entries})

    @property
    def is_empty(self) -> bool:
        """True when there is nothing to list (an operator may still send a short note)."""
        return self.paper_count == 0 and not self.news and not self.updates


def paper_url(doi: str | None, raw_pmid: str | None, fallback: str | None = None) -> str | None:
    """The link for an entry title: the DOI, else PubMed, else ``fallback``."""
    return doi_url(doi) or pubmed_url(raw_pmid) or fallback


def excerpt(text: str | None, limit: int = EXCERPT_CHARS) -> str | None:
    """``text`` squashed and, when longer than ``limit``, cut at a word boundary + "…"."""
    flat = squash(text)
    if flat is None or len(flat) <= limit:
        return flat
    cut = flat[: limit + 1].rsplit(" ", 1)[0] if " " in flat[:limit] else flat[:limit]
    return cut.rstrip(" ,;:.-–—(") + "…"


def build_news(
    entries: Iterable[Entry], news: Iterable[NewsEntry], topics: Iterable[str]
) -> tuple[NewsEntry, ...]:
    """The "In the news" section: stories on ``topics``, each once, newest first.

    ``news`` comes from ``news_items``; ``entries`` may carry stories stored as papers by
    older versions (``Entry.story``). At most :data:`NEWS_SHOWN` are kept: press coverage
    is a pointer, not the digest's subject.
    """
    chosen = set(topics)
    stories = [*news, *(e.story for e in entries if e.story is not None)]
    unique: dict[str, NewsEntry] = {}
    for story in stories:
        if chosen.intersection(story.topics):
            unique.setdefault(story.url, story)
    ordered = sorted(
        unique.values(),
        key=lambda s: (-(s.published.toordinal() if s.published else 0), s.headline.casefold()),
    )
    return tuple(ordered[:NEWS_SHOWN])


def build_sections(
    entries: Iterable[Entry], topic_titles: Mapping[str, str]
) -> tuple[Section, ...]:
    """Group entries into digest sections, each paper once.

    ``topic_titles`` maps the subscriber's chosen topics to section titles, in display order;
    an entry's other topics are ignored and an entry with none of them is left out. A paper
    on both fibromyalgia and autoimmunity (when both are chosen) goes in the overlap section,
    which comes first. Each section is ordered by evidence strength, then newest first, then
    title. Empty sections are omitted.
    """
    overlap = all(t in topic_titles for t in OVERLAP_TOPICS)
    groups: dict[str, list[Entry]] = {OVERLAP_KEY: [], **{t: [] for t in topic_titles}}
    seen: set[int] = set()
    for entry in entries:
        if entry.story is not None:  # news, not a paper: see build_news
            continue
        key = _section_key(entry, topic_titles, overlap)
        if key is None or entry.paper_id in seen:
            continue
        seen.add(entry.paper_id)
        groups[key].append(entry)
    titles = {OVERLAP_KEY: OVERLAP_TITLE, **topic_titles}
    return tuple(
        Section(key, titles[key], tuple(sorted(found, key=_rank)))
        for key, found in groups.items()
        if found
    )


def _section_key(entry: Entry, topic_titles: Mapping[str, str], overlap: bool) -> str | None:
    if overlap and all(t in entry.topics for t in OVERLAP_TOPICS):
        return OVERLAP_KEY
    # The first chosen topic in the subscriber's order wins, so the result does not depend
    # on the order in which the classifier happened to list the entry's topics.
    return next((t for t in topic_titles if t in entry.topics), None)


def _rank(entry: Entry) -> tuple[int, int, str, int]:
    newest_first = -entry.published.toordinal() if entry.published else 0
    return (-entry.strength, newest_first, entry.title.casefold(), entry.paper_id)
