"""A paper's life: the event vocabulary, PubMed's links, and the real lifecycle corpus.

Real files are read by path from the shared corpus (skipped when absent); the hand-written
fixtures in tests/fixtures/lifecycle/ cover what the corpus lacks. Crossref's parser has its own
test module; the real Crossref lifecycle files are checked here, next to PubMed's.
"""

from __future__ import annotations

import dataclasses
from datetime import date
from itertools import combinations
from pathlib import Path

import lxml.etree
import pytest

from crawler import events as ev
from crawler.events import PaperEvent, gravest_kind, label_of, paper_type, status_of
from crawler.xmlsafe import UnsafeXMLError, parse_bytes
from spiders.crossref_parse import CrossrefWork, parse_work, preprint_event
from spiders.pubmed_events import events_by_pmid, events_from_article, notice_kind
from spiders.pubmed_xml import EFetchError
from tests.support.corpus import corpus_path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "lifecycle"
RETRACTED_PAPER = "lifecycle/pubmed_retracted_publication_10066780_RetractionIn_ErratumIn.xml"
RETRACTION_NOTICE = "lifecycle/pubmed_retraction_notice_27508352_publisher_status_RetractionOf.xml"


def pmids(event: PaperEvent) -> tuple[str, str | None, str | None]:
    return event.type, event.target_pmid, event.notice_pmid


def crossref(name: str) -> CrossrefWork:
    return parse_work(corpus_path(f"lifecycle/{name}").read_bytes())


def about(found: dict[str, list[PaperEvent]], pmid: str) -> list[PaperEvent]:
    """Every event, from any record, whose target is ``pmid``."""
    return [e for events in found.values() for e in events if e.target_pmid == pmid]


# --------------------------------------------------------------------------- vocabulary


def test_event_types_are_paper_side_plus_notice_side() -> None:
    assert set(ev.PAPER_TYPES) == {
        "retracted", "withdrawn", "concern", "corrected", "updated", "published",
    }  # fmt: skip
    assert set(ev.NOTICE_TYPES) == {"retraction_of", "correction_of", "concern_of", "update_of"}
    assert frozenset(ev.PAPER_TYPES + ev.NOTICE_TYPES) == ev.EVENT_TYPES
    assert ev.NOTICE_TO_PAPER == {
        "retraction_of": "retracted",
        "correction_of": "corrected",
        "concern_of": "concern",
        "update_of": "updated",
    }


@pytest.mark.parametrize(("graver", "lighter"), list(combinations(ev.GRAVITY[:-1], 2)))
def test_the_gravest_event_wins_whatever_the_order(graver: str, lighter: str) -> None:
    assert status_of([lighter, graver]) == graver
    assert status_of([graver, lighter, lighter]) == graver


def test_status_counts_notice_side_types_as_the_change_they_announce() -> None:
    assert status_of(["update_of", "correction_of"]) == "corrected"
    assert status_of(["corrected", "retraction_of"]) == "retracted"
    assert status_of(["concern_of"]) == "concern"


def test_status_without_events_or_with_only_a_journal_version_is_current() -> None:
    assert status_of([]) == "current"
    assert status_of(["published"]) == "current"
    assert status_of(["published", "updated"]) == "updated"


def test_status_rejects_words_outside_the_vocabulary() -> None:
    with pytest.raises(ValueError, match="retraction"):
        status_of(["retraction"])  # Crossref's word, not ours
    with pytest.raises(ValueError):
        paper_type("current")


def test_labels() -> None:
    assert [label_of(t) for t in ev.PAPER_TYPES] == [
        "Retracted", "Withdrawn", "Expression of concern", "Corrected", "Updated", "Now published",
    ]  # fmt: skip
    assert label_of("concern_of") == "Expression of concern"
    assert label_of(status_of(["retraction_of"])) == "Retracted"
    assert label_of("current") == ""


def test_gravest_notice_kind() -> None:
    assert gravest_kind(["correction", None, "retraction", "concern"]) == "retraction"
    assert gravest_kind(["correction", "concern"]) == "concern"
    assert gravest_kind([None, "not-a-kind"]) is None


def test_paper_event_checks_its_type_and_is_frozen() -> None:
    with pytest.raises(ValueError, match="unknown"):
        PaperEvent(type="retraction", source="crossref", target_doi="10.5555/x")
    event = PaperEvent(type="retraction_of", source="pubmed", target_pmid="1")
    assert event.paper_type == "retracted"
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.type = "retracted"  # type: ignore[misc]


def test_a_notice_side_event_needs_a_target() -> None:
    # Parsed from the notice, it would otherwise describe nobody (or, wrongly, the notice).
    with pytest.raises(ValueError, match="target"):
        PaperEvent(type="correction_of", source="pubmed", notice_pmid="2")
    assert PaperEvent(type="retracted", source="pubmed").target_pmid is None  # subject: the record


# --------------------------------------------------------------------------- PubMed, real files


def test_retracted_paper_10066780_has_its_retraction_and_its_erratum() -> None:
    found = events_by_pmid(corpus_path(RETRACTED_PAPER).read_bytes())
    assert list(found) == ["10066780"]
    erratum, retraction = found["10066780"]  # document order; nothing added for the pub type
    assert retraction == PaperEvent(
        type="retracted",
        source="pubmed",
        target_pmid="10066780",
        notice_pmid="11905463",
        notice_title="J Biol Chem. 2001 Mar 30;276(13):10576",
        notice_url="https://pubmed.ncbi.nlm.nih.gov/11905463/",
        date=date(2001, 3, 30),
    )
    # The ErratumIn names no PMID: still an event, labelled by its RefSource, never a retraction.
    assert erratum.type == "corrected"
    assert (erratum.notice_pmid, erratum.notice_doi, erratum.notice_url) == (None, None, None)
    assert erratum.notice_title == "J Biol Chem 1999 May 7;274(19):13728"
    assert erratum.date == date(1999, 5, 7)
    assert status_of(e.type for e in found["10066780"]) == "retracted"


def test_retraction_notice_27508352_retracts_26435620_and_is_not_retracted_itself() -> None:
    body = corpus_path(RETRACTION_NOTICE).read_bytes()
    found = events_by_pmid(body)
    [event] = found["27508352"]
    assert event.type == "retraction_of"
    assert (event.target_pmid, event.notice_pmid) == ("26435620", "27508352")
    assert event.notice_title == "Retraction Notice."
    assert event.date == date(2016, 5, 1)  # the notice's own issue date, not the RefSource's
    assert status_of(e.type for e in about(found, "26435620")) == "retracted"
    assert status_of(e.type for e in about(found, "27508352")) == "current"


def test_notice_kind_reads_the_capitalised_publication_type_with_an_empty_ui() -> None:
    notice = parse_bytes(corpus_path(RETRACTION_NOTICE).read_bytes())[0]  # in its set
    paper = parse_bytes(corpus_path(RETRACTED_PAPER).read_bytes())  # a bare fragment
    assert notice_kind(notice) == "retraction"
    assert notice_kind(paper) is None  # a retracted paper is not a notice


# --------------------------------------------------------------------------- PubMed, fixtures


def test_expression_of_concern_both_sides_agree_and_are_never_a_retraction() -> None:
    found = events_by_pmid((FIXTURES / "pubmed_expression_of_concern_both_sides.xml").read_bytes())
    [on_paper] = found["99990011"]  # the CommentIn link is not an event
    [on_notice] = found["99990012"]
    assert (on_paper.type, on_notice.type) == ("concern", "concern_of")
    for event in (on_paper, on_notice):
        assert event.paper_type == "concern"
        # The paper's own DOI, not the one in its ReferenceList; the notice's DOI from RefSource.
        assert (event.target_pmid, event.target_doi) == ("99990011", "10.5555/jir.2019.0311")
        assert (event.notice_pmid, event.notice_doi) == ("99990012", "10.5555/jir.2023.0120")
        assert event.date == date(2023, 6, 2)
    assert status_of(e.type for e in about(found, "99990011")) == "concern"


def test_cochrane_update_chain() -> None:
    found = events_by_pmid((FIXTURES / "pubmed_cochrane_update_chain.xml").read_bytes())
    updated, update_of = found["99990021"]
    assert pmids(updated) == ("updated", "99990021", "99990022")
    assert updated.notice_doi == "10.5555/14651858.cd999901.pub3"  # a DOI key: lower case
    assert updated.date == date(2022, 1, 28)
    assert pmids(update_of) == ("update_of", "99990020", "99990021")
    assert update_of.target_doi is None  # its RefSource carries no DOI
    [newest] = found["99990022"]
    assert (newest.type, newest.target_doi) == ("update_of", "10.5555/14651858.cd999901.pub2")
    assert status_of(e.type for e in about(found, "99990021")) == "updated"
    assert status_of(e.type for e in about(found, "99990022")) == "current"


def article(links: str = "", pub_types: str = "", doi: str = "") -> lxml.etree._Element:
    """A minimal PubmedArticle (PMID 99990099) with the given links and publication types."""
    ids = f'<ArticleId IdType="doi">{doi}</ArticleId>' if doi else ""
    xml = f"""<PubmedArticle><MedlineCitation Status="MEDLINE" Owner="NLM">
      <PMID Version="1">99990099</PMID>
      <Article PubModel="Print"><ArticleTitle>A paper.</ArticleTitle>
        <PublicationTypeList>{pub_types}</PublicationTypeList></Article>
      <CommentsCorrectionsList>{links}</CommentsCorrectionsList></MedlineCitation>
      <PubmedData><ArticleIdList>
        <ArticleId IdType="pubmed">99990099</ArticleId>{ids}</ArticleIdList>
      </PubmedData></PubmedArticle>"""
    return parse_bytes(xml.encode())


def link(ref_type: str, pmid: str = "", source: str = "") -> str:
    body = (f"<RefSource>{source}</RefSource>" if source else "") + (
        f'<PMID Version="1">{pmid}</PMID>' if pmid else ""
    )
    return f'<CommentsCorrections RefType="{ref_type}">{body}</CommentsCorrections>'


RETRACTED_TYPE = '<PublicationType UI="D016441">Retracted Publication</PublicationType>'


def test_retracted_publication_type_without_a_link_invents_no_notice() -> None:
    [event] = events_from_article(article(pub_types=RETRACTED_TYPE, doi="10.5555/ABC"))
    assert event == PaperEvent(
        type="retracted", source="pubmed", target_pmid="99990099", target_doi="10.5555/abc"
    )


def test_a_cited_papers_doi_is_not_the_records_own() -> None:
    record = article(pub_types=RETRACTED_TYPE)
    cited = '<ArticleIdList><ArticleId IdType="doi">10.5555/cited</ArticleId></ArticleIdList>'
    refs = f"<ReferenceList><Reference>{cited}</Reference></ReferenceList>"
    record[1].append(parse_bytes(refs.encode()))
    [event] = events_from_article(record)  # record[1] is PubmedData
    assert (event.target_pmid, event.target_doi) == ("99990099", None)


@pytest.mark.parametrize(
    ("ref_type", "expected"),
    [
        ("RetractionIn", "retracted"),
        ("RetractedandRepublishedIn", "retracted"),
        ("ErratumIn", "corrected"),
        ("CorrectedandRepublishedIn", "corrected"),
        ("ExpressionOfConcernIn", "concern"),
        ("UpdateIn", "updated"),
        ("RepublishedIn", "updated"),
        ("RetractionOf", "retraction_of"),
        ("RetractedandRepublishedFrom", "retraction_of"),
        ("ErratumFor", "correction_of"),
        ("CorrectedandRepublishedFrom", "correction_of"),
        ("ExpressionOfConcernFor", "concern_of"),
        ("UpdateOf", "update_of"),
        ("RepublishedFrom", "update_of"),
        ("retractionin", "retracted"),  # RefType compared case-insensitively
    ],
)
def test_each_lifecycle_reftype(ref_type: str, expected: str) -> None:
    [event] = events_from_article(article(link(ref_type, pmid="99990098")))
    assert event.type == expected
    linked = event.notice_pmid if expected in ev.PAPER_TYPES else event.target_pmid
    assert linked == "99990098"


@pytest.mark.parametrize(
    "ref_type",
    ["CommentIn", "CommentOn", "Cites", "ReprintIn", "ReprintOf", "SummaryForPatientsIn",
     "OriginalReportIn", "AssociatedDataset", "AssociatedPublication"],
)  # fmt: skip
def test_links_that_are_not_events(ref_type: str) -> None:
    assert (
        events_from_article(article(link(ref_type, pmid="99990098", source="J X. 2020;1:1"))) == []
    )


def test_the_retraction_link_and_the_type_give_one_event_not_two() -> None:
    found = events_from_article(
        article(link("RetractionIn", source="J X. 2021 Feb;3:9"), RETRACTED_TYPE)
    )
    assert [(e.type, e.notice_title, e.date) for e in found] == [
        ("retracted", "J X. 2021 Feb;3:9", date(2021, 2, 1))
    ]


def test_a_notice_whose_target_has_no_id_gives_no_event_but_keeps_its_kind() -> None:
    erratum = article(
        link("ErratumFor", source="J X. 2020 May;2(5):10-9."),
        '<PublicationType UI="D016425">Published Erratum</PublicationType>',
    )
    assert events_from_article(erratum) == []
    assert notice_kind(erratum) == "correction"


def test_notice_kinds_and_the_gravest_wins() -> None:
    concern = '<PublicationType UI="">EXPRESSION OF CONCERN</PublicationType>'
    both = concern + '<PublicationType UI="D016440">Retraction of Publication</PublicationType>'
    assert notice_kind(article(pub_types=concern)) == "concern"
    assert notice_kind(article(pub_types=both)) == "retraction"
    assert notice_kind(article(link("RetractionOf", pmid="1"))) == "retraction"
    assert notice_kind(article(link("UpdateOf", pmid="1"))) is None  # a new version is a paper


def test_refsource_doi_and_date_are_read_strictly() -> None:
    source = "Sci Rep. 2021 Feb 3;11(1):3568. doi: 10.5555/SREP.2021.77."
    [event] = events_from_article(article(link("ErratumIn", source=source)))
    assert (event.notice_doi, event.date) == ("10.5555/srep.2021.77", date(2021, 2, 3))
    assert event.notice_url == "https://doi.org/10.5555/srep.2021.77"
    [undated] = events_from_article(article(link("ErratumIn", source="Erratum in: Nature 2020")))
    assert undated.date is None  # no "<date>;" in MEDLINE citation form: no guess


def test_book_articles_have_no_events() -> None:
    book = parse_bytes(
        b"<PubmedBookArticle><BookDocument><PMID>1</PMID></BookDocument></PubmedBookArticle>"
    )
    assert events_from_article(book) == []
    assert notice_kind(book) is None


def test_events_by_pmid_lists_records_without_events() -> None:
    body = (FIXTURES / "pubmed_cochrane_update_chain.xml").read_bytes()
    body = body.replace(
        b"</PubmedArticleSet>", lxml.etree.tostring(article()) + b"</PubmedArticleSet>"
    )
    found = events_by_pmid(body)
    assert list(found) == ["99990021", "99990022", "99990099"]
    assert found["99990099"] == []


def test_events_by_pmid_refuses_error_documents_and_entity_declarations() -> None:
    with pytest.raises(EFetchError, match="WebEnv"):
        events_by_pmid(
            b"<eFetchResult><ERROR>Unable to obtain query #1: WebEnv</ERROR></eFetchResult>"
        )
    with pytest.raises(EFetchError, match="root"):
        events_by_pmid(b"<html><body>Service unavailable</body></html>")
    bomb = b'<!DOCTYPE x [<!ENTITY a "aaaa">]><PubmedArticleSet>&a;</PubmedArticleSet>'
    with pytest.raises(UnsafeXMLError):
        events_by_pmid(bomb)
    with pytest.raises(lxml.etree.XMLSyntaxError):
        events_by_pmid(b"<PubmedArticleSet><PubmedArticle>")


# --------------------------------------------------------------------------- Crossref, real files


def test_f1000_new_version_is_an_update_never_a_retraction() -> None:
    work = crossref("crossref_work_f1000research_update-to_new_version.json")
    [event] = work.events
    assert event.type == "updated"
    assert (event.target_doi, event.notice_doi) == (
        "10.12688/f1000research.161261.1",
        "10.12688/f1000research.161261.2",
    )
    assert (event.source, event.date) == ("crossref", date(2025, 4, 24))
    assert work.notice_kind is None  # a version 2 is a paper, not a notice
    assert status_of([event.type]) == "updated"


def test_jmir_correction_without_update_to_is_typed_by_its_title_and_names_no_target() -> None:
    work = crossref("crossref_work_jmir_correction_notice_no_update-to.json")
    assert work.doi == "10.2196/43211"
    assert work.notice_kind == "correction"
    assert work.events == ()
    assert work.preprint_links == ()


def test_research_square_preprint_link() -> None:
    work = crossref("crossref_posted-content_researchsquare_is-preprint-of.json")
    assert [(link.preprint_doi, link.published_doi) for link in work.preprint_links] == [
        ("10.21203/rs.1.1/v2", "10.1186/s13063-019-3980-5")
    ]
    assert work.events == ()


def test_chemrxiv_upper_case_target_is_normalised_and_versions_are_not_links() -> None:
    work = crossref("crossref_posted-content_chemrxiv_is-preprint-of.json")
    [link_] = work.preprint_links  # is-version-of is not a preprint link
    assert link_.published_doi == "10.1002/anie.202215847"
    assert link_.preprint_doi == "10.26434/chemrxiv-2022-w0jzh-v2"
    event = preprint_event(link_)
    assert (event.type, event.target_doi, event.notice_doi) == (
        "published",
        "10.26434/chemrxiv-2022-w0jzh-v2",
        "10.1002/anie.202215847",
    )
    assert label_of(event.type) == "Now published"


@pytest.mark.parametrize(
    "name",
    [
        "apis/crossref_work_10.1021_acs.orglett.9b00971.json",
        "apis/crossref_work_10.1038_d41586-020-02761-z.json",
        "apis/crossref_work_10.1038_s43586-021-00024-3.json",
    ],
)
def test_ordinary_works_have_no_events(name: str) -> None:
    work = parse_work(corpus_path(name).read_bytes())
    assert (work.events, work.preprint_links, work.notice_kind) == ((), (), None)
    doi = name.removeprefix("apis/crossref_work_").removesuffix(".json").replace("_", "/")
    assert work.doi == doi
