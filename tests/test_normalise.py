"""Tests for crawler.normalise: DOI, PMID and PMCID forms, title fingerprints, HTML to text."""

from __future__ import annotations

import random
import re

import pytest

from crawler import normalise
from crawler.normalise import (
    MIN_FINGERPRINT,
    _clean_doi,
    clean_doi,
    doi_key,
    find_dois,
    html_to_text,
    pmcid,
    pmid,
    squash,
    title_fingerprint,
)
from tests.support.corpus import CORPUS

JCI = "10.1172/jci144201"
LANCET = "10.1016/s0140-6736(20)30183-5"
SICI = "10.1002/(SICI)1097-4636(199706)35:4<463::AID-JBM6>3.0.CO;2-R"
SICI_KEY = "10.1002/(sici)1097-4636(199706)35:4<463::aid-jbm6>3.0.co;2-r"

# (spelling met in the wild, expected identity key). Each row is one way a real page, feed,
# PubMed record or reference list prints a DOI.
DOI_SPELLINGS: list[tuple[str, str]] = [
    ("https://doi.org/10.1172/JCI144201", JCI),
    ("doi:10.1172/jci144201", JCI),
    ("10.1172%2FJCI144201", JCI),
    ("DOI: 10.1172/JCI144201.", JCI),
    ("http://dx.doi.org/10.1172/JCI144201", JCI),
    ("https://dx.doi.org/10.1172/JCI144201", JCI),
    ("dx.doi.org/10.1172/JCI144201", JCI),
    ("doi.org/10.1172/JCI144201", JCI),
    ("info:doi/10.1172/JCI144201", JCI),
    ("urn:doi:10.1172/JCI144201", JCI),
    ("https://www.doi.org/10.1172/JCI144201", JCI),
    ("HTTPS://DOI.ORG/10.1172/JCI144201", JCI),
    ("DOI 10.1172/JCI144201", JCI),
    ("doi: https://doi.org/10.1172/JCI144201", JCI),
    ("https://doi.org/10.1172%2FJCI144201", JCI),
    ("https://doi.org/10.1172/JCI144201?af=R", JCI),
    ("https://doi.org/10.1172/JCI144201#abstract", JCI),
    ("\ufeff10.1172/JCI144201", JCI),  # byte order mark copied from a feed title
    ("10.1172/\u200bJCI144201", JCI),  # zero-width space inserted for line breaking
    ("10.1172/JCI\u00ad144201", JCI),  # soft hyphen
    ("  10.1172/JCI144201\u00a0", JCI),
    ("10.1172/JCI144201,", JCI),
    ("10.1172/JCI144201;", JCI),
    ("(10.1172/JCI144201)", JCI),
    ("[10.1172/JCI144201]", JCI),
    ("<10.1172/JCI144201>", JCI),
    ('"10.1172/JCI144201"', JCI),
    ("doi:10.1172/JCI144201).", JCI),
    # A DOI with its own brackets keeps them; a bracket that prose closed after it goes.
    ("10.1016/S0140-6736(20)30183-5", LANCET),
    ("(10.1016/S0140-6736(20)30183-5)", LANCET),
    ("https://doi.org/10.1016/S0140-6736(20)30183-5).", LANCET),
    ("doi:10.1016/s0140-6736(20)30183-5", LANCET),
    # SICI DOIs (Wiley, 1990s) are full of "<>;:" and brackets.
    (SICI, SICI_KEY),
    ("doi:" + SICI + ".", SICI_KEY),
    (
        "https://doi.org/10.1002/(SICI)1097-4636(199706)35:4%3C463::AID-JBM6%3E3.0.CO;2-R",
        SICI_KEY,
    ),
    (
        "10.1639/0007-2745(2002)105[0275:TAFCOS]2.0.CO;2",
        "10.1639/0007-2745(2002)105[0275:tafcos]2.0.co;2",
    ),
    # Registrant codes of 4 to 9 digits, dots in the suffix.
    ("10.11646/zootaxa.5002.1.1.", "10.11646/zootaxa.5002.1.1"),
    ("10.3897/zookeys.1078.47616", "10.3897/zookeys.1078.47616"),
    ("doi:10.1101/2023.12.16.571984", "10.1101/2023.12.16.571984"),
    # Non-ASCII letters keep their case: DOIs are case-insensitive for ASCII only.
    ("10.1234/ÄBC-Über", "10.1234/Äbc-Über"),
    ("10.1234/äbc-über", "10.1234/äbc-über"),
    # NFC: a decomposed "é" (e + combining acute) is the same DOI as the composed one.
    ("10.1234/Caf\u0065\u0301", "10.1234/caf\u00e9"),
]


@pytest.mark.parametrize(("raw", "key"), DOI_SPELLINGS)
def test_doi_spellings_map_to_one_key(raw: str, key: str) -> None:
    assert doi_key(raw) == key


def test_table_is_large_enough() -> None:
    assert len(DOI_SPELLINGS) >= 30


def test_clean_doi_keeps_display_case() -> None:
    assert clean_doi("https://doi.org/10.1172/JCI144201") == "10.1172/JCI144201"
    assert clean_doi("DOI: 10.1016/S0140-6736(20)30183-5).") == "10.1016/S0140-6736(20)30183-5"
    assert clean_doi("doi:" + SICI + ".") == SICI


def test_non_ascii_case_is_not_folded() -> None:
    upper, lower = doi_key("10.1234/ÄBC"), doi_key("10.1234/äbc")
    assert upper is not None and lower is not None
    assert upper != lower
    assert upper == "10.1234/Äbc"


def test_percent_decoding_happens_once() -> None:
    # "%2525" is an encoded "%25": one decoding pass leaves the DOI's own "%25".
    assert clean_doi("10.1000/abc%2525def") == "10.1000/abc%25def"


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "",
        "   ",
        "doi:",
        "https://doi.org/",
        "10.1172/",
        "10.12/abc",  # registrant too short
        "11.1172/JCI144201",
        "10.abcd/JCI144201",
        "10.1172/JCI 144201",  # white space inside
        "10.1172/JCI144201\nnext line",
        "not a doi",
        "https://example.org/article/123",
        "PMID: 33906673",
    ],
)
def test_invalid_dois_give_none(raw: str | None) -> None:
    assert clean_doi(raw) is None
    assert doi_key(raw) is None


# --- find_dois --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Journal of Clinical Investigation, 2021; 131 (13) DOI: 10.1172/JCI144201",
            ["10.1172/JCI144201"],
        ),
        ("https://onlinelibrary.wiley.com/doi/10.1002/tax.12603?af=R", ["10.1002/tax.12603"]),
        (
            "https://www.microbiologyresearch.org/content/journal/ijsem/10.1099/ijsem.0.005019?TRACK=RSS",
            ["10.1099/ijsem.0.005019"],
        ),
        ("/doi/abs/10.1002/anie.201909614?af=R", ["10.1002/anie.201909614"]),
        (
            "https://www.biorxiv.org/content/10.1101/2023.12.16.571984v1?rss=1",
            ["10.1101/2023.12.16.571984"],
        ),
        (
            '<a href="https://doi.org/10.1038/s41586-020-2012-7">paper</a>',
            ["10.1038/s41586-020-2012-7"],
        ),
        # PubMed RSS writes the href without quotes.
        (
            "DOI:<a href=https://doi.org/10.11646/zootaxa.5002.1.1>10.11646/zootaxa.5002.1.1</a>",
            ["10.11646/zootaxa.5002.1.1"],
        ),
        ("Published (doi: 10.1016/S0140-6736(20)30183-5).", ["10.1016/S0140-6736(20)30183-5"]),
        ("see " + SICI + ".", [SICI]),
        ("<p>DOI: 10.3897/zookeys.1078.47616</p>", ["10.3897/zookeys.1078.47616"]),
        # Two spellings of one DOI count once, in order of first appearance.
        (
            "DOI: 10.1172/JCI144201. Also doi:10.1172/jci144201 and 10.1038/nm.1234.",
            ["10.1172/JCI144201", "10.1038/nm.1234"],
        ),
        ("no identifier here, only 10.12 and 2021/10", []),
        ("", []),
    ],
)
def test_find_dois(text: str, expected: list[str]) -> None:
    assert find_dois(text) == expected


def test_find_dois_none() -> None:
    assert find_dois(None) == []


# --- DOIs from the real corpus ----------------------------------------------------------------


def _corpus(relative: str) -> str:
    path = CORPUS / relative
    if not path.is_file():
        pytest.skip(f"corpus file {path} not present")
    return path.read_text(encoding="utf-8")


def test_corpus_wiley_link_and_guid_agree() -> None:
    """Wiley RSS: the bare DOI in <guid> and the one in the ?af=R link give one key per item."""
    text = _corpus("journal_feeds/wiley_taxon_rss2_2021-11-23.xml")
    items = re.findall(r"<item>(.*?)</item>", text, re.S)
    assert len(items) == 52
    for item in items:
        link = re.search(r"<link>([^<]+)</link>", item)
        guid = re.search(r"<guid[^>]*>([^<]+)</guid>", item)
        assert link and guid
        assert "?af=R" in link.group(1)
        assert [doi_key(d) for d in find_dois(link.group(1))] == [doi_key(guid.group(1))]
    assert doi_key("https://onlinelibrary.wiley.com/doi/10.1002/tax.12603?af=R") is None
    assert find_dois(items[0])[0] == "10.1002/tax.12603"


def test_corpus_ijsem_doi_only_in_link() -> None:
    text = _corpus("journal_feeds/microbiologysociety_ijsem_rss2_2021-12-21.xml")
    links = re.findall(r"<link>([^<]+/10\.[^<]+)</link>", text)
    # One per item; the channel's own link has no DOI.
    assert len(links) == text.count("<item>") == 25
    for link in links:
        (doi,) = find_dois(link)
        assert "?" not in doi and "TRACK" not in doi
        assert doi.startswith("10.1099/ijsem.")
    assert find_dois(links[0]) == ["10.1099/ijsem.0.005019"]


def test_corpus_pensoft_doi_in_description() -> None:
    text = _corpus("journal_feeds/pensoft_zookeys_rss2_2021-12-21.xml")
    found = find_dois(text)
    assert "10.3897/zookeys.1078.47616" in found
    assert all(d.startswith("10.3897/zookeys.") for d in found)


def test_corpus_biorxiv_and_angewandte_identifiers() -> None:
    biorxiv = _corpus("journal_feeds/biorxiv_genomics_rss1_1item.xml")
    ident = re.search(r"<dc:identifier>([^<]+)</dc:identifier>", biorxiv)
    assert ident and ident.group(1) == "doi:10.1101/2023.12.16.571984"
    assert doi_key(ident.group(1)) == "10.1101/2023.12.16.571984"
    angewandte = _corpus("journal_feeds/wiley_angewandte_rss1_2020_185items_reserialized.xml")
    pairs = re.findall(r'rdf:about="(/doi/abs/[^"]+)".*?identifier>(doi:[^<]+)<', angewandte, re.S)
    assert len(pairs) >= 100
    for about, identifier in pairs:
        assert doi_key(identifier) == doi_key(find_dois(about)[0])


def test_corpus_pubmed_rss_citation_and_identifier_agree() -> None:
    """PubMed RSS: 'doi: 10.x.' in the citation (trailing dot) equals dc:identifier doi:10.x."""
    text = _corpus("pubmed/pubmed_rss_search_2021-11-23.xml")
    items = re.findall(r"<item>(.*?)</item>", text, re.S)
    assert len(items) == 15
    for item in items:
        ident = re.search(r"<dc:identifier>(doi:[^<]+)</dc:identifier>", item)
        assert ident
        key = doi_key(ident.group(1))
        assert key and not key.endswith(".")
        assert key in {doi_key(d) for d in find_dois(item)}
    pm = re.findall(r"<dc:identifier>(pmid:\d+)</dc:identifier>", text)
    assert len(pm) == 15 and pmid(pm[0]) == pm[0].removeprefix("pmid:")


# --- PubMed identifiers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("33906673", "33906673"),
        (33906673, "33906673"),
        ("pmid:33906673", "33906673"),
        ("PMID: 33906673", "33906673"),
        ("pubmed:33906673", "33906673"),
        (" 033906673 ", "33906673"),
        ("0", None),
        ("", None),
        (None, None),
        ("PMC8080352", None),
        ("33906673a", None),
        ("1234567890", None),  # ten digits: longer than any PMID
    ],
)
def test_pmid(raw: str | int | None, expected: str | None) -> None:
    assert pmid(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("PMC8080352", "PMC8080352"),
        ("pmc8080352", "PMC8080352"),
        ("PMCID: PMC8080352", "PMC8080352"),
        ("8080352", "PMC8080352"),
        ("PMC", None),
        ("PMC0", None),
        ("", None),
        (None, None),
        ("NIHMS12345", None),
    ],
)
def test_pmcid(raw: str | None, expected: str | None) -> None:
    assert pmcid(raw) == expected


# --- title fingerprints ------------------------------------------------------------------------


def test_fingerprint_ignores_case_accents_punctuation() -> None:
    a = title_fingerprint("Fibromyalgia: an Auto-immune disease?")
    b = title_fingerprint("fibromyalgia  an autoimmune DISEASE")
    assert a is not None and a == b
    assert title_fingerprint("Étude des données: la fibromyalgie") == title_fingerprint(
        "Etude des donnees - la fibromyalgie."
    )


def test_fingerprint_distinguishes_different_titles() -> None:
    assert title_fingerprint("Passive transfer of fibromyalgia symptoms from patients to mice") != (
        title_fingerprint("Passive transfer of fibromyalgia symptoms from patients to rats")
    )
    # Greek letters are content, not punctuation.
    assert title_fingerprint("Role of TNF-α in fibromyalgia pain processing") != (
        title_fingerprint("Role of TNF-β in fibromyalgia pain processing")
    )


def test_fingerprint_for_non_latin_title() -> None:
    assert title_fingerprint("Фибромиалгия и аутоиммунные заболевания у пациентов")


@pytest.mark.parametrize("title", [None, "", "Editorial", "Erratum.", "Correction to: Pain", "!!!"])
def test_short_titles_have_no_fingerprint(title: str | None) -> None:
    assert title_fingerprint(title) is None


def test_fingerprint_threshold() -> None:
    assert title_fingerprint("a" * MIN_FINGERPRINT) == "a" * MIN_FINGERPRINT
    assert title_fingerprint("a" * (MIN_FINGERPRINT - 1)) is None


# --- text ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fragment", "expected"),
    [
        ("<i>Staphylococcus aureus</i> in mice", "Staphylococcus aureus in mice"),
        ("IL-6 &lt;5 pg/mL", "IL-6 <5 pg/mL"),
        ("p&lt;0.05 &amp; n&gt;10", "p<0.05 & n>10"),
        ("A &eacute;tude &#x3B1; &#946;", "A étude α β"),
        ("before<script>alert('x')</script>after", "beforeafter"),
        ("<style>p { color: red }</style>text", "text"),
        ("<p>one</p><p>two</p>", "one two"),
        ("line<br>break", "line break"),
        ("<b>bold</b>&nbsp;text", "bold text"),
        ("<!-- comment -->kept", "kept"),
        ("  plain \n  text ", "plain text"),
        ("AT&T", "AT&T"),
        ("&lt;i&gt;escaped&lt;/i&gt;", "<i>escaped</i>"),
        ("", None),
        (None, None),
    ],
)
def test_html_to_text(fragment: str | None, expected: str | None) -> None:
    assert html_to_text(fragment) == expected


def test_squash() -> None:
    assert squash("\ufeff  A\t\nB\u200b  ") == "A B"
    assert squash("   ") is None
    assert squash(None) is None
    assert squash("a\x00b \x1c c\u00a0d\u3000") == "ab c d"


def test_squash_equals_the_regex_definition_for_every_character() -> None:
    invisible = "\x00\ufeff\u200b\u200c\u200d\u2060\u00ad"
    for code in range(0x110000):
        text = f" a{chr(code)}b {chr(code)}"
        expected = re.sub(r"\s+", " ", re.sub(f"[{invisible}]", "", text)).strip() or None
        assert squash(text) == expected, hex(code)


def test_plain_dois_take_the_fast_path_with_the_same_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(11)
    alphabet = "0123456789./-()[]<>{};:,.!?*'\"%_aZ \t\x00\u00e9\u200b#+=~"
    raws = [f"10.{rng.randint(1, 10**9)}/" for _ in range(20_000)]
    raws = [raw + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for raw in raws]
    raws += [d for d, _ in DOI_SPELLINGS] + [SICI, LANCET, "10.1234/abc)", "10.1234/a(b)"]
    expected = [_clean_doi(raw) for raw in raws]
    slow: list[str] = []
    monkeypatch.setattr(normalise, "_clean_doi", lambda raw: slow.append(raw) or _clean_doi(raw))
    assert [clean_doi(raw) for raw in raws] == expected
    assert 1000 < len(slow) < len(raws) - 1000  # both paths well exercised
