"""``litwatch papers export`` end to end: CSV for Excel, and papers only (no press coverage)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine

from crawler.cli.app import cli
from crawler.db.store import upsert
from crawler.items import Paper
from tests.support.db import migrated_engine

WHEN = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
STORY = "https://www.sciencedaily.com/releases/2026/03/260301.htm"
CONFIG = """
[database]
url = "{url}"

[email]
outbox_dir = "{outbox}"

[[sources]]
id = "pubmed-fibromyalgia"
kind = "pubmed"
query = "fibromyalgia[tiab]"
topics = ["fibromyalgia"]
"""


@pytest.fixture
def config(tmp_path: Path) -> Iterator[Path]:
    """A configuration over a SQLite database holding one paper and one legacy news row."""
    url = f"sqlite:///{tmp_path / 'export.db'}"
    engine = migrated_engine(url)
    seed(engine)
    engine.dispose()
    path = tmp_path / "litwatch.toml"
    path.write_text(CONFIG.format(url=url, outbox=tmp_path / "outbox"), encoding="utf-8")
    yield path


def seed(engine: Engine) -> None:
    upsert(
        engine,
        [
            Paper(
                source_id="pubmed-fibromyalgia",
                origin="pubmed",
                url="https://pubmed.ncbi.nlm.nih.gov/30000001/",
                pmid="30000001",
                title="Pain -- a Müller study",
                authors=["Müller-Ødegård K"],
                published=date(2026, 2, 1),
                topics=["fibromyalgia"],
            ),
            # What versions before issue 12 stored for a story naming no paper.
            Paper(
                source_id="sciencedaily-fibromyalgia",
                origin="news",
                url=STORY,
                sighting_kind="news",
                seen_title="Pain study makes headlines",
                topics=["fibromyalgia"],
            ),
        ],
        now=WHEN,
    )


def run(config: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), "papers", "export", *args])


def test_csv_for_excel_is_utf8_with_bom(config: Path) -> None:
    result = run(config, "--format", "csv", "--excel")
    assert result.exit_code == 0, result.output
    raw = result.stdout_bytes
    assert raw.startswith(b"\xef\xbb\xbf")
    assert not raw[3:].startswith(b"\xef\xbb\xbf")  # once
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    assert rows[0]["authors"] == "Müller-Ødegård K"
    plain = run(config, "--format", "csv")
    assert plain.exit_code == 0 and not plain.stdout_bytes.startswith(b"\xef\xbb\xbf")


def test_excel_flag_needs_csv(config: Path) -> None:
    result = run(config, "--format", "ris", "--excel")
    assert result.exit_code == 2
    assert "--excel applies to --format csv only" in result.stderr


def test_exports_hold_papers_only(config: Path) -> None:
    """A news story stored as a nameless paper by an older version is not exported."""
    for fmt in ("jsonl", "csv", "ris", "bibtex"):
        result = run(config, "--format", fmt)
        assert result.exit_code == 0, result.output
        assert "exported 1 papers" in result.stderr, fmt
        assert STORY not in result.stdout and "untitled" not in result.stdout, fmt
