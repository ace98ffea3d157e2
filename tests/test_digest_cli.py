"""``litwatch digest send`` and ``litwatch digest preview``: the commands an operator runs."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine

from crawler.cli.app import cli
from crawler.db.models import utcnow
from tests.conftest import SMTP_PASSWORD
from tests.support import REPO_ROOT
from tests.support.smtpserver import LocalCertificate, LocalSMTPServer
from tests.test_digest_send import (
    IL6_TITLE,
    SQLITE_ONLY,
    SUBJECT_PREFIX,
    base_sections,
    body,
    db_url_of,
    deliveries,
    paper,
    recipients,
    smtp_sections,
    store,
    subscribe,
    write_config,
)


@pytest.fixture(autouse=True)
def _forget_cli_logging() -> Iterator[None]:
    """The CLI attaches a handler to the root logger on CliRunner's (then closed) stderr."""
    yield
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_litwatch", False):
            root.removeHandler(handler)


def litwatch(config: Path, *args: str, env: dict[str, str | None] | None = None) -> Result:
    """``litwatch --config CONFIG ARGS`` in-process (no LITWATCH_* from the outside)."""
    full_env: dict[str, str | None] = {"LITWATCH_CONFIG": None, "LITWATCH_DATABASE_URL": None}
    full_env.update(env or {})
    return CliRunner().invoke(
        cli, ["--config", str(config), *args], env=full_env, catch_exceptions=False
    )


def recent_papers(engine: Engine) -> None:
    """Papers first seen a day ago, so that a send "now" picks them up."""
    at = utcnow() - timedelta(days=1)
    store(
        engine,
        [
            paper(1, "fibromyalgia", "autoimmunity", title="Passive transfer of IgG"),
            paper(2, "fibromyalgia", title=IL6_TITLE),
            paper(3, "autoimmunity", title="Lupus and fatigue: a cohort"),
        ],
        at,
    )


def config_for(tmp_path: Path, engine: Engine, sections: dict[str, dict[str, Any]]) -> Path:
    return write_config(tmp_path / "litwatch.toml", db_url_of(engine), sections)


# --- send -------------------------------------------------------------------------------------


@SQLITE_ONLY  # the kill test runs the same command on PostgreSQL
def test_send_as_a_subprocess_over_starttls_never_shows_the_password(
    engine: Engine,
    tmp_path: Path,
    smtp_server_tls_auth: LocalSMTPServer,
    tls_certificate: LocalCertificate,
) -> None:
    recent_papers(engine)
    subscribe(engine, "ada@example.org")
    subscribe(engine, "bob@example.org", fmt="text")
    sections = smtp_sections(smtp_server_tls_auth, tls_certificate, tmp_path / "outbox")
    config = config_for(tmp_path, engine, sections)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LITWATCH_")}
    env["LITWATCH_SMTP_PASSWORD"] = SMTP_PASSWORD
    command = [sys.executable, "-c", "from crawler.cli import main; main()"]
    command += ["--config", str(config), "--log-level", "debug", "digest", "send"]

    done = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )

    assert done.returncode == 0, done.stderr
    assert "digest: 2 sent, 0 pending, 0 failed" in done.stdout
    assert SMTP_PASSWORD not in done.stdout + done.stderr
    assert "event=digest.sent" in done.stderr  # the log was on, at debug level
    assert recipients(smtp_server_tls_auth.messages) == {"ada@example.org": 1, "bob@example.org": 1}
    assert {d.state for d in deliveries(engine)} == {"sent"}

    again = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert again.returncode == 0
    assert "0 sent, 0 pending, 0 failed, 0 with nothing new, 2 already sent" in again.stdout
    assert len(smtp_server_tls_auth.messages) == 2


@SQLITE_ONLY  # in-process CLI runs leave the engine to the garbage collector
def test_a_refused_recipient_makes_send_exit_1_with_a_summary(
    engine: Engine, tmp_path: Path, smtp_server: LocalSMTPServer
) -> None:
    recent_papers(engine)
    for email in ("a@example.org", "gone@example.org", "c@example.org"):
        subscribe(engine, email)
    smtp_server.refuse_recipient("gone@example.org")
    config = config_for(tmp_path, engine, smtp_sections(smtp_server, None, tmp_path / "out"))

    result = litwatch(config, "digest", "send")

    assert result.exit_code == 1
    assert "digest: 2 sent, 0 pending, 1 failed" in result.stdout
    assert "gone@example.org: refused: 550" in result.stderr
    assert recipients(smtp_server.messages) == {"a@example.org": 1, "c@example.org": 1}


@SQLITE_ONLY
def test_a_refused_login_is_one_clear_line(
    engine: Engine,
    tmp_path: Path,
    smtp_server_tls_auth: LocalSMTPServer,
    tls_certificate: LocalCertificate,
) -> None:
    recent_papers(engine)
    subscribe(engine, "a@example.org")
    sections = smtp_sections(smtp_server_tls_auth, tls_certificate, tmp_path / "outbox")
    config = config_for(tmp_path, engine, sections)
    wrong = "wrong-password-0815"

    result = litwatch(
        config, "--log-level", "debug", "digest", "send", env={"LITWATCH_SMTP_PASSWORD": wrong}
    )

    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("litwatch:")]
    assert len(errors) == 1 and "SMTP login refused" in errors[0] and "535" in errors[0]
    assert wrong not in result.output
    assert "Traceback" not in result.output
    assert smtp_server_tls_auth.messages == []
    assert [d.state for d in deliveries(engine)] == ["pending"]


@SQLITE_ONLY
def test_an_unusable_from_is_one_clear_line(
    engine: Engine, tmp_path: Path, smtp_server: LocalSMTPServer
) -> None:
    recent_papers(engine)
    subscribe(engine, "a@example.org")
    sections = smtp_sections(smtp_server, None, tmp_path / "outbox")
    sections["email"]["from"] = "Litwatch Digest"
    result = litwatch(config_for(tmp_path, engine, sections), "digest", "send")
    assert result.exit_code == 1
    assert "litwatch: [email] from must contain an address" in result.stderr
    assert deliveries(engine) == [] and smtp_server.connections == 0


@SQLITE_ONLY
def test_dry_run_and_one_subscriber(
    engine: Engine, tmp_path: Path, smtp_server: LocalSMTPServer
) -> None:
    recent_papers(engine)
    subscribe(engine, "a@example.org")
    subscribe(engine, "b@example.org")
    config = config_for(tmp_path, engine, smtp_sections(smtp_server, None, tmp_path / "out"))

    dry = litwatch(config, "digest", "send", "--dry-run")
    assert dry.exit_code == 0
    assert "digest: 2 would send" in dry.stdout
    assert deliveries(engine) == [] and smtp_server.connections == 0

    one = litwatch(config, "digest", "send", "--subscriber", "B@EXAMPLE.ORG")
    assert one.exit_code == 0 and "digest: 1 sent" in one.stdout
    assert recipients(smtp_server.messages) == {"b@example.org": 1}

    dry = litwatch(config, "digest", "send", "--dry-run")
    assert "digest: 1 would send, 0 pending, 0 failed, 0 with nothing new, 1 already" in dry.stdout

    unknown = litwatch(config, "digest", "send", "--subscriber", "nobody@example.org")
    assert unknown.exit_code == 2 and "not an active subscriber" in unknown.stderr


@SQLITE_ONLY
def test_send_with_period_end(engine: Engine, tmp_path: Path) -> None:
    store(engine, [paper(1, "fibromyalgia")], datetime(2026, 1, 10, 12, tzinfo=UTC))
    store(engine, [paper(2, "fibromyalgia")], datetime(2026, 1, 12, 12, tzinfo=UTC))
    subscribe(engine, "ada@example.org", timezone="Europe/Oslo")
    outbox = tmp_path / "outbox"
    config = config_for(tmp_path, engine, base_sections(outbox))

    result = litwatch(config, "digest", "send", "--period-end", "2026-01-12")

    assert result.exit_code == 0 and "digest: 1 sent" in result.stdout
    [row] = deliveries(engine)
    assert (str(row.period), row.cutoff) == ("2026-01-12", datetime(2026, 1, 11, 23, tzinfo=UTC))
    [eml] = outbox.glob("*.eml")
    assert "Study 1 of widespread pain" in eml.read_text()
    assert "Study 2 of" not in eml.read_text()
    assert litwatch(config, "digest", "send", "--period-end", "2026-01-12").exit_code == 0
    assert len(list(outbox.glob("*.eml"))) == 1

    bad = litwatch(config, "digest", "send", "--period-end", "12/01/2026")
    assert bad.exit_code == 2


# --- preview ------------------------------------------------------------------------------------


@SQLITE_ONLY
def test_preview_renders_without_sending_or_recording(
    engine: Engine, tmp_path: Path, smtp_server: LocalSMTPServer
) -> None:
    recent_papers(engine)
    subscribe(engine, "bob@example.org", fmt="text", topics=["autoimmunity"])
    config = config_for(tmp_path, engine, smtp_sections(smtp_server, None, tmp_path / "out"))

    html = litwatch(config, "digest", "preview")
    assert html.exit_code == 0
    assert html.stdout.startswith("<!DOCTYPE html>")
    assert "IL-6 &lt;5 pg/mL" in html.stdout and "Lupus and fatigue" in html.stdout
    assert f"3 papers; subject: {SUBJECT_PREFIX}3 new papers" in html.stderr

    text = litwatch(config, "digest", "preview", "--text")
    assert text.exit_code == 0
    assert "IL-6 <5 pg/mL predicts response" in text.stdout and "<html" not in text.stdout

    out = tmp_path / "preview.html"
    written = litwatch(config, "digest", "preview", "--out", str(out))
    assert written.exit_code == 0 and f"wrote {out}" in written.stderr
    assert out.read_text(encoding="utf-8") == html.stdout.removesuffix("\n")

    out_text = tmp_path / "preview.txt"
    assert litwatch(config, "digest", "preview", "--text", "--out", str(out_text)).exit_code == 0
    assert out_text.read_text(encoding="utf-8") == text.stdout

    # One subscriber's view: their topics only (and their format with --text).
    bob = litwatch(config, "digest", "preview", "--subscriber", "BOB@example.org", "--text")
    assert bob.exit_code == 0
    assert "Lupus and fatigue" in bob.stdout and "IL-6" not in bob.stdout
    assert "Hello" in bob.stdout or "bob@example.org" in bob.stdout

    # An earlier period end: the papers were not seen yet.
    before = litwatch(config, "digest", "preview", "--text", "--period-end", "2020-01-01")
    assert before.exit_code == 0 and "Lupus" not in before.stdout

    unknown = litwatch(config, "digest", "preview", "--subscriber", "nobody@example.org")
    assert unknown.exit_code == 2 and "not a subscriber" in unknown.stderr

    assert deliveries(engine) == []
    assert smtp_server.connections == 0
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


@SQLITE_ONLY
def test_preview_matches_what_send_then_sends(engine: Engine, tmp_path: Path) -> None:
    recent_papers(engine)
    subscribe(engine, "ada@example.org")
    outbox = tmp_path / "outbox"
    config = config_for(tmp_path, engine, base_sections(outbox))
    preview = litwatch(config, "digest", "preview", "--subscriber", "ada@example.org", "--text")
    assert litwatch(config, "digest", "send").exit_code == 0
    [eml] = outbox.glob("*.eml")
    sent = message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert isinstance(sent, EmailMessage)
    sent_text = body(sent, "plain")
    for title in ("Passive transfer of IgG", IL6_TITLE, "Lupus and fatigue: a cohort"):
        assert title in preview.stdout and title in sent_text


# --- issue 12: failed deliveries, dry-run recipients, the outbox folder -------------------------


@SQLITE_ONLY
def test_a_refused_digest_stays_failed_in_every_summary_until_retry_failed(
    engine: Engine, tmp_path: Path, smtp_server: LocalSMTPServer
) -> None:
    recent_papers(engine)
    for email in ("a@example.org", "gone@example.org", "c@example.org"):
        subscribe(engine, email)
    smtp_server.refuse_recipient("gone@example.org")
    config = config_for(tmp_path, engine, smtp_sections(smtp_server, None, tmp_path / "out"))
    assert litwatch(config, "digest", "send").exit_code == 1

    again = litwatch(config, "digest", "send")
    assert again.exit_code == 1
    assert "0 sent, 0 pending, 1 failed, 0 with nothing new, 2 already sent" in again.stdout
    assert "gone@example.org: failed: 550" in again.stderr

    # Still refused: one more try, still failed, nothing else is sent.
    still = litwatch(config, "digest", "send", "--retry-failed")
    assert still.exit_code == 1 and "digest: 0 sent, 0 pending, 1 failed" in still.stdout
    smtp_server.reset_failures()
    retried = litwatch(config, "digest", "send", "--retry-failed")
    assert retried.exit_code == 0 and "digest: 1 sent, 0 pending, 0 failed" in retried.stdout
    gone = [d for d in deliveries(engine) if d.state == "sent" and d.attempts == 3]
    assert len(gone) == 1
    assert litwatch(config, "digest", "send", "--retry-failed").stdout.startswith("digest: 0 sent")
    assert recipients(smtp_server.messages) == {
        "a@example.org": 1,
        "c@example.org": 1,
        "gone@example.org": 1,
    }
    final = litwatch(config, "digest", "send")
    assert final.exit_code == 0 and "3 already sent" in final.stdout


@SQLITE_ONLY
def test_dry_run_lists_each_recipient_with_its_paper_count(
    engine: Engine, tmp_path: Path, smtp_server: LocalSMTPServer
) -> None:
    recent_papers(engine)
    subscribe(engine, "a@example.org")
    subscribe(engine, "b@example.org", topics=["autoimmunity"])
    subscribe(engine, "n@example.org", topics=["fibromyalgia"])
    config = config_for(tmp_path, engine, smtp_sections(smtp_server, None, tmp_path / "out"))
    litwatch(config, "digest", "send", "--subscriber", "n@example.org")

    dry = litwatch(config, "digest", "send", "--dry-run")

    assert dry.exit_code == 0, dry.output
    lines = dry.stdout.splitlines()
    assert lines[0].startswith("digest: 2 would send, 0 pending, 0 failed")
    assert lines[1:] == ["  a@example.org: 3 papers", "  b@example.org: 2 papers"]
    assert len(smtp_server.messages) == 1 and len(deliveries(engine)) == 1


@SQLITE_ONLY
def test_send_with_nothing_to_send_leaves_the_outbox_folder(engine: Engine, tmp_path: Path) -> None:
    """The README quick start ends with `ls outbox/`: it must exist on a quiet week too."""
    outbox = tmp_path / "outbox"
    config = config_for(tmp_path, engine, base_sections(outbox))
    result = litwatch(config, "digest", "send")
    assert result.exit_code == 0, result.output
    assert outbox.is_dir() and list(outbox.iterdir()) == []
