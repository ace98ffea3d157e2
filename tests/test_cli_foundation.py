"""The real ``litwatch`` CLI for the foundation commands: db, config, status, papers.

Most tests use click's CliRunner (in process, stdout and stderr apart); a few run the
command as a subprocess, as an operator or cron would.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import click
import pytest
from alembic import command
from click.testing import CliRunner, Result
from sqlalchemy import Engine, text

from crawler.cli.app import cli
from crawler.db import engine as engine_module
from crawler.db import meta
from crawler.db.engine import make_engine, table_names
from crawler.db.migrate import _config, head_revision
from crawler.db.store import upsert
from crawler.items import Paper
from crawler.settings import RESERVED_ENV

ROOT = Path(__file__).resolve().parents[1]
JCI_TITLE = "Passive transfer of fibromyalgia symptoms from patients to mice"
JCI_ABSTRACT = "Fibromyalgia syndrome is characterized by chronic widespread pain."
JSONL_FIELDS = {
    "doi", "pmid", "pmcid", "title", "journal", "published", "authors", "abstract",
    "topics", "publication_types", "first_seen", "sightings", "status", "events", "versions",
}  # fmt: skip
SMTP_SECRET = "smtp-secret-value-4711"

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

[[sources]]
id = "sciencedaily-fibromyalgia"
kind = "sciencedaily"
url = "https://www.sciencedaily.com/rss/health_medicine/fibromyalgia.xml"
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator's own LITWATCH_* variables must not leak into these tests."""
    for name in list(os.environ):
        if name.startswith("LITWATCH_") and name not in RESERVED_ENV:
            monkeypatch.delenv(name)
    monkeypatch.delenv("LITWATCH_CONFIG", raising=False)
    monkeypatch.delenv("LITWATCH_SMTP_PASSWORD", raising=False)


@pytest.fixture(autouse=True)
def dispose_cli_engines(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Close the engines that in-process CLI runs open.

    The CLI's App never disposes its engine (a real process exits instead); in one pytest
    process the pooled PostgreSQL connections would be garbage-collected while open and
    raise ResourceWarning. Reported as a product issue in crawler/cli/context.py.
    """
    created: list[Engine] = []

    def tracking(url: str, **kwargs: Any) -> Engine:
        eng = make_engine(url, **kwargs)
        created.append(eng)
        return eng

    monkeypatch.setattr(engine_module, "make_engine", tracking)
    yield
    for eng in created:
        eng.dispose()


def write_config(tmp_path: Path, url: str, extra: str = "") -> Path:
    path = tmp_path / "litwatch.toml"
    path.write_text(CONFIG.format(url=url, outbox=tmp_path / "outbox") + extra, encoding="utf-8")
    return path


def run(config: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    """Invoke ``litwatch --config CONFIG ARGS`` in process."""
    return CliRunner().invoke(cli, ["--config", str(config), *args], env=env)


def one_line_error(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("litwatch: ")
    return lines[0]


def url_of(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


# --- papers in the database ----------------------------------------------------------------------

JAN = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
MAR = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


def seed(engine: Engine) -> None:
    """The JCI paper seen twice (news, then PubMed) and a PubMed-only autoimmunity paper."""
    upsert(
        engine,
        [
            Paper(
                source_id="sciencedaily-fibromyalgia",
                origin="news",
                url="https://www.sciencedaily.com/releases/2021/07/210701.htm",
                sighting_kind="news",
                doi="10.1172/JCI144201",
                title=JCI_TITLE,
                topics=["fibromyalgia"],
            )
        ],
        now=JAN,
    )
    upsert(
        engine,
        [
            Paper(
                source_id="pubmed-fibromyalgia",
                origin="pubmed",
                url="https://pubmed.ncbi.nlm.nih.gov/34196305/",
                doi="doi:10.1172/jci144201",
                pmid="34196305",
                pmcid="PMC8249213",
                title=JCI_TITLE,
                abstract=JCI_ABSTRACT,
                journal="The Journal of clinical investigation",
                published=date(2021, 7, 1),
                authors=["Goebel A", "Krock E"],
                publication_types=["Journal Article"],
                topics=["fibromyalgia", "autoimmunity"],
            ),
            Paper(
                source_id="pubmed-fibromyalgia",
                origin="pubmed",
                url="https://pubmed.ncbi.nlm.nih.gov/30000001/",
                pmid="30000001",
                title="Autoantibodies against satellite glial cells in chronic pain",
                published=date(2026, 2, 1),
                topics=["autoimmunity"],
            ),
        ],
        now=MAR,
    )


@pytest.fixture
def seeded(engine: Engine, tmp_path: Path) -> Iterator[tuple[Engine, Path]]:
    seed(engine)
    yield engine, write_config(tmp_path, url_of(engine))


# --- db ------------------------------------------------------------------------------------------


def test_db_upgrade_twice_and_current(db_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, db_url)
    first = run(config, "db", "upgrade")
    assert first.exit_code == 0, first.output
    assert f"-> {head_revision()}" in first.stdout
    second = run(config, "db", "upgrade")
    assert second.exit_code == 0, second.output
    assert f"already at revision {head_revision()}" in second.stdout
    current = run(config, "db", "current")
    assert current.exit_code == 0
    assert "up to date" in current.stdout and head_revision() in current.stdout


def test_db_current_on_empty_database(db_url: str, tmp_path: Path) -> None:
    # Issue 12, B9: a schema that is missing (or behind) is not "current": exit 2.
    result = run(write_config(tmp_path, db_url), "db", "current")
    assert result.exit_code == 2
    assert "litwatch db upgrade" in result.stdout
    assert "(none)" in result.stdout or "no database yet" in result.stdout
    assert not (tmp_path / "litwatch-test.db").exists()  # SQLite: nothing created
    if db_url.startswith("postgresql"):
        engine = make_engine(db_url)
        try:
            assert table_names(engine) == []
        finally:
            engine.dispose()


def test_db_current_on_an_older_revision_exits_2(engine: Engine, tmp_path: Path) -> None:
    cfg = _config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.stamp(cfg, "base")
    result = run(write_config(tmp_path, url_of(engine)), "db", "current")
    assert result.exit_code == 2 and "behind: run `litwatch db upgrade`" in result.stdout


READ_ONLY = (
    ["status", "--json"],
    ["papers", "list"],
    ["papers", "show", "10.1172/JCI144201"],
    ["papers", "export", "--format", "csv"],
    ["subscribers", "list"],
)


def test_read_only_commands_never_create_a_database(db_url: str, tmp_path: Path) -> None:
    """Issue 12, B9: they say what to run, exit 2, and leave the database as it was."""
    config = write_config(tmp_path, db_url)
    for args in READ_ONLY:
        result = run(config, *args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stdout == ""
        assert "run `litwatch db upgrade`" in one_line_error(result), args
    assert run(config, "config", "show").exit_code == 0  # needs no database at all
    assert not (tmp_path / "litwatch-test.db").exists()
    if db_url.startswith("postgresql"):
        engine = make_engine(db_url)
        try:
            assert table_names(engine) == []
        finally:
            engine.dispose()
    # A command that writes sets the new database up, and says so.
    added = run(config, "subscribers", "add", "ada@example.org")
    assert added.exit_code == 0, added.output
    assert f"event=db.schema_created database={db_url.split('://')[0]}" in added.stderr
    assert f"revision={head_revision()}" in added.stderr
    for args in READ_ONLY:
        assert run(config, *args).exit_code in (0, 1), args  # 1: no paper matches


def test_older_revision_asks_for_upgrade(engine: Engine, tmp_path: Path) -> None:
    cfg = _config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.stamp(cfg, "base")  # the tables stay, the recorded revision goes back
    config = write_config(tmp_path, url_of(engine))
    for args in (["status"], ["papers", "list"], ["papers", "export"]):
        result = run(config, *args)
        assert result.exit_code == 1, args
        assert result.stdout == ""
        assert "run `litwatch db upgrade`" in one_line_error(result)


def test_revision_from_a_newer_litwatch(engine: Engine, tmp_path: Path) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'ffff_future'"))
    config = write_config(tmp_path, url_of(engine))
    for args in (["status"], ["db", "upgrade"]):
        result = run(config, *args)
        assert result.exit_code == 1
        line = one_line_error(result)
        assert "ffff_future" in line and "newer" in line


def test_unknown_target_revision(sqlite_url: str, tmp_path: Path) -> None:
    result = run(write_config(tmp_path, sqlite_url), "db", "upgrade", "--revision", "nope")
    assert result.exit_code == 1
    assert "nope" in one_line_error(result)


def test_locked_sqlite_database(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path, sqlite_url)
    assert run(config, "db", "upgrade").exit_code == 0
    # Another process in the middle of a long write; wait 1 s for it, not 30.
    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_S", 1)
    holder = sqlite3.connect(tmp_path / "litwatch-test.db", isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        result = run(config, "papers", "export")
        assert result.exit_code == 1, result.output
        assert "database is locked" in one_line_error(result)
        # status reads without SQLAlchemy's write-ready transaction: WAL lets it read while
        # another process writes, so monitoring answers during a long write.
        assert run(config, "status").exit_code == 0
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert run(config, "status").exit_code == 0


# --- config --------------------------------------------------------------------------------------


def test_config_show_is_valid_toml_with_secrets_masked(tmp_path: Path) -> None:
    url = "postgresql+psycopg://litwatch:db-password-123@db.example.org/litwatch"
    config = write_config(tmp_path, url)
    result = run(config, "config", "show", env={"LITWATCH_SMTP_PASSWORD": SMTP_SECRET})
    assert result.exit_code == 0, result.output
    data = tomllib.loads(result.stdout)
    assert data["database"]["url"] == "postgresql+psycopg://litwatch:***@db.example.org/litwatch"
    assert [s["id"] for s in data["sources"]] == [
        "pubmed-fibromyalgia",
        "sciencedaily-fibromyalgia",
    ]
    assert data["email"]["smtp"]["port"] == 587
    assert data["secrets"]["LITWATCH_SMTP_PASSWORD"] == "set (hidden)"
    assert "db-password-123" not in result.output and SMTP_SECRET not in result.output


def test_config_show_json(tmp_path: Path) -> None:
    config = write_config(tmp_path, "sqlite:///x.db")
    result = run(
        config, "config", "show", "--json", env={"LITWATCH_EMAIL_SMTP_HOST": "mail.example.org"}
    )
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["email"]["smtp"]["host"] == "mail.example.org"
    assert data["digest"]["cron"] == "0 7 * * mon"
    assert set(data["topics"]) == {"fibromyalgia", "autoimmunity"}


@pytest.mark.parametrize(
    "args",
    [["config", "show"], ["status"], ["db", "upgrade"], ["papers", "list"], ["papers", "export"]],
)
def test_config_error_exits_2_with_one_line(tmp_path: Path, args: list[str]) -> None:
    config = write_config(tmp_path, "sqlite:///x.db", extra="\n[digest]\ncron = 'weekly'\n")
    result = run(config, *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    line = one_line_error(result)
    assert str(config) in line and "digest.cron" in line


def test_env_config_error_exits_2(tmp_path: Path) -> None:
    config = write_config(tmp_path, "sqlite:///x.db")
    result = run(config, "config", "show", env={"LITWATCH_DATABASE_ULR": "x"})
    assert result.exit_code == 2
    assert "LITWATCH_DATABASE_ULR" in one_line_error(result)


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = run(tmp_path / "absent.toml", "status")
    assert result.exit_code == 2
    assert "absent.toml" in one_line_error(result)


# --- status --------------------------------------------------------------------------------------


def test_status(seeded: tuple[Engine, Path]) -> None:
    _, config = seeded
    result = run(config, "status")
    assert result.exit_code == 0, result.output
    assert "pubmed-fibromyalgia" in result.stdout and "sciencedaily-fibromyalgia" in result.stdout
    assert "2 papers (1 with DOI), 3 sightings" in result.stdout


def test_status_json(seeded: tuple[Engine, Path]) -> None:
    _, config = seeded
    result = run(config, "status", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [s["id"] for s in data["sources"]] == [
        "pubmed-fibromyalgia",
        "sciencedaily-fibromyalgia",
    ]
    db = data["database"]
    assert (db["papers"], db["with_doi"], db["sightings"]) == (2, 1, 3)
    assert db["by_topic"] == {"fibromyalgia": 1, "autoimmunity": 2}
    assert data["daemon"]["running"] is False


def test_status_on_fresh_database_changes_nothing(sqlite_url: str, tmp_path: Path) -> None:
    """Read-only commands never create or migrate a database: they say what to run."""
    config = write_config(tmp_path, sqlite_url)
    for args in (["status", "--json"], ["papers", "list"]):
        result = run(config, *args)
        assert result.exit_code == 2, result.output
        assert "run `litwatch db upgrade`" in one_line_error(result)
    assert not (tmp_path / "litwatch-test.db").exists()
    assert run(config, "db", "upgrade").exit_code == 0
    result = run(config, "status", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["database"]["papers"] == 0


def test_status_prints_deliveries_as_text(seeded: tuple[Engine, Path]) -> None:
    engine, config = seeded
    _delivery(engine, "ada@example.org", date(2026, 3, 2), "sent")
    _delivery(engine, "bob@example.org", date(2026, 3, 2), "failed")
    result = run(config, "status")
    assert result.exit_code == 0, result.output
    [line] = [ln for ln in result.stdout.splitlines() if "Deliveries:" in ln]
    assert line.endswith("Deliveries: 1 sent, 0 pending, 1 failed, 0 with unknown outcome")


def _delivery(engine: Engine, email: str, period: date, state: str, attempts: int = 1) -> None:
    """A subscriber with one delivery in ``state`` (plain SQL: what a send would leave)."""
    with engine.begin() as conn:
        sub_id = conn.execute(
            text(
                "INSERT INTO subscribers (email, email_key, topics, format, timezone, token, "
                "status, created_at, updates) VALUES (:e, :e, '[]', 'html', 'UTC', :e, "
                "'active', :now, true) RETURNING id"
            ),
            {"e": email, "now": MAR},
        ).scalar_one()
        conn.execute(
            text(
                "INSERT INTO deliveries (subscriber_id, period, cutoff, state, attempts, "
                "message_id, paper_count, created_at, last_error) VALUES (:s, :p, :now, :st, "
                ":a, :m, 1, :now, :err)"
            ),
            {
                "s": sub_id,
                "p": period,
                "now": MAR,
                "st": state,
                "a": attempts,
                "m": f"<{email}>",
                "err": None if state == "sent" else "550 5.1.1 mailbox unavailable",
            },
        )


def test_status_check_reports_each_problem_on_one_line(seeded: tuple[Engine, Path]) -> None:
    engine, config = seeded
    ok = run(config, "status", "--check")
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.splitlines() == [
        "OK: 2 sources polling, no daemon expected, no failing deliveries, "
        "bounce and complaint rates within limits"
    ]

    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO sources (id, kind, consecutive_failures, last_error, runs, "
                "items_seen, items_new, items_skipped) VALUES ('pubmed-fibromyalgia', 'pubmed', "
                "3, :err, 3, 0, 0, 0)"
            ),
            {"err": "DNS lookup failed for eutils.ncbi.nlm.nih.gov\nmore detail"},
        )
    meta.write_daemon_record(engine, {"running": True, "pid": 4242, "host": "box"})
    _delivery(engine, "old@example.org", date(2026, 2, 23), "failed")  # an earlier week
    _delivery(engine, "ada@example.org", date(2026, 3, 2), "sent")
    _delivery(engine, "bob@example.org", date(2026, 3, 2), "failed")
    _delivery(engine, "eve@example.org", date(2026, 3, 1), "unknown")

    result = run(config, "status", "--check")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "source pubmed-fibromyalgia: failed its last 3 polls "
        "(DNS lookup failed for eutils.ncbi.nlm.nih.gov)",
        "daemon: not running (ended without a clean stop; last heartbeat at an unknown time)",
        "deliveries: 1 of the digest of 2026-03-02 failed "
        "(`litwatch digest send --retry-failed` tries them again)",
        "deliveries: 1 of the digest of 2026-03-02 have an unknown outcome "
        "(handed to the server, not recorded)",
    ]
    # N is configurable; a daemon stopped cleanly is still down while expected.
    meta.write_daemon_record(engine, {"running": False, "stopped_at": "2026-03-02T08:00:00+00:00"})
    lines = run(config, "status", "--check", "--failed-polls", "4").stdout.splitlines()
    assert lines[0] == "daemon: not running (stopped 2026-03-02 08:00:00 UTC)"
    assert len(lines) == 3


# --- papers --------------------------------------------------------------------------------------


def export(config: Path, *args: str) -> Result:
    result = run(config, "papers", "export", *args)
    assert result.exit_code == 0, result.output
    return result


def jsonl(result: Result) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_export_jsonl_contract(seeded: tuple[Engine, Path]) -> None:
    _, config = seeded
    result = export(config)
    assert result.stdout.endswith("\n")
    records = jsonl(result)
    assert len(records) == 2
    for rec in records:
        assert set(rec) == JSONL_FIELDS
        for s in rec["sightings"]:
            assert set(s) == {"source", "kind", "url", "seen_at"}
    jci = next(r for r in records if r["pmid"] == "34196305")
    assert jci["doi"] == "10.1172/jci144201"
    assert jci["pmcid"] == "PMC8249213"
    assert jci["title"] == JCI_TITLE
    assert jci["abstract"] == JCI_ABSTRACT
    assert jci["journal"] == "The Journal of clinical investigation"
    assert jci["published"] == "2021-07-01"
    assert jci["authors"] == ["Goebel A", "Krock E"]
    assert sorted(jci["topics"]) == ["autoimmunity", "fibromyalgia"]
    assert jci["publication_types"] == ["Journal Article"]
    assert datetime.fromisoformat(jci["first_seen"]) == JAN
    assert sorted((s["source"], s["kind"]) for s in jci["sightings"]) == [
        ("pubmed-fibromyalgia", "article"),
        ("sciencedaily-fibromyalgia", "news"),
    ]
    seen = {s["source"]: datetime.fromisoformat(s["seen_at"]) for s in jci["sightings"]}
    assert seen == {"sciencedaily-fibromyalgia": JAN, "pubmed-fibromyalgia": MAR}
    other = next(r for r in records if r["pmid"] == "30000001")
    assert other["doi"] is None and other["authors"] == [] and other["abstract"] is None
    assert "exported 2 papers" in result.stderr


def test_export_filters(seeded: tuple[Engine, Path]) -> None:
    _, config = seeded
    assert [r["pmid"] for r in jsonl(export(config, "--since", "2026-02-01"))] == ["30000001"]
    assert len(jsonl(export(config, "--since", "2026-01-05"))) == 2
    assert [r["pmid"] for r in jsonl(export(config, "--topic", "fibromyalgia"))] == ["34196305"]
    by_source = jsonl(export(config, "--source", "sciencedaily-fibromyalgia"))
    assert [r["pmid"] for r in by_source] == ["34196305"]
    assert export(config, "--source", "nowhere").stdout == ""


def test_export_unknown_topic_is_usage_error(seeded: tuple[Engine, Path]) -> None:
    _, config = seeded
    result = run(config, "papers", "export", "--topic", "astrology")
    assert result.exit_code == 2
    assert "astrology" in one_line_error(result)


def test_export_empty_database_prints_nothing(engine: Engine, tmp_path: Path) -> None:
    config = write_config(tmp_path, url_of(engine))
    for fmt in ("jsonl", "ris", "bibtex"):
        result = export(config, "--format", fmt)
        assert result.stdout == "", fmt
        assert "exported 0 papers" in result.stderr


def test_export_csv(seeded: tuple[Engine, Path]) -> None:
    _, config = seeded
    rows = list(csv.DictReader(io.StringIO(export(config, "--format", "csv").stdout)))
    assert len(rows) == 2
    jci = next(r for r in rows if r["pmid"] == "34196305")
    assert jci["doi"] == "10.1172/jci144201" and jci["title"] == JCI_TITLE
    assert jci["sighting_count"] == "2"


def test_export_ris(seeded: tuple[Engine, Path]) -> None:
    _, config = seeded
    out = export(config, "--format", "ris").stdout
    records = [r for r in out.split("ER  - ") if r.strip()]
    assert len(records) == 2
    for rec in records:
        assert rec.lstrip().startswith("TY  - JOUR")
    assert "DO  - 10.1172/jci144201" in out
    assert f"TI  - {JCI_TITLE}" in out
    assert "AN  - 30000001" in out


def test_export_bibtex(seeded: tuple[Engine, Path]) -> None:
    _, config = seeded
    out = export(config, "--format", "bibtex").stdout
    assert out.count("@article{") == 2
    assert "10.1172/jci144201" in out
    assert out.count("{") == out.count("}")


def test_export_and_list_span_several_chunks(engine: Engine, tmp_path: Path) -> None:
    """More papers than one query chunk (500): none lost, none repeated, children right."""
    n = 1100
    items = [
        Paper(
            source_id="pubmed-fibromyalgia",
            origin="pubmed",
            url=f"https://pubmed.ncbi.nlm.nih.gov/{20_000_000 + i}/",
            pmid=str(20_000_000 + i),
            title=f"Chunked export paper number {i} about fibromyalgia",
            topics=["fibromyalgia"],
        )
        for i in range(n)
    ]
    upsert(engine, items)
    config = write_config(tmp_path, url_of(engine))
    records = jsonl(export(config))
    assert sorted(int(r["pmid"]) for r in records) == [20_000_000 + i for i in range(n)]
    for rec in records:
        assert rec["topics"] == ["fibromyalgia"]
        (sighting,) = rec["sightings"]
        assert sighting["url"].endswith(f"/{rec['pmid']}/")
    listing = run(config, "papers", "list", "--limit", str(n + 5))
    assert listing.exit_code == 0 and f"{n} papers" in listing.stdout


def test_papers_list(seeded: tuple[Engine, Path]) -> None:
    _, config = seeded
    result = run(config, "papers", "list")
    assert result.exit_code == 0, result.output
    assert "2 papers" in result.stdout
    listing = result.stdout.lower()  # the DOI as displayed: its case is the source's
    assert "10.1172/jci144201" in listing and "pmid 30000001" in listing
    # Newest first: the March paper is listed before the January one.
    assert listing.index("30000001") < listing.index("10.1172/jci144201")
    only = run(config, "papers", "list", "--topic", "fibromyalgia")
    assert "1 papers" in only.stdout and "30000001" not in only.stdout
    since = run(config, "papers", "list", "--since", "2026-02-01", "--limit", "5")
    assert "1 papers" in since.stdout and "jci144201" not in since.stdout.lower()


@pytest.mark.parametrize(
    "ident",
    ["https://doi.org/10.1172/JCI144201", "doi:10.1172/jci144201", "34196305", "PMC8249213"],
)
def test_papers_show(seeded: tuple[Engine, Path], ident: str) -> None:
    _, config = seeded
    result = run(config, "papers", "show", ident)
    assert result.exit_code == 0, result.output
    assert JCI_TITLE in result.stdout
    assert "Seen 2 time(s)" in result.stdout
    assert "sciencedaily-fibromyalgia" in result.stdout


def test_papers_show_json_matches_export(seeded: tuple[Engine, Path]) -> None:
    _, config = seeded
    shown = json.loads(run(config, "papers", "show", "--json", "PMID: 30000001").stdout)
    exported = [r for r in jsonl(export(config)) if r["pmid"] == "30000001"]
    assert [shown] == exported


def test_papers_show_unknown(seeded: tuple[Engine, Path]) -> None:
    _, config = seeded
    result = run(config, "papers", "show", "10.9999/none")
    assert result.exit_code == 1
    assert "no paper matches" in one_line_error(result)


# --- help ----------------------------------------------------------------------------------------


def _walk(cmd: click.Command, path: list[str]) -> Iterator[tuple[list[str], click.Command]]:
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            yield from _walk(sub, [*path, name])


COMMANDS = list(_walk(cli, []))


def test_walk_finds_the_foundation_commands() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    expected = {"", "db", "db upgrade", "db current", "config show", "status", "papers export"}
    assert expected <= names
    assert {"papers list", "papers show"} <= names


@pytest.mark.parametrize(
    ("path", "cmd"), COMMANDS, ids=[" ".join(p) or "litwatch" for p, _ in COMMANDS]
)
def test_every_command_has_help_with_an_example(path: list[str], cmd: click.Command) -> None:
    assert cmd.help and "Example" in cmd.help, f"`litwatch {' '.join(path)}` lacks an example"
    assert cmd.short_help or cmd.help.strip().splitlines()[0]
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.stdout
    assert "litwatch" in result.stdout


# --- as a real process ---------------------------------------------------------------------------


def _litwatch(*args: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LITWATCH_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "crawler.cli", *args],
        capture_output=True,
        cwd=cwd,
        env=env,
        timeout=120,
        check=False,
    )


def test_subprocess_upgrade_export_and_config_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'cli.db'}")
    first = _litwatch("--config", str(config), "db", "upgrade", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    again = _litwatch("--config", str(config), "db", "upgrade", cwd=tmp_path)
    assert again.returncode == 0 and b"already at revision" in again.stdout
    empty = _litwatch("--config", str(config), "papers", "export", cwd=tmp_path)
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout == b""
    bad = tmp_path / "bad.toml"
    bad.write_text("[database]\nurl = 'sqlite:///x.db'\nurll = 1\n", encoding="utf-8")
    error = _litwatch("--config", str(bad), "status", cwd=tmp_path)
    assert error.returncode == 2
    assert error.stdout == b""
    assert error.stderr.decode().splitlines() == [
        f"litwatch: config error in {bad}: database.urll: unknown key"
    ]


def test_subprocess_fresh_machine_defaults(tmp_path: Path) -> None:
    """No config at all: built-in defaults, a SQLite file in the working directory."""
    result = _litwatch("status", "--json", cwd=tmp_path)
    assert result.returncode == 2 and b"run `litwatch db upgrade`" in result.stderr
    assert not (tmp_path / "litwatch.db").exists()
    assert _litwatch("db", "upgrade", cwd=tmp_path).returncode == 0
    result = _litwatch("status", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["database"]["papers"] == 0
    assert (tmp_path / "litwatch.db").is_file()
