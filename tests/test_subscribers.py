"""Subscribers through the real ``litwatch subscribers`` commands, and the signed link tokens."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, select

from crawler.cli.app import cli
from crawler.db.engine import make_engine, transaction
from crawler.db.models import Meta, Subscriber
from digests import subscribers as subs
from digests.tokens import CONFIRM, PREFERENCES, UNSUBSCRIBE, Signer, TokenError, secret_key
from tests.test_digest_send import base_sections, write_config


@pytest.fixture(autouse=True)
def _forget_cli_logging() -> Iterator[None]:
    """The CLI attaches a handler to the root logger on CliRunner's (then closed) stderr."""
    yield
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_litwatch", False):
            root.removeHandler(handler)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    db_url = f"sqlite:///{tmp_path / 'litwatch.db'}"
    return write_config(tmp_path / "litwatch.toml", db_url, base_sections(tmp_path / "outbox"))


def litwatch(config: Path, *args: str) -> Result:
    """Run ``litwatch --config CONFIG ARGS`` in-process, with no LITWATCH_* from outside."""
    runner = CliRunner()
    env: dict[str, str | None] = {"LITWATCH_CONFIG": None, "LITWATCH_DATABASE_URL": None}
    return runner.invoke(cli, ["--config", str(config), *args], env=env, catch_exceptions=False)


def listed(config: Path, *flags: str) -> dict[str, dict[str, Any]]:
    result = litwatch(config, "subscribers", "list", "--json", *flags)
    assert result.exit_code == 0, result.output
    return {row["email"]: row for row in map(json.loads, result.stdout.splitlines())}


def engine_of(config: Path) -> Engine:
    return make_engine(f"sqlite:///{config.parent / 'litwatch.db'}")


# --- add, list, remove ------------------------------------------------------------------------


def test_add_list_and_remove(config: Path) -> None:
    added = litwatch(
        config,
        "subscribers",
        "add",
        "Ada@Example.org",
        "--name",
        "Ada",
        "--topics",
        "fibromyalgia",
        "--format",
        "text",
        "--timezone",
        "Europe/Oslo",
    )
    assert added.exit_code == 0, added.output
    assert "added Ada@example.org (fibromyalgia; text; Europe/Oslo)" in added.stdout
    assert litwatch(config, "subscribers", "add", "bob@example.org").exit_code == 0

    rows = listed(config)
    assert set(rows) == {"Ada@example.org", "bob@example.org"}
    ada = rows["Ada@example.org"]
    assert (ada["name"], ada["topics"], ada["format"], ada["timezone"], ada["status"]) == (
        "Ada",
        ["fibromyalgia"],
        "text",
        "Europe/Oslo",
        "active",
    )
    # Defaults: every configured topic, HTML, UTC.
    bob = rows["bob@example.org"]
    assert (set(bob["topics"]), bob["format"], bob["timezone"]) == (
        {"fibromyalgia", "autoimmunity"},
        "html",
        "UTC",
    )

    removed = litwatch(config, "subscribers", "remove", "ADA@example.ORG")
    assert removed.exit_code == 0 and "unsubscribed Ada@example.org" in removed.stdout
    assert set(listed(config)) == {"bob@example.org"}
    assert listed(config, "--all")["Ada@example.org"]["status"] == "unsubscribed"
    again = litwatch(config, "subscribers", "remove", "ada@example.org")
    assert again.exit_code == 0 and "already unsubscribed" in again.stdout

    missing = litwatch(config, "subscribers", "remove", "nobody@example.org")
    assert missing.exit_code == 1 and "nobody@example.org is not a subscriber" in missing.stderr

    purged = litwatch(config, "subscribers", "remove", "--purge", "bob@example.org")
    assert purged.exit_code == 0
    assert "bob@example.org" not in listed(config, "--all")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["not-an-address"], "invalid e-mail address"),
        (["ada@"], "invalid e-mail address"),
        (["ada@example.org\r\nBcc: x@example.org"], "line break"),
        (["ada@example.org", "--topics", "astrology"], "unknown topic(s) astrology"),
        (["ada@example.org", "--timezone", "Mars/Olympus_Mons"], "unknown time zone"),
    ],
)
def test_add_refuses_invalid_data(config: Path, args: list[str], message: str) -> None:
    result = litwatch(config, "subscribers", "add", *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert listed(config, "--all") == {}


def test_validation_does_no_dns_lookups() -> None:
    # No resolver answers in the test sandbox: a deliverability check would fail or hang.
    address, key = subs.normalise_email("Someone@No-Such-Host-Litwatch-4711.org")
    assert (address, key) == (
        "Someone@no-such-host-litwatch-4711.org",
        "someone@no-such-host-litwatch-4711.org",
    )


def test_duplicates_by_case_folded_address_are_refused(config: Path) -> None:
    assert litwatch(config, "subscribers", "add", "Straße@example.org").exit_code == 0
    for variant in ("straße@EXAMPLE.org", "STRASSE@example.org"):
        result = litwatch(config, "subscribers", "add", variant)
        assert result.exit_code == 2, variant
        assert "already a subscriber" in result.stderr
    assert list(listed(config)) == ["Straße@example.org"]


def test_a_name_is_one_line(config: Path) -> None:
    result = litwatch(
        config, "subscribers", "add", "eve@example.org", "--name", "Eve\r\nBcc: x@example.org\t"
    )
    assert result.exit_code == 0
    assert listed(config)["eve@example.org"]["name"] == "Eve Bcc: x@example.org"


# --- CSV import ---------------------------------------------------------------------------------

CSV = """\
email,name,topics,format,timezone
ada@example.org,Ada,fibromyalgia;autoimmunity,html,Europe/Oslo
BOB@example.org,Bob,autoimmunity,text,
not-an-address,X,,,
carol@example.org,,astrology,,
dave@example.org,,,html,Mars/Base
bob@EXAMPLE.org,Bobby,,,
erin@example.org,,,pdf,
gone@example.org,Gone Again,,,
"""


def import_csv(config: Path, text: str, name: str = "people.csv") -> Result:
    path = config.parent / name
    path.write_text(text, encoding="utf-8")
    return litwatch(config, "subscribers", "import", str(path))


def test_import_reports_added_updated_rejected_with_line_numbers(config: Path) -> None:
    assert litwatch(config, "subscribers", "add", "gone@example.org").exit_code == 0
    assert litwatch(config, "subscribers", "remove", "gone@example.org").exit_code == 0

    first = import_csv(config, CSV)

    assert first.exit_code == 1  # some rows were rejected
    assert "2 added, 0 updated, 0 unchanged, 1 skipped, 5 rejected" in first.stdout
    problems = first.stderr.splitlines()
    expected = [
        ("line 4:", "invalid e-mail address"),
        ("line 5:", "unknown topic(s) astrology"),
        ("line 6:", "unknown time zone 'Mars/Base'"),
        ("line 7:", "appears twice in the file"),
        ("line 8:", "format must be html or text"),
        ("line 9:", "gone@example.org unsubscribed; not re-subscribed"),
    ]
    for where, why in expected:
        assert any(where in p and why in p for p in problems), (where, why, problems)

    rows = listed(config, "--all")
    assert set(rows) == {"ada@example.org", "BOB@example.org", "gone@example.org"}
    assert rows["ada@example.org"]["topics"] == ["fibromyalgia", "autoimmunity"]
    assert rows["ada@example.org"]["timezone"] == "Europe/Oslo"
    assert (rows["BOB@example.org"]["format"], rows["BOB@example.org"]["name"]) == ("text", "Bob")
    # Never re-activated, never changed by an import.
    assert (rows["gone@example.org"]["status"], rows["gone@example.org"]["name"]) == (
        "unsubscribed",
        None,
    )

    second = import_csv(config, CSV)
    assert "0 added, 0 updated, 2 unchanged, 1 skipped, 5 rejected" in second.stdout
    assert listed(config, "--all") == rows

    changed = import_csv(config, "email,topics\nada@example.org,fibromyalgia\n", "two.csv")
    assert changed.exit_code == 0
    assert "0 added, 1 updated, 0 unchanged, 0 skipped, 0 rejected" in changed.stdout
    assert listed(config)["ada@example.org"]["topics"] == ["fibromyalgia"]


def test_import_needs_an_email_column(config: Path) -> None:
    result = import_csv(config, "name,topics\nAda,fibromyalgia\n")
    assert result.exit_code == 2 and "'email' column" in result.stderr


def test_import_accepts_a_byte_order_mark_and_spaced_topics(config: Path) -> None:
    result = import_csv(config, "\ufeffEmail,Topics\nada@example.org,fibromyalgia autoimmunity\n")
    assert result.exit_code == 0, result.output
    assert set(listed(config)["ada@example.org"]["topics"]) == {"fibromyalgia", "autoimmunity"}


# --- tokens --------------------------------------------------------------------------------------


def test_each_subscriber_has_a_random_secret(config: Path) -> None:
    for email in ("a@example.org", "b@example.org"):
        assert litwatch(config, "subscribers", "add", email).exit_code == 0
    engine = engine_of(config)
    with transaction(engine) as session:
        tokens = [s.token for s in session.scalars(select(Subscriber))]
    engine.dispose()
    assert len(set(tokens)) == 2 and all(len(t) >= 32 for t in tokens)


def _flip_middle(text: str) -> str:
    """``text`` with its middle character replaced by another base64 character."""
    mid = len(text) // 2
    return f"{text[:mid]}{'A' if text[mid] != 'A' else 'B'}{text[mid + 1 :]}"


def test_tokens_are_signed_and_bound_to_their_purpose() -> None:
    signer = Signer("installation key")
    token = signer.sign(UNSUBSCRIBE, "subscriber-secret")
    assert signer.verify(UNSUBSCRIBE, token) == "subscriber-secret"

    payload, stamp, signature = token.split(".")
    other = Signer("installation key").sign(UNSUBSCRIBE, "someone-else")
    tampered = [
        f"{_flip_middle(payload)}.{stamp}.{signature}",
        f"{payload}.{stamp}.{signature[:-2]}",
        # A character in the middle: every bit of it counts (the last base64 character of
        # a signature carries unused bits, so changing it may change nothing).
        f"{payload}.{stamp}.{_flip_middle(signature)}",
        _flip_middle(other),
        "",
        "not-a-token",
    ]
    for bad in tampered:
        with pytest.raises(TokenError, match="not valid"):
            signer.verify(UNSUBSCRIBE, bad)
    with pytest.raises(TokenError):  # forged: signed with another key
        signer.verify(UNSUBSCRIBE, Signer("attacker key").sign(UNSUBSCRIBE, "subscriber-secret"))
    for other in (PREFERENCES, CONFIRM):  # a token for one purpose is refused for another
        with pytest.raises(TokenError):
            signer.verify(other, token)
    with pytest.raises(TokenError, match="expired"):
        signer.verify(UNSUBSCRIBE, token, max_age=-1)


def test_the_signing_key_is_made_once_unless_the_environment_sets_one(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LITWATCH_SECRET_KEY", raising=False)
    first = secret_key(engine)
    assert len(first) >= 40 and secret_key(engine) == first
    with transaction(engine) as session:
        assert [m.value for m in session.scalars(select(Meta))] == [first]
    monkeypatch.setenv("LITWATCH_SECRET_KEY", "from-the-environment")
    assert secret_key(engine) == "from-the-environment"


def test_add_exist_ok_leaves_an_existing_subscriber_alone(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from crawler.cli.app import cli

    env = {"LITWATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}
    runner = CliRunner()
    first = runner.invoke(
        cli, ["subscribers", "add", "Ada@Example.org", "--topics", "fibromyalgia"], env=env
    )
    assert first.exit_code == 0, first.output
    again = runner.invoke(cli, ["subscribers", "add", "ada@example.org"], env=env)
    assert again.exit_code == 2 and "already a subscriber" in again.output
    ok = runner.invoke(
        cli,
        ["subscribers", "add", "ada@example.org", "--exist-ok", "--topics", "autoimmunity"],
        env=env,
    )
    assert ok.exit_code == 0 and "unchanged" in ok.output
    listed = runner.invoke(cli, ["subscribers", "list", "--json"], env=env)
    assert '"topics": ["fibromyalgia"]' in listed.output
