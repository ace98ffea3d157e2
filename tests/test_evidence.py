"""Evidence badges and ordering (digests.evidence)."""

from __future__ import annotations

import gzip

import lxml.etree
import pytest

from digests.evidence import Tier, badges, strength
from tests.support.corpus import CORPUS

NLM_SAMPLE = CORPUS / "pubmed" / "pubmedsample18n0001_177articles.xml.gz"


def keys(*types: str, title: str | None = None, doi: str | None = None, kinds=()) -> list[str]:
    return [b.key for b in badges(types, title, doi, kinds)]


def test_rct_hides_the_generic_clinical_trial_tag() -> None:
    # PubMed tags RCTs with both headings (PMID 9505772 in NLM's sample).
    assert keys("Clinical Trial", "Journal Article", "Randomized Controlled Trial") == ["rct"]
    assert badges(["Randomized Controlled Trial"])[0].label == "Randomised controlled trial"


def test_meta_analysis_and_systematic_review_hide_review() -> None:
    found = keys("Journal Article", "Meta-Analysis", "Systematic Review", "Review")
    assert found == ["meta-analysis", "systematic-review"]
    assert keys("Review") == ["review"]


@pytest.mark.parametrize(
    "ptype", ["Clinical Trial, Phase II", "Controlled Clinical Trial", "Pragmatic Clinical Trial"]
)
def test_trial_subtypes_are_clinical_trials(ptype: str) -> None:
    assert keys(ptype) == ["clinical-trial"]
    assert strength([ptype]) == Tier.CLINICAL_TRIAL


def test_trial_protocol_is_not_a_trial() -> None:
    assert keys("Clinical Trial Protocol") == []
    assert strength(["Clinical Trial Protocol"]) == Tier.OTHER


def test_type_matching_ignores_case_and_jats_hyphens() -> None:
    assert keys("meta-analysis") == ["meta-analysis"]
    assert keys("RANDOMIZED CONTROLLED TRIAL") == ["rct"]
    assert keys("systematic_review") == ["systematic-review"]


@pytest.mark.parametrize(
    ("doi", "expected"),
    [
        ("10.1101/2024.01.02.24300012", True),  # medRxiv, dated form
        ("https://doi.org/10.1101/123456", True),  # early bioRxiv, as a resolver URL
        ("10.1101/gr.277373.122", False),  # Genome Research (CSHL Press), same prefix
        ("10.1101/gad.350000.122", False),  # Genes & Development
        ("10.21203/rs.3.rs-1234567/v1", True),  # Research Square
        ("10.1016/j.jaut.2024.103301", False),
        (None, False),
    ],
)
def test_preprint_by_doi(doi: str | None, expected: bool) -> None:
    assert ("preprint" in keys(doi=doi)) is expected


def test_preprint_by_type_or_sighting_and_its_label() -> None:
    assert keys("Preprint") == ["preprint"]
    assert keys("Journal Article", kinds=("article", "preprint")) == ["preprint"]
    assert badges(["Preprint"])[0].label == "Preprint (not peer reviewed)"


@pytest.mark.parametrize(
    ("ptype", "key"),
    [
        ("Retracted Publication", "retracted"),
        ("Retraction of Publication", "retraction"),
        ("Published Erratum", "correction"),
        ("Correction", "correction"),
        ("Expression of Concern", "concern"),
    ],
)
def test_notice_types(ptype: str, key: str) -> None:
    assert keys("Journal Article", ptype) == [key]
    assert strength(["Journal Article", ptype]) == Tier.NOTICE


@pytest.mark.parametrize(
    ("title", "key"),
    [
        ("Retraction: Small fibre pathology in fibromyalgia", "retraction"),
        ("Retraction notice to “Gut microbiota in lupus”", "retraction"),
        ("Notice of Retraction: IL-17 in psoriasis", "retraction"),
        ("RETRACTED: Vitamin D and fibromyalgia", "retracted"),
        ("Correction to: Pain in Sjögren's syndrome", "correction"),
        ("Correction: Pain in Sjögren's syndrome", "correction"),
        ("Erratum to “Fatigue in RA”", "correction"),
        ("Corrigendum: Fatigue in RA", "correction"),
    ],
)
def test_notice_titles(title: str, key: str) -> None:
    assert keys("Journal Article", title=title) == [key]


@pytest.mark.parametrize(
    "title",
    [
        "Correction of vitamin D deficiency in fibromyalgia: a cohort study",
        "Retraction rates in rheumatology journals",
        "Errata in the fibromyalgia literature",
    ],
)
def test_research_titles_that_merely_start_with_the_word(title: str) -> None:
    assert keys("Journal Article", title=title) == []


def test_corrected_and_republished_article_is_not_a_notice() -> None:
    # NLM's sample has such a record titled "Erratum: analysis of DNA elements ..." (PMID
    # 10612833): it is the corrected full article.
    types = ["Corrected and Republished Article", "Journal Article"]
    assert keys(*types, title="Erratum: analysis of DNA elements") == []
    assert strength(types, "Erratum: analysis of DNA elements") == Tier.OTHER


def test_warnings_come_before_design_badges() -> None:
    found = keys("Review", "Retracted Publication", doi="10.1101/2024.05.05.24306789")
    assert found == ["retracted", "preprint", "review"]


def test_badge_tone() -> None:
    tones = {b.key: b.tone for b in badges(["Review", "Retracted Publication", "Preprint"])}
    assert tones == {"retracted": "warning", "preprint": "caution", "review": "design"}


def test_strength_order() -> None:
    ranked = [
        strength(["Meta-Analysis"]),
        strength(["Systematic Review"]),
        strength(["Randomized Controlled Trial", "Clinical Trial"]),
        strength(["Clinical Trial, Phase III"]),
        strength(["Review"]),
        strength(["Journal Article"]),
        strength(["Journal Article"], doi="10.1101/2024.01.02.24300012"),
        strength(["Published Erratum"]),
    ]
    assert ranked[0] == ranked[1]
    assert ranked[1:] == sorted(ranked[1:], reverse=True)
    assert len(set(ranked[1:])) == len(ranked) - 1


def test_retracted_or_preprint_design_does_not_lift_the_rank() -> None:
    assert strength(["Randomized Controlled Trial", "Retracted Publication"]) == Tier.NOTICE
    assert strength(["Meta-Analysis", "Preprint"]) == Tier.PREPRINT
    assert strength(["Meta-Analysis"], title="Correction to: A meta-analysis") == Tier.NOTICE


def _nlm_articles() -> dict[str, tuple[list[str], str]]:
    if not NLM_SAMPLE.exists():
        pytest.skip("shared corpus not available")
    parser = lxml.etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    with gzip.open(NLM_SAMPLE) as fh:
        root = lxml.etree.parse(fh, parser).getroot()
    out = {}
    for art in root.iter("PubmedArticle"):
        types = [t.text or "" for t in art.iter("PublicationType")]
        title = "".join(art.find(".//ArticleTitle").itertext())
        out[art.findtext(".//PMID")] = (types, title)
    return out


def test_nlm_baseline_sample() -> None:
    articles = _nlm_articles()
    for pmid in ("8655018", "8863847", "11543891"):  # tagged "Retracted Publication"
        types, title = articles[pmid]
        assert "retracted" in keys(*types, title=title)
        assert strength(types, title) == Tier.NOTICE
    # "Retraction of Publication" notices: one titled "Retraction: ...", one "Editorial. ...".
    for pmid in ("9634358", "11600210"):
        assert "retraction" in keys(*articles[pmid][0], title=articles[pmid][1])
    assert keys(*articles["9110943"][0]) == ["meta-analysis"]
    assert keys(*articles["18719013"][0]) == ["rct"]
    for pmid in ("10612833", "11748851"):  # "Erratum: ..." titles on corrected articles
        assert keys(*articles[pmid][0], title=articles[pmid][1]) == []
