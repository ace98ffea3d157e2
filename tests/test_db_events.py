"""crawler.db.events: events matched to stored papers, stored once however often learned."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import Engine, func, select

from crawler.db.engine import transaction
from crawler.db.events import events_of, learn, record, resolve, statuses, withdraw_notices
from crawler.db.models import PaperEventRow
from crawler.db.store import upsert
from crawler.events import PaperEvent
from crawler.items import Paper

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def _papers(engine: Engine) -> dict[str, int]:
    upsert(
        engine,
        [
            Paper(source_id="s", origin="pubmed", doi="10.1172/JCI144201", pmid="34196305",
                  title="Passive transfer of fibromyalgia symptoms from patients to mice"),
            Paper(source_id="s", origin="pubmed", pmid="30000002", title="A second paper"),
        ],
    )  # fmt: skip
    with transaction(engine) as session:
        from crawler.db.models import PaperRow

        return {p.pmid: p.id for p in session.scalars(select(PaperRow))}


def test_events_about_unknown_papers_are_dropped(engine: Engine) -> None:
    ids = _papers(engine)
    events = [
        PaperEvent(type="retracted", source="crossref", target_doi="10.1172/jci144201"),
        PaperEvent(type="corrected", source="pubmed", target_pmid="30000002"),
        PaperEvent(type="retracted", source="pubmed", target_pmid="99999999"),
    ]
    with transaction(engine) as session:
        found = resolve(session, events)
    assert [(pid, e.type) for pid, e in found] == [
        (ids["34196305"], "retracted"),
        (ids["30000002"], "corrected"),
    ]


def test_a_retraction_learned_twice_is_stored_once_and_filled_in(engine: Engine) -> None:
    ids = _papers(engine)
    pid = ids["34196305"]
    from_pubmed = PaperEvent(
        type="retracted", source="pubmed", target_pmid="34196305", notice_pmid="40000001"
    )
    notice_side = PaperEvent(
        type="retraction_of", source="pubmed", target_pmid="34196305", notice_pmid="40000001",
        notice_title="Retraction: Passive transfer", date=date(2026, 5, 2),
    )  # fmt: skip
    from_crossref = PaperEvent(
        type="retracted", source="crossref", target_doi="10.1172/jci144201",
        notice_doi="10.1172/jci144201.retraction",
    )  # fmt: skip
    with transaction(engine) as session:
        assert record(session, resolve(session, [from_pubmed]), NOW) == 1
    with transaction(engine) as session:
        assert record(session, resolve(session, [notice_side, from_crossref]), NOW) == 0
    with transaction(engine) as session:
        rows = list(session.scalars(select(PaperEventRow)))
        assert len(rows) == 1
        row = rows[0]
        assert (row.paper_id, row.type, row.source) == (pid, "retracted", "pubmed")
        assert row.notice_pmid == "40000001"
        assert row.notice_doi == "10.1172/jci144201.retraction"
        assert row.notice_title == "Retraction: Passive transfer"
        assert row.date == date(2026, 5, 2)
        assert statuses(session, [pid, ids["30000002"]]) == {
            pid: "retracted",
            ids["30000002"]: "current",
        }


def test_errata_with_different_notices_are_separate_events(engine: Engine) -> None:
    ids = _papers(engine)
    errata = [
        PaperEvent(type="corrected", source="pubmed", target_pmid="30000002",
                   notice_title="J Pain. 2026;1:5"),
        PaperEvent(type="corrected", source="pubmed", target_pmid="30000002",
                   notice_title="J Pain. 2026;3:9"),
        PaperEvent(type="corrected", source="pubmed", target_pmid="30000002",
                   notice_title="J Pain. 2026;1:5"),
    ]  # fmt: skip
    with transaction(engine) as session:
        assert record(session, resolve(session, errata), NOW) == 2
    with transaction(engine) as session:
        assert session.scalar(select(func.count()).select_from(PaperEventRow)) == 2
        assert [r.notice_title for r in events_of(session, [ids["30000002"]])[ids["30000002"]]] == [
            "J Pain. 2026;1:5",
            "J Pain. 2026;3:9",
        ]
        assert statuses(session, [ids["30000002"]]) == {ids["30000002"]: "corrected"}


def test_an_erratum_never_makes_a_paper_retracted(engine: Engine) -> None:
    ids = _papers(engine)
    with transaction(engine) as session:
        record(
            session,
            resolve(session, [
                PaperEvent(type="correction_of", source="pubmed", target_pmid="34196305",
                           notice_pmid="40000009"),
                PaperEvent(type="concern", source="crossref", target_doi="10.1172/jci144201"),
            ]),
            NOW,
        )  # fmt: skip
    with transaction(engine) as session:
        assert statuses(session, [ids["34196305"]]) == {ids["34196305"]: "concern"}


def test_a_withdrawn_newer_version_does_not_undo_the_update_naming_it(engine: Engine) -> None:
    ids = _papers(engine)
    pid = ids["34196305"]
    update = PaperEvent(type="updated", source="crossref", target_doi="10.1172/jci144201",
                        notice_doi="10.1172/jci144201.v2")  # fmt: skip
    correction = PaperEvent(type="corrected", source="crossref", target_doi="10.1172/jci144201",
                            notice_doi="10.1172/jci144201.erratum")  # fmt: skip
    with transaction(engine) as session:
        assert learn(session, [update, correction], NOW) == 2
    gone = [PaperEvent(type="withdrawn", source="crossref", target_doi=doi)
            for doi in ("10.1172/jci144201.v2", "10.1172/jci144201.erratum")]  # fmt: skip
    with transaction(engine) as session:
        assert withdraw_notices(session, gone, NOW) == 1  # the erratum notice, not the version
        rows = {r.type: r.withdrawn_at for r in session.scalars(select(PaperEventRow))}
    assert rows["updated"] is None and rows["corrected"] is not None
    with transaction(engine) as session:
        assert statuses(session, [pid]) == {pid: "updated"}
