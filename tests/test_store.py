"""Tests for crawler.store: paper identity, field authority, sightings, concurrent writers.

Every test runs on SQLite and on PostgreSQL (the ``engine`` fixture).
"""

from __future__ import annotations

import multiprocessing
import random
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from crawler.db.engine import DatabaseError, make_engine
from crawler.db.models import PaperRow, PaperTopic, Sighting
from crawler.db.store import upsert
from crawler.items import Paper

JCI_TITLE = "Passive transfer of fibromyalgia symptoms from patients to mice"
JCI_ABSTRACT = (
    "Fibromyalgia syndrome (FMS) is characterized by widespread pain. Here we show that IgG "
    "from FMS patients produced sensory hypersensitivity in mice."
)


def pubmed(**kw: Any) -> Paper:
    """A PubMed record of the JCI paper; keywords replace fields."""
    base: dict[str, Any] = {
        "source_id": "pubmed-fibromyalgia",
        "origin": "pubmed",
        "url": "https://pubmed.ncbi.nlm.nih.gov/34196305/",
        "doi": "10.1172/jci144201",
        "pmid": "34196305",
        "title": JCI_TITLE,
        "abstract": JCI_ABSTRACT,
        "journal": "The Journal of clinical investigation",
        "published": date(2021, 7, 1),
        "authors": ["Goebel A", "Krock E", "Gentry C"],
        "publication_types": ["Journal Article"],
        "mesh": ["Fibromyalgia"],
        "topics": ["fibromyalgia"],
    }
    base.update(kw)
    return Paper(**base)


def news(**kw: Any) -> Paper:
    """A ScienceDaily story pointing at the JCI paper."""
    base: dict[str, Any] = {
        "source_id": "sciencedaily-fibromyalgia",
        "origin": "news",
        "url": "https://www.sciencedaily.com/releases/2021/07/210701120000.htm",
        "sighting_kind": "news",
        "seen_title": "Fibromyalgia likely the result of autoimmune problems",
        "doi": "10.1172/JCI144201",
        "title": JCI_TITLE,
        "journal": "Journal of Clinical Investigation",
        "published": date(2021, 7, 1),
        "topics": ["fibromyalgia", "autoimmunity"],
    }
    base.update(kw)
    return Paper(**base)


def feed(**kw: Any) -> Paper:
    """A journal feed item with a teaser instead of the abstract."""
    base: dict[str, Any] = {
        "source_id": "journal-jci",
        "origin": "feed",
        "url": "https://www.jci.org/articles/view/144201",
        "doi": "https://doi.org/10.1172/JCI144201",
        "title": JCI_TITLE,
        "abstract": "Antibodies from patients cause pain in mice.",
        "journal": "J Clin Invest",
        "published": date(2021, 7, 1),
        "authors": ["Andreas Goebel"],
    }
    base.update(kw)
    return Paper(**base)


def papers(engine: Engine) -> list[PaperRow]:
    with Session(engine, expire_on_commit=False) as session:
        return list(session.scalars(select(PaperRow).order_by(PaperRow.id)))


def count(engine: Engine, model: Any) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(model)).scalar_one()


def sightings(engine: Engine) -> list[tuple[int, str, str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(Sighting.paper_id, Sighting.source_id, Sighting.kind, Sighting.url).order_by(
                Sighting.id
            )
        )
        return [(r[0], r[1], r[2], r[3]) for r in rows]


def topics(engine: Engine, paper_id: int) -> set[str]:
    with engine.connect() as conn:
        rows = conn.execute(select(PaperTopic.topic).where(PaperTopic.paper_id == paper_id))
        return {r[0] for r in rows}


# --- the JCI scenario ---------------------------------------------------------------------------


def test_jci_news_then_pubmed_is_one_paper(engine: Engine) -> None:
    first = upsert(engine, [news()])
    second = upsert(engine, [pubmed()])
    assert len(first.new_paper_ids) == 1 and first.merged == 0
    assert second.new_paper_ids == [] and second.merged == 1
    (row,) = papers(engine)
    assert row.doi_key == "10.1172/jci144201"
    assert row.pmid == "34196305"
    assert row.abstract == JCI_ABSTRACT
    kinds = {(s[1], s[2]) for s in sightings(engine)}
    assert kinds == {("sciencedaily-fibromyalgia", "news"), ("pubmed-fibromyalgia", "article")}
    assert all(s[0] == row.id for s in sightings(engine))
    assert topics(engine, row.id) == {"fibromyalgia", "autoimmunity"}


def test_doi_less_news_then_pubmed_merges_by_title_and_year(engine: Engine) -> None:
    upsert(engine, [news(doi=None)])
    result = upsert(engine, [pubmed()])
    assert result.merged == 1 and result.new_paper_ids == []
    (row,) = papers(engine)
    assert (row.doi_key, row.pmid) == ("10.1172/jci144201", "34196305")
    assert len(sightings(engine)) == 2


def test_pmid_only_then_doi_and_pmid(engine: Engine) -> None:
    upsert(engine, [pubmed(doi=None, title="Ahead of print record", abstract=None)])
    result = upsert(engine, [pubmed(url="https://pubmed.ncbi.nlm.nih.gov/34196305/?v=2")])
    assert result.merged == 1
    (row,) = papers(engine)
    assert row.doi == "10.1172/jci144201"
    assert row.title == JCI_TITLE  # same authority, later record wins
    assert row.abstract == JCI_ABSTRACT


@pytest.mark.parametrize(
    "spelling",
    [
        "10.1172/JCI144201",
        "doi:10.1172/jci144201",
        "https://doi.org/10.1172/JCI144201",
        "10.1172%2FJCI144201",
        "DOI: 10.1172/JCI144201.",
    ],
)
def test_doi_case_and_prefix_variants(engine: Engine, spelling: str) -> None:
    upsert(engine, [pubmed()])
    result = upsert(engine, [feed(doi=spelling, title="A different feed title entirely")])
    assert result.merged == 1 and result.new_paper_ids == []
    assert count(engine, PaperRow) == 1


def test_record_matching_two_papers_collapses_them(engine: Engine) -> None:
    by_doi = upsert(engine, [news(pmid=None)]).new_paper_ids[0]
    by_pmid = upsert(
        engine, [pubmed(doi=None, title="Old PubMed title before the DOI was known")]
    ).new_paper_ids[0]
    assert by_doi != by_pmid and count(engine, PaperRow) == 2
    result = upsert(engine, [feed(doi="10.1172/JCI144201", pmid="34196305")])
    assert result.collapsed == 1
    (row,) = papers(engine)
    assert (row.doi_key, row.pmid) == ("10.1172/jci144201", "34196305")
    # Every sighting now points at the surviving paper.
    assert {s[0] for s in sightings(engine)} == {row.id}
    assert {s[1] for s in sightings(engine)} == {
        "sciencedaily-fibromyalgia",
        "pubmed-fibromyalgia",
        "journal-jci",
    }
    assert topics(engine, row.id) == {"fibromyalgia", "autoimmunity"}
    # PubMed's fields survived the collapse even though the news row was kept.
    assert row.abstract == JCI_ABSTRACT


def test_title_match_contradicted_by_year_does_not_merge(engine: Engine) -> None:
    upsert(engine, [news(doi=None)])
    result = upsert(engine, [pubmed(published=date(2019, 1, 5))])
    assert len(result.new_paper_ids) == 1
    assert count(engine, PaperRow) == 2


def test_title_match_contradicted_by_doi_does_not_merge(engine: Engine) -> None:
    upsert(engine, [pubmed()])
    result = upsert(engine, [feed(doi="10.1172/JCI999999")])  # a same-titled erratum
    assert len(result.new_paper_ids) == 1
    assert {r.doi_key for r in papers(engine)} == {"10.1172/jci144201", "10.1172/jci999999"}


# --- field authority ----------------------------------------------------------------------------


def test_feed_teaser_after_pubmed_does_not_overwrite(engine: Engine) -> None:
    upsert(engine, [pubmed()])
    upsert(engine, [feed()])
    (row,) = papers(engine)
    assert row.abstract == JCI_ABSTRACT
    assert row.authors == ["Goebel A", "Krock E", "Gentry C"]
    assert row.journal == "The Journal of clinical investigation"


def test_pubmed_after_feed_wins(engine: Engine) -> None:
    upsert(engine, [feed()])
    upsert(engine, [pubmed()])
    (row,) = papers(engine)
    assert row.abstract == JCI_ABSTRACT
    assert row.authors == ["Goebel A", "Krock E", "Gentry C"]
    assert row.mesh == ["Fibromyalgia"]
    assert row.rank == 3


def test_weaker_record_fills_empty_fields(engine: Engine) -> None:
    upsert(engine, [pubmed(abstract=None, journal=None)])
    upsert(engine, [news(journal="Journal of Clinical Investigation")])
    (row,) = papers(engine)
    assert row.journal == "Journal of Clinical Investigation"
    assert row.abstract is None  # the news item has none either


def test_nothing_known_is_blanked(engine: Engine) -> None:
    upsert(engine, [feed()])
    upsert(
        engine,
        [
            pubmed(
                title=None,
                abstract="",
                journal=None,
                published=None,
                authors=[],
                publication_types=[],
                mesh=[],
            )
        ],
    )
    (row,) = papers(engine)
    assert row.title == JCI_TITLE
    assert row.abstract == "Antibodies from patients cause pain in mice."
    assert row.journal == "J Clin Invest"
    assert row.published == date(2021, 7, 1)
    assert row.authors == ["Andreas Goebel"]
    assert row.pmid == "34196305"  # the identifier it brought is added


# --- batches, sightings, topics, counts ---------------------------------------------------------


def test_duplicates_within_one_batch(engine: Engine) -> None:
    batch = [
        news(),
        pubmed(),
        feed(doi="doi:10.1172/JCI144201"),
        pubmed(),  # exact repeat: same paper, source and url
        news(doi=None, url="https://www.sciencedaily.com/releases/2021/07/other.htm"),
    ]
    result = upsert(engine, batch)
    assert len(result.new_paper_ids) == 1
    assert result.merged == 4
    assert len(set(result.paper_ids)) == 1 and len(result.paper_ids) == 5
    assert count(engine, PaperRow) == 1
    assert count(engine, Sighting) == 4
    assert result.new_sightings == 4


def test_sightings_recorded_once_per_place(engine: Engine) -> None:
    upsert(engine, [pubmed()])
    again = upsert(engine, [pubmed()])
    assert again.new_sightings == 0
    other_url = upsert(engine, [pubmed(url="https://pubmed.ncbi.nlm.nih.gov/34196305")])
    assert other_url.new_sightings == 1
    other_source = upsert(engine, [pubmed(source_id="pubmed-autoimmunity")])
    assert other_source.new_sightings == 1
    assert count(engine, Sighting) == 3


def test_topics_union(engine: Engine) -> None:
    pid = upsert(engine, [pubmed(topics=["fibromyalgia"])]).new_paper_ids[0]
    upsert(engine, [news(topics=["autoimmunity"])])
    upsert(engine, [feed(topics=[])])
    assert topics(engine, pid) == {"fibromyalgia", "autoimmunity"}


def test_counts_new_and_merged(engine: Engine) -> None:
    other = pubmed(
        doi="10.1186/s13075-021-02501-x",
        pmid="33906673",
        title="Fibromyalgia: an autoimmune disease? A narrative review",
    )
    result = upsert(engine, [pubmed(), other])
    assert (len(result.new_paper_ids), result.merged) == (2, 0)
    assert result.paper_ids == result.new_paper_ids
    result = upsert(engine, [news(), feed(doi="10.1186/S13075-021-02501-X", title=None)])
    assert (len(result.new_paper_ids), result.merged) == (0, 2)
    assert upsert(engine, []).paper_ids == []


def test_distinct_papers_without_identifiers_stay_apart(engine: Engine) -> None:
    a = news(doi=None, title="Fibromyalgia pain is linked to small fibre damage in skin")
    b = news(doi=None, title="Lupus flares are predicted by interferon signature in blood")
    result = upsert(engine, [a, b])
    assert len(result.new_paper_ids) == 2
    c = news(doi=None, title="Editorial")  # too short to identify: never merged by title
    d = news(doi=None, title="Editorial", url="https://example.org/2")
    assert len(upsert(engine, [c, d]).new_paper_ids) == 2


# --- concurrency --------------------------------------------------------------------------------

N_PAPERS = 240


def _batch_for(worker: int) -> list[Paper]:
    """Overlapping batches: every paper is written by both workers, in different orders.

    Worker 0 knows paper i by DOI (upper case); worker 1 by PMID, and by DOI in another
    spelling for every second paper, so some of its records must merge by PMID then gain a DOI.
    """
    items = []
    for i in range(N_PAPERS):
        doi = f"10.5555/LW.{i:04d}"
        if worker == 0:
            items.append(
                feed(
                    source_id="feed-a",
                    url=f"https://a.example/{i}",
                    doi=doi,
                    pmid=None,
                    title=f"Concurrent paper number {i} about autoimmune pain",
                    topics=["autoimmunity"],
                )
            )
        else:
            items.append(
                pubmed(
                    source_id="pubmed-b",
                    url=f"https://pubmed.example/{i}",
                    doi=f"https://doi.org/{doi.lower()}" if i % 2 else None,
                    pmid=str(1_000_000 + i),
                    title=f"Concurrent paper number {i} about autoimmune pain",
                    topics=["fibromyalgia"],
                )
            )
    random.Random(worker).shuffle(items)
    return items


def _writer(url: str, worker: int, rounds: int, barrier: Any, log: Any) -> None:
    """Runs in a spawned process: upsert the worker's papers in chunks, several rounds.

    The barrier lines both writers up after their (slow) start so that they write at the
    same time; ``log`` records when each began and finished writing.
    """
    engine = make_engine(url)
    items = _batch_for(worker)
    try:
        with engine.connect():
            pass  # connect before the barrier: the race is between writes, not start-ups
        barrier.wait(timeout=60)
        log.put((worker, "start"))
        for _ in range(rounds):
            for start in range(0, len(items), 30):
                upsert(engine, items[start : start + 30])
        log.put((worker, "end"))
    finally:
        engine.dispose()


def test_two_processes_write_at_once(engine: Engine) -> None:
    url = engine.url.render_as_string(hide_password=False)
    ctx = multiprocessing.get_context("spawn")
    barrier, log = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(url, w, 3, barrier, log)) for w in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0, 0], "a writer failed (see its traceback above)"
    events = [log.get(timeout=5) for _ in range(4)]
    # The writers really overlapped: both had started before either finished. (On SQLite
    # one may still commit most batches first: its busy handler is not a fair queue.)
    assert sorted(events[:2]) == [(0, "start"), (1, "start")], events
    rows = papers(engine)
    assert len(rows) == N_PAPERS
    for row in rows:
        # Paper i: the PMID and the DOI belong together, whichever writer came first.
        assert row.pmid is not None
        i = int(row.pmid) - 1_000_000
        assert row.doi_key == f"10.5555/lw.{i:04d}"
    assert count(engine, Sighting) == 2 * N_PAPERS
    assert count(engine, PaperTopic) == 2 * N_PAPERS


def test_two_threads_write_at_once(engine: Engine) -> None:
    import threading

    errors: list[BaseException] = []

    def run(worker: int) -> None:
        try:
            items = _batch_for(worker)[:120]
            for start in range(0, len(items), 30):
                upsert(engine, items[start : start + 30])
        except BaseException as exc:  # reported below: a thread cannot fail the test itself
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    with engine.connect() as conn:
        dupes = conn.execute(
            select(PaperRow.title_key, func.count())
            .group_by(PaperRow.title_key)
            .having(func.count() > 1)
        ).all()
    assert dupes == []
    assert count(engine, Sighting) == 240


def test_batch_record_links_two_new_records(engine: Engine) -> None:
    """DOI-only and PMID-only records in one batch become one paper when a third links them."""
    batch = [
        news(pmid=None),
        pubmed(doi=None, title="Record title as PubMed had it before"),
        feed(doi="10.1172/JCI144201", pmid="34196305"),
    ]
    result = upsert(engine, batch)
    assert len(result.new_paper_ids) == 1
    assert len(set(result.paper_ids)) == 1
    (row,) = papers(engine)
    assert (row.doi_key, row.pmid) == ("10.1172/jci144201", "34196305")
    assert count(engine, Sighting) == 3


def test_new_record_in_batch_takes_over_stored_paper(engine: Engine) -> None:
    stored = upsert(engine, [pubmed(doi=None, title="Stored under its PMID only")]).paper_ids[0]
    result = upsert(engine, [news(pmid=None), feed(doi="10.1172/JCI144201", pmid="34196305")])
    assert result.new_paper_ids == []
    assert set(result.paper_ids) == {stored}
    (row,) = papers(engine)
    assert row.id == stored and row.doi_key == "10.1172/jci144201"
    assert {s[0] for s in sightings(engine)} == {stored}


def test_identifier_held_by_another_paper_is_not_stolen(engine: Engine) -> None:
    upsert(engine, [pubmed()])
    other = pubmed(
        doi="10.1186/s13075-021-02501-x",
        pmid=None,
        title="Fibromyalgia: an autoimmune disease? A narrative review",
    )
    upsert(engine, [other])
    # A confused record: the second paper's DOI with the first paper's PMID.
    result = upsert(engine, [feed(doi="10.1186/s13075-021-02501-x", pmid="34196305", title=None)])
    assert result.new_paper_ids == []
    rows = {r.doi_key: r for r in papers(engine)}
    assert rows["10.1172/jci144201"].pmid == "34196305"
    assert rows["10.1186/s13075-021-02501-x"].pmid is None


def test_yearless_title_match_does_not_fold_papers_of_different_years(engine: Engine) -> None:
    """Two stored same-titled papers of 2020 and 2021; a record without a year matches both."""
    title = "Annual update on autoimmune disease research and treatment"
    upsert(engine, [news(doi=None, title=title, published=date(2020, 3, 1), url="u:2020")])
    upsert(engine, [news(doi=None, title=title, published=date(2021, 3, 1), url="u:2021")])
    result = upsert(engine, [feed(doi="10.1234/annual", title=title, published=None)])
    assert result.collapsed == 0 and result.merged == 1
    assert sorted(r.year or 0 for r in papers(engine)) == [2020, 2021]
    assert count(engine, PaperRow) == 2


# --- engine settings the store relies on ---------------------------------------------------------


def test_sqlite_engine_uses_wal_and_busy_timeout(sqlite_url: str) -> None:
    eng = make_engine(sqlite_url)
    try:
        with eng.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        eng.dispose()


def test_engine_url_spellings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    eng = make_engine("sqlite:///~/data/litwatch.db")
    try:
        assert eng.url.database == str(tmp_path / "data" / "litwatch.db")
        assert (tmp_path / "data").is_dir()
    finally:
        eng.dispose()
    for url in ("postgres://u:pw@db.example/lw", "postgresql://u:pw@db.example/lw"):
        assert make_engine(url).url.drivername == "postgresql+psycopg"
    with pytest.raises(DatabaseError, match="invalid database URL"):
        make_engine("not a url")


def test_nul_characters_from_the_network_are_dropped_on_both_databases(engine: Engine) -> None:
    """PostgreSQL refuses NUL in text; one stray byte in a feed must not fail the batch."""
    from sqlalchemy import select

    from crawler.db.models import PaperRow

    item = Paper(
        source_id="feed-x",
        origin="feed",
        url="https://example.org/a",
        doi="10.5555/nul.1",
        title="Autoantibodies\x00 in fibromyalgia: a cohort study of pain",
        abstract="Serum IgG\x00 <5 pg/mL",
        authors=["Ann\x00 Smith"],
        keywords=["pain\x00"],
    )
    result = upsert(engine, [item])
    assert len(result.new_paper_ids) == 1
    with engine.connect() as conn:
        row = conn.execute(select(PaperRow.title, PaperRow.abstract, PaperRow.authors)).one()
    assert row.title == "Autoantibodies in fibromyalgia: a cohort study of pain"
    assert row.abstract == "Serum IgG <5 pg/mL"
    assert row.authors == ["Ann Smith"]


def test_over_long_values_cost_only_their_item_on_both_databases(engine: Engine) -> None:
    """A DOI over 300, a journal over 500 or a URL over 2,000 characters (issue 12 A3).

    PostgreSQL refused the whole batch (SQLite stored it): every value is bounded to its
    column first, so the good items of the batch are stored, and so is what the bad ones
    still say. A DOI that long is not a DOI (dropped); an over-long journal is cut to fit; a
    URL cut short would lead elsewhere, so it is dropped.
    """
    long_doi = "10.5555/" + "x" * 400
    bad = [
        Paper(source_id="feed-x", origin="feed", url="https://example.org/d", doi=long_doi,
              title="A paper whose DOI is far too long to be a DOI at all"),
        Paper(source_id="feed-x", origin="feed", url="https://example.org/j",
              doi="10.5555/long.journal", journal="J" * 800,
              title="A paper whose journal name is far too long for its column"),
        Paper(source_id="feed-x", origin="feed", url="https://example.org/" + "u" * 3000,
              doi="10.5555/long.url", title="A paper seen at a link far too long to store"),
    ]  # fmt: skip
    good = [
        Paper(source_id="feed-x", origin="feed", url=f"https://example.org/g{i}",
              doi=f"10.5555/good.{i}", title=f"A perfectly ordinary paper number {i} here")
        for i in range(3)
    ]  # fmt: skip
    result = upsert(engine, [good[0], *bad, *good[1:]])
    assert len(result.paper_ids) == 6
    with Session(engine) as s:
        rows = {r.title: r for r in s.scalars(select(PaperRow))}
        urls = {u for (u,) in s.execute(select(Sighting.url))}
    assert len(rows) == 6
    for i in range(3):
        assert rows[f"A perfectly ordinary paper number {i} here"].doi == f"10.5555/good.{i}"
    assert rows["A paper whose DOI is far too long to be a DOI at all"].doi is None
    journal = rows["A paper whose journal name is far too long for its column"].journal
    assert journal is not None and 0 < len(journal) <= 500 and journal.startswith("JJJ")
    assert rows["A paper seen at a link far too long to store"].doi == "10.5555/long.url"
    assert all(len(u) <= 2000 for u in urls)
    assert "https://example.org/g1" in urls


def test_every_bounded_paper_column_is_bounded_before_sql() -> None:
    """Whatever an item holds, each value ``prepare`` gives fits its ``String(n)`` column."""
    from sqlalchemy import String

    from crawler.db.identity import prepare

    huge = "9" * 5000
    item = Paper(source_id="feed-x", origin="feed", url="https://example.org/" + huge,
                 doi="10.1234/" + huge, pmid=huge, pmcid="PMC" + huge, title="Title " * 2000,
                 journal="Journal " * 2000)  # fmt: skip
    record = prepare(item)
    for column in PaperRow.__table__.columns:
        if isinstance(column.type, String) and column.type.length and record.get(column.name):
            assert len(record[column.name]) <= column.type.length, column.name


def test_clean_doi_refuses_a_doi_longer_than_its_column() -> None:
    from crawler.normalise import MAX_DOI, clean_doi, find_dois

    fits = "10.5555/" + "a" * (MAX_DOI - 8)
    assert clean_doi(fits) == fits
    assert clean_doi(fits + "b") is None
    assert clean_doi("https://doi.org/" + fits + "b") is None
    assert find_dois("see doi " + fits + "b here") == []


def test_a_value_the_database_still_refuses_costs_only_its_item(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defence in depth behind the bounds: were one missed, the database's refusal (PostgreSQL's
    DataError) costs the refusing item only; the rest of the batch is stored."""
    from crawler.db import store

    monkeypatch.setattr(store, "_URL_WIDTH", 10**6)  # a bound "forgotten": the URL goes through
    items = [
        Paper(source_id="feed-x", origin="feed", url=f"https://example.org/{path}",
              doi=f"10.5555/refuse.{i}", title=f"A paper in a batch with one refused item {i}")
        for i, path in enumerate(["a", "u" * 3000, "b"])
    ]  # fmt: skip
    result = upsert(engine, items)
    with Session(engine) as s:
        stored = set(s.scalars(select(PaperRow.doi)))
    if engine.dialect.name == "sqlite":  # SQLite ignores declared widths: nothing is refused
        assert result.rejected == [] and len(stored) == 3
        return
    assert [position for position, _ in result.rejected] == [1]
    assert "too long" in result.rejected[0][1]
    assert stored == {"10.5555/refuse.0", "10.5555/refuse.2"}
    assert len(result.paper_ids) == len(result.new_paper_ids) == 2
