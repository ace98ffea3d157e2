"""A fake NCBI E-utilities (ESearch + EFetch) served by :class:`LocalHTTPServer`.

It answers the requests the PubMed spider makes, in NCBI's own formats:

* ``esearch.fcgi?db=pubmed&term=..&datetype=edat&mindate=Y/M/D&maxdate=Y/M/D&usehistory=y``
  -> an ``eSearchResult`` with Count, RetMax, RetStart, QueryKey, WebEnv and IdList. The
  count is the number of records whose entry date (EDAT) lies in the window, both ends
  inclusive, as NCBI counts. The result is kept "on the history server" under its WebEnv.
* ``efetch.fcgi?db=pubmed&WebEnv=..&query_key=..&retstart=..&retmax=..`` -> a
  ``PubmedArticleSet`` holding that slice of the stored result; an unknown WebEnv gets NCBI's
  ``<eFetchResult><ERROR>`` answer (with HTTP 200, as NCBI does).

Records come from a :class:`RecordSource`: :class:`RecordList` holds real ``PubmedArticle``
elements (split out of an EFetch file such as NLM's 177-article sample) with an entry date
each; :class:`SyntheticRecords` makes any number of small distinct articles per day on the
fly, so a benchmark can serve a million records without building them first, and a test can
make ESearch's 10,000 cap bite with counts that depend on the date range.

Example::

    eutils = FakeEutils(RecordList(load_records(SAMPLE, edat=date.today())))
    # or, for a benchmark: FakeEutils(SyntheticRecords.spread(100_000, monday, sunday))
    base_url = eutils.install(http_server)      # "[pubmed] base_url" / a source's base_url
    ...
    assert eutils.esearch_requests[0].arg("datetype") == "edat"
"""

from __future__ import annotations

import gzip
import itertools
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Protocol
from xml.sax.saxutils import escape

import lxml.etree

from tests.support.httpserver import LocalHTTPServer, Request, Response

XML = "text/xml; charset=UTF-8"
#: ESearch returns at most this many ids per query, whatever Count says (NCBI's cap).
ESEARCH_MAX_IDS = 10_000
_SET_HEAD = (
    b'<?xml version="1.0" ?>\n<!DOCTYPE PubmedArticleSet PUBLIC "-//NLM//DTD PubMedArticle, '
    b'1st January 2025//EN" "https://dtd.nlm.nih.gov/ncbi/pubmed/out/pubmed_250101.dtd">\n'
    b"<PubmedArticleSet>\n"
)
_SET_TAIL = b"</PubmedArticleSet>\n"


@dataclass(frozen=True)
class Record:
    """One PubMed record: its PMID, entry date (EDAT) and ``<PubmedArticle>`` XML."""

    pmid: str
    edat: date
    xml: bytes


class RecordSource(Protocol):
    """What ESearch counts and EFetch serves, for one query term."""

    def count(self, mindate: date, maxdate: date) -> int:
        """Records with mindate <= EDAT <= maxdate."""
        ...

    def articles(self, mindate: date, maxdate: date, start: int, stop: int) -> Iterable[bytes]:
        """The ``<PubmedArticle>`` elements ``start:stop`` of that window, in a fixed order."""
        ...

    def pmids(self, mindate: date, maxdate: date, start: int, stop: int) -> Iterable[str]:
        """The PMIDs of the same slice (ESearch's IdList)."""
        ...


@dataclass
class RecordList:
    """A fixed list of records, ordered as given (NCBI orders by recency; any fixed order does)."""

    records: Sequence[Record]

    def _window(self, mindate: date, maxdate: date) -> list[Record]:
        return [r for r in self.records if mindate <= r.edat <= maxdate]

    def count(self, mindate: date, maxdate: date) -> int:
        """Records in the window."""
        return len(self._window(mindate, maxdate))

    def articles(self, mindate: date, maxdate: date, start: int, stop: int) -> Iterable[bytes]:
        """The XML of records ``start:stop`` of the window."""
        return [r.xml for r in self._window(mindate, maxdate)[start:stop]]

    def pmids(self, mindate: date, maxdate: date, start: int, stop: int) -> Iterable[str]:
        """The PMIDs of records ``start:stop`` of the window."""
        return [r.pmid for r in self._window(mindate, maxdate)[start:stop]]


_SYNTHETIC = (
    '<PubmedArticle><MedlineCitation Status="MEDLINE" Owner="NLM">'
    '<PMID Version="1">{pmid}</PMID><Article PubModel="Electronic">'
    "<Journal><Title>Journal of Synthetic Records</Title><JournalIssue><PubDate>"
    "<Year>{year}</Year><Month>{month:02d}</Month><Day>{day:02d}</Day></PubDate></JournalIssue>"
    "</Journal><ArticleTitle>{title} {pmid}</ArticleTitle>"
    "<Abstract><AbstractText>Record {pmid} entered PubMed on {edat}.</AbstractText></Abstract>"
    '<ELocationID EIdType="doi" ValidYN="Y">10.5555/synthetic.{pmid}</ELocationID>'
    "</Article></MedlineCitation><PubmedData><ArticleIdList>"
    '<ArticleId IdType="pubmed">{pmid}</ArticleId>'
    '<ArticleId IdType="doi">10.5555/synthetic.{pmid}</ArticleId>'
    "</ArticleIdList></PubmedData></PubmedArticle>\n"
)


@dataclass
class SyntheticRecords:
    """``per_day(day)`` distinct small articles entered on each day, made when asked for.

    PMIDs are ``YYYYMMDD`` followed by a 5-digit serial, so every (day, serial) pair is a
    distinct paper with a distinct DOI (``10.5555/synthetic.<pmid>``). ``title`` decides
    whether the records match a topic ("Fibromyalgia cohort" does, "Crystal growth" does not).
    """

    per_day: Callable[[date], int] | int
    title: str = "Fibromyalgia synthetic cohort"

    @classmethod
    def spread(
        cls, total: int, first: date, last: date, title: str = "Fibromyalgia synthetic cohort"
    ) -> SyntheticRecords:
        """``total`` records spread as evenly as possible over the days ``first..last``.

        What a benchmark wants: "N distinct articles entered PubMed this week".
        """
        days = (last - first).days + 1
        base, extra = divmod(total, days)

        def per_day(day: date) -> int:
            if not first <= day <= last:
                return 0
            return base + (1 if (day - first).days < extra else 0)

        return cls(per_day, title)

    def _day_count(self, day: date) -> int:
        return self.per_day(day) if callable(self.per_day) else self.per_day

    def _days(self, mindate: date, maxdate: date) -> Iterator[date]:
        day = mindate
        while day <= maxdate:
            yield day
            day += timedelta(days=1)

    def count(self, mindate: date, maxdate: date) -> int:
        """Sum of the daily counts in the window."""
        return sum(self._day_count(day) for day in self._days(mindate, maxdate))

    def _slice(
        self, mindate: date, maxdate: date, start: int, stop: int
    ) -> Iterator[tuple[date, str]]:
        skipped = 0
        for day in self._days(mindate, maxdate):
            n = self._day_count(day)
            if skipped + n <= start:
                skipped += n
                continue
            first = max(0, start - skipped)
            last = min(n, stop - skipped)
            for serial in range(first, last):
                yield day, f"{day:%Y%m%d}{serial:05d}"
            skipped += n
            if skipped >= stop:
                return

    def articles(self, mindate: date, maxdate: date, start: int, stop: int) -> Iterable[bytes]:
        """Render articles ``start:stop`` of the window."""
        title = escape(self.title)
        for day, pmid in self._slice(mindate, maxdate, start, stop):
            yield _SYNTHETIC.format(
                pmid=pmid, year=day.year, month=day.month, day=day.day, title=title, edat=day
            ).encode()

    def pmids(self, mindate: date, maxdate: date, start: int, stop: int) -> Iterable[str]:
        """PMIDs of articles ``start:stop`` of the window."""
        return [pmid for _day, pmid in self._slice(mindate, maxdate, start, stop)]


def load_records(path: Path, edat: date | Callable[[int], date]) -> list[Record]:
    """Split a ``PubmedArticleSet`` file (``.xml`` or ``.xml.gz``) into records.

    ``edat`` is every record's entry date, or a function of the record's position. The file
    is trusted test data, but it is parsed with the same no-entities/no-network options anyway.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    records = []
    with opener(path, "rb") as fh:
        events = lxml.etree.iterparse(
            fh,
            tag="PubmedArticle",
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
        )
        for position, (_event, element) in enumerate(events):
            pmid = element.findtext("MedlineCitation/PMID")
            assert pmid, f"record {position} of {path} has no PMID"
            day = edat(position) if callable(edat) else edat
            xml = lxml.etree.tostring(element, encoding="utf-8", with_tail=False) + b"\n"
            records.append(Record(pmid.strip(), day, xml))
            element.clear(keep_tail=False)
    return records


@dataclass(frozen=True)
class _Stored:
    term: str
    mindate: date
    maxdate: date
    count: int


def _ncbi_date(text: str | None) -> date | None:
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y/%m/%d").date()
    except ValueError:
        return None


@dataclass
class FakeEutils:
    """ESearch/EFetch handlers over ``records`` (one source for every term, or one per term).

    ``esearch_errors`` maps a term to the text of an ``<ERROR>`` answer; ``efetch_bodies``
    maps a term to a raw body that EFetch returns instead of records (an XML bomb, a
    truncated document). Requests are kept in ``esearch_requests`` / ``efetch_requests``.
    """

    records: RecordSource | Mapping[str, RecordSource]
    esearch_errors: dict[str, str] = field(default_factory=dict)
    efetch_bodies: dict[str, bytes] = field(default_factory=dict)
    esearch_requests: list[Request] = field(default_factory=list)
    efetch_requests: list[Request] = field(default_factory=list)
    _history: dict[str, _Stored] = field(default_factory=dict)
    _serial: Iterator[int] = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def install(self, server: LocalHTTPServer, prefix: str = "/entrez/eutils/") -> str:
        """Route ``prefix``esearch.fcgi and efetch.fcgi to this fake; return the base URL."""
        server.add_handler(prefix + "esearch.fcgi", self.esearch)
        server.add_handler(prefix + "efetch.fcgi", self.efetch)
        return server.url(prefix)

    def source_for(self, term: str) -> RecordSource | None:
        """The records a term finds (None: the term finds nothing)."""
        if isinstance(self.records, Mapping):
            return self.records.get(term)
        return self.records

    def esearch(self, request: Request) -> Response:
        """Answer one ESearch request."""
        with self._lock:
            self.esearch_requests.append(request)
        term = request.arg("term") or ""
        if term in self.esearch_errors:
            return _esearch_error(self.esearch_errors[term])
        mindate, maxdate = _ncbi_date(request.arg("mindate")), _ncbi_date(request.arg("maxdate"))
        if mindate is None or maxdate is None:
            return _esearch_error("Invalid or missing mindate/maxdate")
        source = self.source_for(term)
        count = source.count(mindate, maxdate) if source else 0
        retstart = int(request.arg("retstart") or 0)
        retmax = min(int(request.arg("retmax") or 20), ESEARCH_MAX_IDS)
        stop = min(count, retstart + retmax, ESEARCH_MAX_IDS)
        ids = list(source.pmids(mindate, maxdate, retstart, stop)) if source and stop > 0 else []
        history = ""
        if request.arg("usehistory") == "y":
            webenv = f"MCID_fake{next(self._serial):04d}"
            with self._lock:
                self._history[webenv] = _Stored(term, mindate, maxdate, count)
            history = f"<QueryKey>1</QueryKey><WebEnv>{webenv}</WebEnv>"
        body = (
            '<?xml version="1.0" encoding="UTF-8" ?>\n'
            '<!DOCTYPE eSearchResult PUBLIC "-//NLM//DTD esearch 20060628//EN" '
            '"https://eutils.ncbi.nlm.nih.gov/eutils/dtd/20060628/esearch.dtd">\n'
            f"<eSearchResult><Count>{count}</Count><RetMax>{len(ids)}</RetMax>"
            f"<RetStart>{retstart}</RetStart>{history}<IdList>"
            + "".join(f"<Id>{pmid}</Id>" for pmid in ids)
            + f"</IdList><TranslationSet/><QueryTranslation>{escape(term)} AND "
            f"{mindate:%Y/%m/%d}:{maxdate:%Y/%m/%d}[edat]</QueryTranslation></eSearchResult>\n"
        )
        return Response(200, body.encode(), content_type=XML)

    def efetch(self, request: Request) -> Response:
        """Answer one EFetch request from the history server."""
        with self._lock:
            self.efetch_requests.append(request)
            stored = self._history.get(request.arg("WebEnv") or "")
        if stored is None or request.arg("query_key") != "1":
            body = b"<eFetchResult><ERROR>Unable to obtain query #1</ERROR></eFetchResult>\n"
            return Response(200, body, content_type=XML)
        if stored.term in self.efetch_bodies:
            return Response(200, self.efetch_bodies[stored.term], content_type=XML)
        source = self.source_for(stored.term)
        assert source is not None
        retstart = int(request.arg("retstart") or 0)
        # EFetch serves at most 10,000 records per request, as NCBI does.
        retmax = min(int(request.arg("retmax") or 20), 10_000)
        stop = min(stored.count, retstart + retmax)
        articles = source.articles(stored.mindate, stored.maxdate, retstart, stop)
        return Response(200, b"".join([_SET_HEAD, *articles, _SET_TAIL]), content_type=XML)

    def fetched_ranges(self) -> list[tuple[str, int, int]]:
        """(WebEnv, retstart, retmax) of every EFetch request, in order."""
        return [
            (r.arg("WebEnv") or "", int(r.arg("retstart") or 0), int(r.arg("retmax") or 0))
            for r in self.efetch_requests
        ]


def _esearch_error(message: str) -> Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8" ?>\n'
        f"<eSearchResult><ERROR>{escape(message)}</ERROR></eSearchResult>\n"
    )
    return Response(200, body.encode(), content_type=XML)
