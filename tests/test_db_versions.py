"""crawler.db.versions: a preprint and its journal version, one work, learned once."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import Engine, func, select

from crawler.db.engine import transaction
from crawler.db.models import PaperEventRow, PaperRow, PaperVersionRow
from crawler.db.store import upsert
from crawler.db.versions import Learned, links_of, record, unlinked_preprints
from crawler.events import VersionLink
from crawler.items import Paper

NOW = datetime(2026, 6, 1, tzinfo=UTC)
PREPRINT = "10.1101/2025.01.02.25300001"
ARTICLE = "10.1016/j.pain.2026.01.001"


def _preprint(version: int = 1, **extra: object) -> Paper:
    return Paper(
        source_id="medrxiv-rheumatology", origin="feed", sighting_kind="preprint",
        url=f"https://www.medrxiv.org/content/{PREPRINT}v{version}", doi=PREPRINT,
        title="Passive transfer of fibromyalgia pain by IgG", journal="medRxiv",
        published=date(2025, 1, 2), authors=["Goebel A", "Krock E"],
        publication_types=["Preprint"], topics=["fibromyalgia"], **extra,  # type: ignore[arg-type]
    )  # fmt: skip


def _article() -> Paper:
    return Paper(
        source_id="pubmed-fibromyalgia", origin="pubmed", pmid="40000010", doi=ARTICLE,
        title="Passive transfer of fibromyalgia pain by IgG", journal="Pain",
        published=date(2026, 1, 20), authors=["Goebel A", "Krock E"], topics=["fibromyalgia"],
    )  # fmt: skip


def _link(source: str = "crossref", **extra: object) -> VersionLink:
    return VersionLink(preprint_doi=PREPRINT.upper(), published_doi=ARTICLE, source=source,
                       **extra)  # type: ignore[arg-type]  # fmt: skip


def _published_events(engine: Engine) -> list[PaperEventRow]:
    with transaction(engine) as session:
        rows = session.scalars(select(PaperEventRow).where(PaperEventRow.type == "published"))
        return list(rows)


def test_versions_of_one_preprint_are_one_paper(engine: Engine) -> None:
    upsert(engine, [_preprint(1)])
    upsert(engine, [_preprint(2)])
    with transaction(engine) as session:
        assert session.scalar(select(func.count()).select_from(PaperRow)) == 1


def test_a_link_learned_three_times_is_one_row_and_one_published_event(engine: Engine) -> None:
    upsert(engine, [_preprint()])
    with transaction(engine) as session:
        assert record(session, [_link()], NOW).links == 1
    with transaction(engine) as session:
        assert record(session, [_link("biorxiv", published_journal="Pain")], NOW).links == 0
    upsert(engine, [_preprint(2, versions=[_link("biorxiv")])])
    with transaction(engine) as session:
        rows = list(session.scalars(select(PaperVersionRow)))
    assert len(rows) == 1
    assert rows[0].preprint_doi == PREPRINT.lower() and rows[0].source == "crossref"
    assert rows[0].published_journal == "Pain"  # filled in by the second source
    [event] = _published_events(engine)
    assert event.notice_doi == ARTICLE.lower()
    assert event.notice_url == f"https://doi.org/{ARTICLE.lower()}"


def test_a_link_about_a_preprint_not_held_waits_for_it(engine: Engine) -> None:
    with transaction(engine) as session:
        record(session, [_link("biorxiv")], NOW)
    assert _published_events(engine) == []
    upsert(engine, [_preprint()])  # the preprint arrives after its link
    assert len(_published_events(engine)) == 1


def test_links_join_the_held_papers_either_way(engine: Engine) -> None:
    upsert(engine, [_preprint(), _article()])
    with transaction(engine) as session:
        ids = {p.doi_key: p.id for p in session.scalars(select(PaperRow))}
        assert unlinked_preprints(session, None) == [PREPRINT.lower()]
        record(session, [_link()], NOW)
    with transaction(engine) as session:
        found = links_of(session, ids.values())
        assert unlinked_preprints(session, None) == []
    preprint, article = ids[PREPRINT.lower()], ids[ARTICLE.lower()]
    [link] = found[preprint]
    assert found[article] == [link]
    assert (link.preprint_id, link.published_id) == (preprint, article)
    assert link.other(preprint) == article and link.other(article) == preprint
    assert link.server == "medRxiv" and link.preprint_posted == date(2025, 1, 2)
    assert link.published_journal == "Pain"


def test_a_link_by_pmid_only_finds_the_journal_version(engine: Engine) -> None:
    upsert(engine, [_preprint(), _article()])
    link = VersionLink(preprint_doi=PREPRINT, published_pmid="40000010", source="europepmc")
    with transaction(engine) as session:
        record(session, [link], NOW)
        ids = {p.doi_key: p.id for p in session.scalars(select(PaperRow))}
        found = links_of(session, [ids[ARTICLE.lower()]])
    [work] = found[ids[ARTICLE.lower()]]
    assert work.preprint_id == ids[PREPRINT.lower()]
    assert work.published_doi == ARTICLE.lower()


def test_only_held_links_are_kept_from_a_whole_server_listing(engine: Engine) -> None:
    upsert(engine, [_preprint()])
    stranger = VersionLink(preprint_doi="10.1101/2025.09.09.1", published_doi="10.1/x", source="b")
    with transaction(engine) as session:
        learned = record(session, [stranger, _link("biorxiv")], NOW, only_held=True)
        assert (learned.links, learned.events) == (1, 1)
        kept = list(session.scalars(select(PaperVersionRow.preprint_doi)))
    assert kept == [PREPRINT.lower()]


def test_the_export_names_every_version_of_the_work(engine: Engine) -> None:
    from crawler.db.queries import iter_records, papers_query

    upsert(engine, [_preprint(), _article(), Paper(source_id="s", origin="pubmed", pmid="1",
                                                   title="Unrelated")])  # fmt: skip
    with transaction(engine) as session:
        record(session, [_link(published_journal="Pain")], NOW)
    with transaction(engine) as session:
        exported = {r["title"]: r["versions"] for r in iter_records(session, papers_query())}
    expected = {
        "preprints": [{"doi": PREPRINT.lower(), "server": "medRxiv", "posted": "2025-01-02"}],
        "published_doi": ARTICLE.lower(), "published_pmid": "40000010", "published_journal": "Pain",
    }  # fmt: skip
    assert exported == {"Passive transfer of fibromyalgia pain by IgG": expected,
                        "Unrelated": None}  # fmt: skip


def test_a_link_without_the_preprint_doi_needs_an_exact_title_and_first_author(
    engine: Engine,
) -> None:
    upsert(engine, [_preprint(), _article()])
    said = {"published_doi": ARTICLE, "published_pmid": "40000010", "source": "europepmc"}
    other_author = VersionLink(preprint_doi=None, match_title=_article().title,
                               match_author="Smith J", **said)  # type: ignore[arg-type]  # fmt: skip
    other_title = VersionLink(preprint_doi=None, match_title="Passive transfer of pain",
                              match_author="Goebel A", **said)  # type: ignore[arg-type]  # fmt: skip
    with transaction(engine) as session:
        assert record(session, [other_author, other_title], NOW).links == 0
    exact = VersionLink(preprint_doi=None, match_title=_article().title,
                        match_author="Goebel, A.", **said)  # type: ignore[arg-type]  # fmt: skip
    with transaction(engine) as session:
        assert record(session, [exact], NOW) == Learned(links=1, events=1)
        row = session.scalar(select(PaperVersionRow))
    assert row is not None and (row.preprint_doi, row.source) == (PREPRINT.lower(), "title-match")


def test_a_real_crossref_preprint_answer_links_the_held_preprint(engine: Engine) -> None:
    from spiders.crossref_parse import parse_work
    from tests.support.corpus import corpus_path

    body = corpus_path("lifecycle/crossref_posted-content_researchsquare_is-preprint-of.json")
    work = parse_work(body.read_bytes())
    upsert(engine, [Paper(source_id="epmc", origin="feed", sighting_kind="preprint",
                          doi=work.doi, title=work.title, topics=["fibromyalgia"])])  # fmt: skip
    links = [VersionLink(preprint_doi=x.preprint_doi, published_doi=x.published_doi,
                         source="crossref") for x in work.preprint_links]  # fmt: skip
    with transaction(engine) as session:
        assert record(session, links, NOW) == Learned(links=1, events=1)
    [event] = _published_events(engine)
    assert event.notice_doi == "10.1186/s13063-019-3980-5"
