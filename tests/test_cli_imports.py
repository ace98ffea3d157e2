"""The CLI starts in a blink: a command imports what it needs when it runs.

``--help`` and the read-only commands import neither Scrapy nor Twisted nor the web stack;
only ``crawl``/``run`` import Scrapy and only ``web``/``run --web`` the web stack. Each case
runs the real CLI in a fresh interpreter and reads ``sys.modules`` when the command is done.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from crawler.cli import subscriber_cmds
from crawler.db.migrate import HEAD, alembic_head
from digests import subscribers
from tests.support.config import write_toml

# Runs the CLI in this interpreter, then prints the top-level packages it imported.
_PROBE = """
import json, sys
from crawler.cli.app import cli
try:
    cli(sys.argv[1:], prog_name="litwatch")
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print(json.dumps({"code": code, "modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""

SCRAPY = {"scrapy", "twisted"}
WEB = {"starlette", "uvicorn"}
HEAVY_FOR_HELP = SCRAPY | WEB | {"sqlalchemy", "pydantic", "alembic", "jinja2", "feedparser"}


def imported(tmp_path: Path, *args: str) -> set[str]:
    config = tmp_path / "litwatch.toml"
    if not config.exists():
        write_toml(config, {"database": {"url": f"sqlite:///{tmp_path / 'lw.db'}"}})
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    last = proc.stdout.strip().splitlines()[-1]
    result = json.loads(last)
    assert result["code"] in (0, None), proc.stdout + proc.stderr
    return set(result["modules"])


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        ("papers", "--help"),
        ("crawl", "--help"),
        ("digest", "send", "--help"),
        ("subscribers", "add", "--help"),
        ("run", "--help"),
        ("web", "--help"),
    ],
    ids=lambda a: " ".join(a),
)
def test_help_imports_nothing_heavy(tmp_path: Path, args: tuple[str, ...]) -> None:
    assert imported(tmp_path, *args) & HEAVY_FOR_HELP == set()


@pytest.mark.parametrize(
    "args",
    [
        ("config", "show"),
        ("db", "current"),
        ("status",),
        ("papers", "list"),
        ("papers", "show", "#1"),
        ("subscribers", "list"),
    ],
    ids=lambda a: " ".join(a),
)
def test_read_only_commands_import_neither_scrapy_nor_the_web_stack(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    if args[:2] == ("papers", "show"):
        imported(tmp_path, "db", "upgrade")
        mods = imported_allowing_failure(tmp_path, *args)
    else:
        imported(tmp_path, "db", "upgrade")
        mods = imported(tmp_path, *args)
    assert mods & (SCRAPY | WEB) == set()


def imported_allowing_failure(tmp_path: Path, *args: str) -> set[str]:
    """As :func:`imported`, for a command that exits non-zero here (no such paper)."""
    config = tmp_path / "litwatch.toml"
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return set(json.loads(proc.stdout.strip().splitlines()[-1])["modules"])


def test_crawl_imports_scrapy_and_not_the_web_stack(tmp_path: Path) -> None:
    write_toml(
        tmp_path / "litwatch.toml",
        {"database": {"url": f"sqlite:///{tmp_path / 'lw.db'}"}},
        [{"id": "f", "kind": "feed", "url": "http://127.0.0.1:9/feed", "enabled": False}],
    )
    mods = imported_allowing_failure(tmp_path, "crawl", "f", "--no-progress")
    assert "scrapy" in mods and "twisted" in mods
    assert mods & WEB == set()


def test_the_probe_sees_what_a_command_imports_lazily(tmp_path: Path) -> None:
    """The rule's own check: imports made inside a command are seen."""
    imported(tmp_path, "db", "upgrade")
    mods = imported(tmp_path, "digest", "preview", "--text")
    assert {"jinja2", "sqlalchemy", "pydantic"} <= mods


def test_cli_format_choices_match_the_subscriber_module() -> None:
    assert subscriber_cmds.FORMATS == subscribers.FORMATS


def test_head_constant_matches_alembic() -> None:
    assert alembic_head() == HEAD


def test_migration_file_names_start_with_their_revision() -> None:
    """crawler.db.reader knows the revisions by file name, without Alembic."""
    from crawler.db.reader import known_revisions

    folder = Path(__file__).resolve().parents[1] / "crawler" / "db" / "migrations" / "versions"
    for path in folder.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert f"revision = '{path.name.split('_', 1)[0]}'" in text, path.name
    assert HEAD in known_revisions()


def test_the_cli_knows_every_export_format() -> None:
    from crawler.cli.papers_cmds import FORMATS as CLI_FORMATS
    from crawler.export import FORMATS

    assert CLI_FORMATS == FORMATS


def test_the_shipped_digest_schedule_is_valid_for_the_daemon() -> None:
    from crawler.schedule import digest_trigger
    from crawler.settings_model import DEFAULT_CRON

    assert digest_trigger(DEFAULT_CRON, "UTC") is not None
