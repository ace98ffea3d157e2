"""Tests for crawler.export: four formats, hostile text, round trips through small parsers."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from crawler.export import (
    CitationKeys,
    parse_author,
    write_bibtex,
    write_csv,
    write_jsonl,
    write_records,
    write_ris,
)
from tests.support.corpus import CORPUS

HOSTILE_TITLE = '=SUM(A1:A9), a "quoted" {IL-6} & 50% rise\nat <5 pg/mL: $x_1$ #2 ~ ^ \\ done'
HOSTILE_ABSTRACT = "First line.\r\nER  - \nTY  - BOOK\nTI  - forged record\u2028after\x85end"


def record(**overrides: Any) -> dict[str, Any]:
    """A record in the JSONL contract shape; keyword arguments replace fields."""
    base: dict[str, Any] = {
        "doi": "10.1186/s13075-021-02501-x",
        "pmid": "33906673",
        "pmcid": "PMC8080352",
        "title": "Fibromyalgia as an autoimmune disease",
        "journal": "Arthritis Research & Therapy",
        "published": "2021-07-01",
        "authors": ["Goebel A", "Krock E"],
        "abstract": "Passive transfer of IgG.",
        "topics": ["fibromyalgia", "autoimmunity"],
        "publication_types": ["Journal Article"],
        "first_seen": "2021-07-02T06:00:00+00:00",
        "sightings": [
            {
                "source": "pubmed-fibromyalgia",
                "kind": "article",
                "url": "https://pubmed.ncbi.nlm.nih.gov/33906673/",
                "seen_at": "2021-07-02T06:00:00+00:00",
            }
        ],
    }
    base.update(overrides)
    return base


def hostile() -> dict[str, Any]:
    return record(
        title=HOSTILE_TITLE,
        abstract=HOSTILE_ABSTRACT,
        journal="Pain & Co, 100% {open}",
        authors=["Müller-Ødegård K", "Andreas Goebel", "van der Berg JM", "Pain Study Group"],
        topics=["fibromyalgia", "small_fibre & more"],
    )


def export(fmt: str, records: list[dict[str, Any]]) -> tuple[int, str]:
    out = io.StringIO(newline="")
    count = write_records(records, fmt, out)  # type: ignore[arg-type]
    return count, out.getvalue()


def flat(text: str) -> str:
    """What a one-line format must make of multi-line text: single spaces, stripped."""
    return " ".join(text.split())


# --- write_records -------------------------------------------------------------------------


def test_unknown_format_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown export format"):
        write_records([record()], "xml", io.StringIO())  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "ris", "bibtex"])
def test_writers_stream_record_by_record(fmt: str) -> None:
    out = io.StringIO(newline="")
    seen_sizes: list[int] = []

    def produce() -> Iterator[dict[str, Any]]:
        for i in range(3):
            seen_sizes.append(len(out.getvalue()))
            yield record(doi=f"10.1000/{i}", title=f"Paper number {i}")

    assert write_records(produce(), fmt, out) == 3  # type: ignore[arg-type]
    # Output for record i is written before record i + 1 is even produced.
    assert seen_sizes[1] > seen_sizes[0]
    assert seen_sizes[2] > seen_sizes[1]


# --- JSON Lines ----------------------------------------------------------------------------


def test_jsonl_round_trips_hostile_records() -> None:
    records = [hostile(), record(doi=None, pmid=None, title="Ünïcödé ﬁrst")]
    count, text = export("jsonl", records)
    assert count == 2
    # U+2028 and NEL are escaped, so even str.splitlines() sees one line per record.
    lines = text.splitlines()
    assert len(lines) == 2
    assert [json.loads(line) for line in lines] == records
    assert text.endswith("\n")
    assert "Müller-Ødegård" in text  # ensure_ascii=False keeps UTF-8 readable
    assert ", " not in lines[1] and ": " not in lines[1]  # compact separators


def test_jsonl_empty_input_writes_nothing() -> None:
    out = io.StringIO()
    assert write_jsonl([], out) == 0
    assert out.getvalue() == ""


# --- CSV -----------------------------------------------------------------------------------


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def test_csv_round_trips_quotes_commas_and_newlines() -> None:
    count, text = export("csv", [hostile(), record()])
    rows = read_csv(text)
    assert count == len(rows) == 2
    assert rows[0]["title"] == "'" + HOSTILE_TITLE  # defused, otherwise exact
    assert rows[0]["abstract"] == HOSTILE_ABSTRACT  # line breaks kept inside the quotes
    assert rows[0]["journal"] == "Pain & Co, 100% {open}"
    assert rows[0]["authors"] == (
        "Müller-Ødegård K; Andreas Goebel; van der Berg JM; Pain Study Group"
    )
    assert rows[1]["topics"] == "fibromyalgia; autoimmunity"
    assert rows[1]["publication_types"] == "Journal Article"
    assert rows[1]["doi"] == "10.1186/s13075-021-02501-x"
    assert rows[1]["first_seen"] == "2021-07-02T06:00:00+00:00"
    assert text.startswith("doi,pmid,pmcid,title,") and text.split("\n", 1)[0].endswith("\r")


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t"])
def test_csv_defuses_formula_cells(start: str) -> None:
    payload = start + 'HYPERLINK("http://evil.example","x")'
    row = read_csv(export("csv", [record(title=payload, journal=payload, authors=[payload])])[1])[0]
    for column in ("title", "journal"):
        assert row[column] == "'" + payload
    # List items are stripped, so a tab in front of an author name is gone, not defused.
    assert row["authors"] == (payload if start == "\t" else "'" + payload).strip()
    assert not any(v.startswith(("=", "+", "-", "@", "\t")) for v in row.values())


def test_csv_leaves_ordinary_text_and_numbers_alone() -> None:
    rows = read_csv(export("csv", [record(title="Pain - a review")])[1])
    assert rows[0]["title"] == "Pain - a review"
    assert rows[0]["sighting_count"] == "1"


def test_csv_summarises_sightings() -> None:
    sightings = [
        {"source": "a", "kind": "article", "url": "https://x.example/1", "seen_at": "t"},
        {"source": "b", "kind": "news", "url": "https://x.example/1", "seen_at": "t"},
        {"source": "c", "kind": "news", "url": "https://y.example/a b?q=1;2", "seen_at": "t"},
        {"source": "d", "kind": "news", "url": None, "seen_at": "t"},
    ]
    row = read_csv(export("csv", [record(sightings=sightings)])[1])[0]
    assert row["sighting_count"] == "4"
    assert row["sighting_urls"].split(" ") == [
        "https://x.example/1",
        "https://y.example/a%20b?q=1;2",
    ]


def test_csv_for_excel_starts_with_a_byte_order_mark() -> None:
    rec = record(authors=["Müller-Ødegård K"])
    _, plain = export("csv", [rec])
    assert not plain.startswith("\ufeff")
    out = io.StringIO(newline="")
    assert write_records([rec], "csv", out, excel=True) == 1
    excel = out.getvalue()
    assert excel == "\ufeff" + plain
    raw = excel.encode("utf-8")
    assert raw.startswith(b"\xef\xbb\xbf")
    [row] = read_csv(raw.decode("utf-8-sig"))
    assert row["authors"] == "Müller-Ødegård K" and row["doi"] == rec["doi"]
    with pytest.raises(ValueError, match="csv"):
        write_records([rec], "ris", io.StringIO(), excel=True)


def test_csv_empty_input_writes_header_only() -> None:
    out = io.StringIO(newline="")
    assert write_csv([], out) == 0
    assert read_csv(out.getvalue()) == []
    assert out.getvalue().startswith("doi,")


# --- RIS -----------------------------------------------------------------------------------

RIS_LINE = re.compile(r"^([A-Z][A-Z0-9])  - (.*)$")


def parse_ris(text: str) -> list[dict[str, list[str]]]:
    """A strict reader: CRLF lines, ``TAG  - value``, TY first and ER last in every record."""
    assert "\n" not in text.replace("\r\n", "") and "\r" not in text.replace("\r\n", "")
    records: list[dict[str, list[str]]] = []
    current: dict[str, list[str]] | None = None
    for line in text.split("\r\n"):
        if not line:
            continue
        m = RIS_LINE.match(line)
        assert m, f"not a RIS line: {line!r}"
        tag, value = m.groups()
        if current is None:
            assert tag == "TY", f"record starts with {tag}"
            current = {}
        current.setdefault(tag, []).append(value)
        if tag == "ER":
            assert value == ""
            records.append(current)
            current = None
    assert current is None, "last record has no ER"
    return records


def test_ris_fields_of_a_journal_paper() -> None:
    count, text = export("ris", [record()])
    [rec] = parse_ris(text)
    assert count == 1
    assert rec["TY"] == ["JOUR"]
    assert rec["TI"] == ["Fibromyalgia as an autoimmune disease"]
    assert rec["AU"] == ["Goebel, A", "Krock, E"]
    assert rec["T2"] == ["Arthritis Research & Therapy"]
    assert rec["PY"] == ["2021"]
    assert rec["DA"] == ["2021/07/01/"]
    assert rec["DO"] == ["10.1186/s13075-021-02501-x"]
    assert rec["AN"] == ["33906673"] and rec["DB"] == ["PubMed"]
    assert rec["KW"] == ["fibromyalgia", "autoimmunity"]
    assert rec["UR"] == ["https://doi.org/10.1186/s13075-021-02501-x"]
    assert text.startswith("TY  - JOUR\r\n") and text.endswith("ER  - \r\n\r\n")


def test_ris_flattens_newlines_so_no_record_can_be_forged() -> None:
    [rec, plain] = parse_ris(export("ris", [hostile(), record()])[1])
    assert rec["TY"] == ["JOUR"] and plain["TY"] == ["JOUR"]
    assert rec["TI"] == [flat(HOSTILE_TITLE)]
    assert rec["AB"] == [flat(HOSTILE_ABSTRACT)]
    assert "BOOK" not in rec["TY"] and "ER" in rec
    assert rec["AU"] == [
        "Müller-Ødegård, K",
        "Goebel, Andreas",
        "van der Berg, JM",
        "Pain Study Group",
    ]


def test_ris_drops_control_characters_and_asterisks() -> None:
    rec = record(title="Bell\x07 and\x00 null", authors=["Smith J*"], topics=["auto*"])
    [parsed] = parse_ris(export("ris", [rec])[1])
    assert parsed["TI"] == ["Bell and null"]
    assert parsed["AU"] == ["Smith, J"]  # RIS spec: no asterisk in author or keyword fields
    assert parsed["KW"] == ["auto"]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"publication_types": ["Preprint"]}, "UNPB"),
        ({"publication_types": [], "sightings": [{"kind": "preprint", "url": None}]}, "UNPB"),
        (
            {"sightings": [{"kind": "preprint", "url": None}, {"kind": "article", "url": None}]},
            "JOUR",
        ),
        ({"sightings": [{"kind": "news", "url": "https://www.sciencedaily.com/x"}]}, "JOUR"),
    ],
)
def test_ris_type_of_preprints(overrides: dict[str, Any], expected: str) -> None:
    [rec] = parse_ris(export("ris", [record(**overrides)])[1])
    assert rec["TY"] == [expected]


@pytest.mark.parametrize(
    ("overrides", "url"),
    [
        ({"doi": "10.1002/(SICI)1097#x?y"}, "https://doi.org/10.1002/(SICI)1097%23x%3Fy"),
        ({"doi": None}, "https://pubmed.ncbi.nlm.nih.gov/33906673/"),
        # No identifier at all: the first http(s) sighting URL (here the PubMed page).
        ({"doi": None, "pmid": None}, "https://pubmed.ncbi.nlm.nih.gov/33906673/"),
        (
            {"doi": None, "pmid": None, "sightings": [{"kind": "news", "url": "javascript:x()"}]},
            None,
        ),
        (
            {"doi": None, "pmid": None, "sightings": [{"kind": "news", "url": "http://a.b/c d"}]},
            "http://a.b/c%20d",
        ),
    ],
)
def test_ris_landing_url(overrides: dict[str, Any], url: str | None) -> None:
    [rec] = parse_ris(export("ris", [record(**overrides)])[1])
    assert rec.get("UR") == ([url] if url else None)


def test_ris_partial_and_missing_dates() -> None:
    year_only, no_date = parse_ris(
        export("ris", [record(published="2021"), record(published=None)])[1]
    )
    assert year_only["PY"] == ["2021"] and year_only["DA"] == ["2021///"]
    assert "PY" not in no_date and "DA" not in no_date


def test_ris_empty_input_writes_nothing() -> None:
    out = io.StringIO()
    assert write_ris([], out) == 0
    assert out.getvalue() == ""


# --- BibTeX --------------------------------------------------------------------------------


def parse_bibtex(text: str) -> list[tuple[str, str, dict[str, str]]]:
    """A reader with BibTeX's own brace rule: every brace counts, backslash or not."""
    entries = []
    pos = 0
    while (at := text.find("@", pos)) != -1:
        m = re.compile(r"@(\w+)\{([^,\s]+),\n").match(text, at)
        assert m, f"bad entry head at {text[at : at + 40]!r}"
        fields: dict[str, str] = {}
        pos = m.end()
        while True:
            fm = re.compile(r"\s*(\w+) = ").match(text, pos)
            assert fm, f"bad field at {text[pos : pos + 40]!r}"
            pos = fm.end()
            if text[pos] == "{":
                depth, start = 0, pos
                while True:
                    depth += {"{": 1, "}": -1}.get(text[pos], 0)
                    pos += 1
                    if depth == 0:
                        break
                fields[fm.group(1)] = text[start + 1 : pos - 1]
            else:
                macro = re.compile(r"[a-z]+").match(text, pos)
                assert macro
                fields[fm.group(1)] = macro.group(0)
                pos = macro.end()
            if text.startswith(",\n", pos):
                pos += 2
                continue
            assert text.startswith("\n}\n", pos), f"entry not closed at {text[pos : pos + 20]!r}"
            pos += 3
            break
        entries.append((m.group(1), m.group(2), fields))
    return entries


# The reverse of LaTeX escaping, written independently of the module's table.
UNLATEX = [
    (r"\textbackslash{}", "\\"),
    (r"\textbraceleft{}", "{"),
    (r"\textbraceright{}", "}"),
    (r"\textasciitilde{}", "~"),
    (r"\textasciicircum{}", "^"),
    (r"\textless{}", "<"),
    (r"\textgreater{}", ">"),
    (r"\&", "&"),
    (r"\%", "%"),
    (r"\$", "$"),
    (r"\#", "#"),
    (r"\_", "_"),
    # Ligature breakers ("--" is written "-{}-"): see test_bibtex_protects_tex_ligatures.
    ("-{}", "-"),
    ("`{}", "`"),
    ("'{}", "'"),
    ("?{}", "?"),
    ("!{}", "!"),
]


def unlatex(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        for escaped, char in UNLATEX:
            if value.startswith(escaped, i):
                out.append(char)
                i += len(escaped)
                break
        else:
            assert value[i] not in "\\{}&%$#_~^<>", f"unescaped {value[i]!r} in {value!r}"
            out.append(value[i])
            i += 1
    return "".join(out)


def test_bibtex_escapes_specials_and_round_trips() -> None:
    count, text = export("bibtex", [hostile()])
    [(kind, key, fields)] = parse_bibtex(text)
    assert count == 1 and kind == "article"
    assert fields["title"].startswith("{") and fields["title"].endswith("}")
    assert unlatex(fields["title"][1:-1]) == flat(HOSTILE_TITLE)
    assert unlatex(fields["abstract"]) == flat(HOSTILE_ABSTRACT)
    assert unlatex(fields["journal"]) == "Pain & Co, 100% {open}"
    assert unlatex(fields["keywords"]) == "fibromyalgia, small_fibre & more"
    assert fields["author"] == (
        "Müller-Ødegård, K. and Goebel, Andreas and van der Berg, J. M. and {Pain Study Group}"
    )
    assert "Müller-Ødegård" in text  # UTF-8 kept, not turned into {\"u}
    assert key == "mullerodegard2021sum"


DASHED_TITLE = "IL-6--TNF axis --- a ``review'' of pain?`s C--C bonds"


def test_bibtex_protects_tex_ligatures() -> None:
    """ "--" must not print (or read back) as an en dash: TeX ligatures are broken with {}."""
    rec = record(title=DASHED_TITLE, journal="Pain -- Reports", authors=["Smith--Jones A"])
    [(_, _, fields)] = parse_bibtex(export("bibtex", [rec])[1])
    title = fields["title"][1:-1]
    assert "--" not in title and "``" not in title and "''" not in title and "?`" not in title
    assert title == r"IL-6-{}-TNF axis -{}-{}- a `{}`review'{}' of pain?{}`s C-{}-C bonds"
    assert unlatex(title) == DASHED_TITLE
    assert unlatex(fields["journal"]) == "Pain -- Reports" and "--" not in fields["journal"]
    assert fields["author"] == "Smith-{}-Jones, A."


def test_bibtex_export_reads_back_in_pybtex_and_bibtexparser() -> None:
    """The whole export, as two real BibTeX readers decode it (skipped without them)."""
    pybtex_database = pytest.importorskip("pybtex.database")
    richtext = pytest.importorskip("pybtex.richtext")
    bibtexparser = pytest.importorskip("bibtexparser")
    middlewares = pytest.importorskip("bibtexparser.middlewares")
    records = [
        record(),
        record(title=DASHED_TITLE),
        hostile(),
        record(title="Preprint -- first look", journal="medRxiv", publication_types=["Preprint"]),
        record(authors=[], published=None, title="a { b", abstract="} c {{", journal="}"),
    ]
    path = CORPUS / "apis" / "europepmc_search_1000results_cancer.json"
    corpus = europepmc_records()[:200] if path.exists() else []  # real titles, when at hand
    count, text = export("bibtex", records + corpus)
    assert count == len(records) + len(corpus)

    parsed = pybtex_database.parse_string(text, "bibtex")
    assert len(parsed.entries) == count
    titles = [
        richtext.Text.from_latex(entry.fields["title"]).render_as("text")
        for entry in parsed.entries.values()
    ]
    assert titles[1] == DASHED_TITLE  # no en dash, no curly quotes
    assert "–" not in titles[3] and titles[3] == "Preprint -- first look"
    assert all("author" in entry.persons for entry in list(parsed.entries.values())[:4])

    library = bibtexparser.parse_string(
        text, append_middleware=[middlewares.LatexDecodingMiddleware()]
    )
    assert library.failed_blocks == [] and len(library.entries) == count
    decoded = [entry["title"].strip("{}") for entry in library.entries]
    assert decoded[1] == DASHED_TITLE
    assert decoded[3] == "Preprint -- first look"
    assert [entry.key for entry in library.entries] == list(parsed.entries.keys())


def test_bibtex_journal_paper_fields() -> None:
    [(kind, key, fields)] = parse_bibtex(export("bibtex", [record()])[1])
    assert (kind, key) == ("article", "goebel2021fibromyalgia")
    assert fields["author"] == "Goebel, A. and Krock, E."
    assert fields["title"] == "{Fibromyalgia as an autoimmune disease}"
    assert fields["journal"] == r"Arthritis Research \& Therapy"
    assert fields["year"] == "2021" and fields["month"] == "jul"  # month is a bare macro
    assert "month = jul," in export("bibtex", [record()])[1]
    assert fields["doi"] == "10.1186/s13075-021-02501-x"
    assert fields["pmid"] == "33906673" and fields["pmcid"] == "PMC8080352"
    assert fields["url"] == "https://doi.org/10.1186/s13075-021-02501-x"


def test_bibtex_preprint_is_misc_with_note() -> None:
    rec = record(journal="bioRxiv", publication_types=["Preprint"], doi="10.1101/2021.01.01.1")
    [(kind, _key, fields)] = parse_bibtex(export("bibtex", [rec])[1])
    assert kind == "misc"
    assert fields["howpublished"] == "bioRxiv" and "journal" not in fields
    assert fields["note"] == "Preprint"


def test_bibtex_doi_with_brace_is_left_to_the_url() -> None:
    [(_, _, fields)] = parse_bibtex(export("bibtex", [record(doi="10.1000/a{b")])[1])
    assert "doi" not in fields
    assert fields["url"] == "https://doi.org/10.1000/a%7Bb"


def test_bibtex_unbalanced_braces_in_input_stay_balanced() -> None:
    text = export("bibtex", [record(title="a { b", abstract="} c {{", journal="}")])[1]
    [(_, _, fields)] = parse_bibtex(text)  # the brace-counting parser would fail otherwise
    assert unlatex(fields["title"][1:-1]) == "a { b"
    assert text.count("{") == text.count("}")


def test_bibtex_keys_are_unique_within_an_export() -> None:
    same = [record() for _ in range(3)]
    # Its natural key is the one a repeated key would take first.
    clash = record(title="Fibromyalgiaa")
    entries = parse_bibtex(export("bibtex", [*same, clash, record()])[1])
    keys = [key for _, key, _ in entries]
    assert keys == [
        "goebel2021fibromyalgia",
        "goebel2021fibromyalgiaa",
        "goebel2021fibromyalgiab",
        "goebel2021fibromyalgiaa" + "a",
        "goebel2021fibromyalgiac",
    ]
    assert len(set(keys)) == len(keys)


def test_bibtex_key_suffixes_run_past_z() -> None:
    keys = CitationKeys()
    got = [keys.assign(record()) for _ in range(29)]
    assert got[26] == "goebel2021fibromyalgiaz"
    assert got[27:] == ["goebel2021fibromyalgiaaa", "goebel2021fibromyalgiaab"]
    assert len(set(got)) == 29


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"authors": ["Ødegård Ø"], "title": "The Über-study of pain"}, "odegard2021uber"),
        ({"authors": [], "published": None, "title": None}, "anonnduntitled"),
        ({"title": "<5 pg/mL of IL-6"}, "goebel2021pg"),
        ({"authors": ["Pain Study Group"]}, "painstudygroup2021fibromyalgia"),
    ],
)
def test_bibtex_key_fallbacks_and_folding(overrides: dict[str, Any], key: str) -> None:
    [(_, got, _)] = parse_bibtex(export("bibtex", [record(**overrides)])[1])
    assert got == key


def test_bibtex_empty_input_writes_nothing() -> None:
    out = io.StringIO()
    assert write_bibtex([], out) == 0
    assert out.getvalue() == ""


# --- Author names --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "family", "given", "suffix", "initials"),
    [
        ("Goebel A", "Goebel", "A", "", True),
        ("Andreas Goebel", "Goebel", "Andreas", "", False),
        ("Goebel, Andreas", "Goebel", "Andreas", "", False),
        ("Goebel, AB", "Goebel", "AB", "", True),
        ("van der Berg JM", "van der Berg", "JM", "", True),
        ("Ludwig van Beethoven", "van Beethoven", "Ludwig", "", False),
        ("Le Marchand L", "Le Marchand", "L", "", True),
        ("Smith JA Jr", "Smith", "JA", "Jr", True),
        ("Smith, John, III", "Smith", "John", "III", False),
        ("Müller-Ødegård K", "Müller-Ødegård", "K", "", True),
        ("Cher", "Cher", "", "", False),
        ("  Goebel \n A ", "Goebel", "A", "", True),
    ],
)
def test_parse_author(raw: str, family: str, given: str, suffix: str, initials: bool) -> None:
    name = parse_author(raw)
    assert (name.family, name.given, name.suffix, name.initials) == (
        family,
        given,
        suffix,
        initials,
    )
    assert not name.corporate


@pytest.mark.parametrize("raw", ["Pain Study Group", "EULAR Consortium", "FM Investigators"])
def test_parse_author_keeps_group_names_whole(raw: str) -> None:
    name = parse_author(raw)
    assert name.corporate and name.family == raw


# --- Real data -----------------------------------------------------------------------------


def europepmc_records() -> list[dict[str, Any]]:
    path = CORPUS / "apis" / "europepmc_search_1000results_cancer.json"
    if not path.exists():
        pytest.skip("corpus not available")
    results = json.loads(path.read_text(encoding="utf-8"))["resultList"]["result"]
    records = []
    for r in results:
        authors = r.get("authorString", "").rstrip(".")
        records.append(
            record(
                doi=r.get("doi"),
                pmid=r.get("pmid"),
                pmcid=r.get("pmcid"),
                title=r.get("title"),
                journal=r.get("journalTitle") or r.get("bookOrReportDetails", {}).get("publisher"),
                published=r.get("firstPublicationDate"),
                authors=authors.split(", ") if authors else [],
                abstract=None,
                publication_types=[r["pubType"]] if r.get("pubType") else [],
                sightings=[],
            )
        )
    return records


def test_europepmc_sample_exports_cleanly_in_every_format() -> None:
    records = europepmc_records()
    n = len(records)
    count, text = export("jsonl", records)
    assert count == n and [json.loads(line) for line in text.splitlines()] == records

    count, text = export("csv", records)
    rows = read_csv(text)
    assert count == len(rows) == n
    assert [r["doi"] for r in rows] == [rec["doi"] or "" for rec in records]

    count, text = export("ris", records)
    ris = parse_ris(text)
    assert count == len(ris) == n
    preprints = sum(
        "preprint" in (t.casefold() for t in rec["publication_types"]) for rec in records
    )
    assert preprints > 0
    assert sum(r["TY"] == ["UNPB"] for r in ris) == preprints
    pubmed_style = re.compile(r"^(\S.*) ([A-Z]{1,3})$")
    for rec, parsed in zip(records, ris, strict=True):
        expected = [
            f"{m.group(1)}, {m.group(2)}"
            for a in rec["authors"]
            if (m := pubmed_style.match(a)) and not re.search(r"(?i)group|consortium", a)
        ]
        assert [a for a in parsed.get("AU", []) if a in expected] == expected

    count, text = export("bibtex", records)
    entries = parse_bibtex(text)
    assert count == len(entries) == n
    keys = [key for _, key, _ in entries]
    assert len(set(keys)) == n
    assert all(re.fullmatch(r"[a-z0-9]+", key) for key in keys)
    for _, _, fields in entries:
        unlatex(fields["title"][1:-1])  # raises on any unescaped special character
        unlatex(fields.get("journal", fields.get("howpublished", "")))
