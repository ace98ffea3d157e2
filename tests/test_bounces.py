"""Bounce and complaint processing from a real Maildir and mbox (Python's mailbox module
writes them as mail servers do), on SQLite and PostgreSQL: decisions, policy, idempotence.

These tests read Maildir and mbox (the README of tests/fixtures/mail lists the messages);
tests/test_bounces_imap.py reads a real IMAP server (a private Dovecot instance).
"""

from __future__ import annotations

import json
import mailbox
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from email import message_from_bytes
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from crawler.db.engine import transaction
from crawler.db.models import BounceRow, Subscriber
from crawler.settings_model import BounceSettings
from digests.bounces import message_key, process
from digests.mailboxes import MailboxError, iter_maildir, iter_mbox
from tests.support.config import write_toml

FIXTURES = Path(__file__).parent / "fixtures" / "mail"
VERP_SECRET = b"litwatch-test-verp-secret-2026"
OTHER_SECRET = b"another-installation-secret-xyz"
NOW = datetime(2026, 12, 1, tzinfo=UTC)
ADDRESSES = [
    "dana.reader@example.com",  # dsn_hard: 5.1.1
    "nobody@example.com",  # dsn_multi: 5.1.1
    "slow.reader@example.edu",  # dsn_multi: delayed, 4.4.1
    "pat.doe@example.com",  # exim: 5.2.1
    "gone.user@example.net",  # qmail: 5.1.1
    "complainer@mailbox.example.net",  # arf: abuse
    "mary.smith@example.com",  # an auto-reply
    "reader@example.org",  # nothing came back
]


def _subscribers(engine: Engine, ids: dict[str, int] | None = None) -> None:
    with transaction(engine) as session:
        for email in ADDRESSES:
            session.add(Subscriber(
                id=(ids or {}).get(email), email=email, email_key=email, token=email,
                topics=["fibromyalgia"], status="active", created_at=NOW,
            ))  # fmt: skip


def _maildir(tmp_path: Path) -> Path:
    box = mailbox.Maildir(tmp_path / "bounces", create=True)
    for path in sorted(FIXTURES.glob("*.eml")):
        box.add(path.read_bytes())
    return tmp_path / "bounces"


def _statuses(engine: Engine) -> dict[str, tuple[str, str | None]]:
    with transaction(engine) as session:
        return {
            s.email: (s.status, s.suspended_reason) for s in session.scalars(select(Subscriber))
        }


def _rows(engine: Engine) -> int:
    with transaction(engine) as session:
        return int(session.scalar(select(func.count()).select_from(BounceRow)) or 0)


def test_a_mailbox_suspends_dead_addresses_and_honours_complaints(
    engine: Engine, tmp_path: Path
) -> None:
    _subscribers(engine)
    folder = _maildir(tmp_path)
    before = sorted(p.name for p in folder.rglob("*") if p.is_file())
    summary = process(engine, BounceSettings(), OTHER_SECRET, iter_maildir(folder), "maildir")
    assert summary.messages == 7 and summary.already == 0
    assert summary.kinds == {"hard": 5, "soft": 1, "complaint": 1, "auto_reply": 1,
                             "not_bounce": 1}  # fmt: skip
    status = _statuses(engine)
    for email in ("dana.reader@example.com", "nobody@example.com", "pat.doe@example.com",
                  "gone.user@example.net"):  # fmt: skip
        assert status[email][0] == "suspended", email
        assert status[email][1] is not None and status[email][1].startswith("hard bounce 5.")
    assert status["complainer@mailbox.example.net"] == ("unsubscribed", None)
    # One soft bounce is below the limit; an auto-reply never counts; silence is fine.
    for email in ("slow.reader@example.edu", "mary.smith@example.com", "reader@example.org"):
        assert status[email] == ("active", None), email
    # Nothing in the mailbox was moved or deleted, the reply that is not a bounce included.
    assert sorted(p.name for p in folder.rglob("*") if p.is_file()) == before
    rows = _rows(engine)
    again = process(engine, BounceSettings(), OTHER_SECRET, iter_maildir(folder), "maildir")
    assert again.already == 7 and again.kinds == {} and _rows(engine) == rows


def test_soft_bounces_suspend_at_the_limit_within_the_window(
    engine: Engine, tmp_path: Path
) -> None:
    _subscribers(engine)
    raw = (FIXTURES / "dsn_multi.eml").read_bytes()
    box = mailbox.mbox(tmp_path / "soft.mbox", create=True)
    for n in range(3):  # three distinct notices about the same delayed recipient
        msg = message_from_bytes(raw)
        del msg["Message-ID"]
        msg["Message-ID"] = f"<delay-{n}@mx.example.org>"
        box.add(msg)
    box.close()
    policy = BounceSettings(soft_limit=3)
    summary = process(engine, policy, OTHER_SECRET, iter_mbox(tmp_path / "soft.mbox"), "mbox")
    assert summary.kinds["soft"] == 3
    status = _statuses(engine)["slow.reader@example.edu"]
    assert status[0] == "suspended" and "3 soft bounces within 30 days" in (status[1] or "")


def test_verp_names_the_subscriber_whatever_the_recipient_says(
    engine: Engine, tmp_path: Path
) -> None:
    # dsn_hard.eml came back to bounces+4217-...: subscriber 4217, whose address differs.
    _subscribers(engine, ids={"reader@example.org": 4217})
    raw = (FIXTURES / "dsn_hard.eml").read_bytes()
    process(engine, BounceSettings(), VERP_SECRET, [raw], "mbox")
    status = _statuses(engine)
    assert status["reader@example.org"][0] == "suspended"
    assert status["dana.reader@example.com"] == ("active", None)
    # Under another installation's secret the token is foreign: the recipient decides.
    assert message_key(raw).startswith("mid:<")


def test_missing_mailboxes_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MailboxError, match="not a Maildir"):
        list(iter_maildir(tmp_path))
    with pytest.raises(MailboxError, match="no such mbox"):
        list(iter_mbox(tmp_path / "none.mbox"))


@pytest.mark.slow
def test_cli_processes_a_maildir_and_the_next_digest_skips_suspended(
    sqlite_url: str, tmp_path: Path
) -> None:
    from tests.support.db import migrated_engine

    engine = migrated_engine(sqlite_url)
    try:
        _subscribers(engine)
        folder = _maildir(tmp_path)
        outbox = tmp_path / "outbox"
        config = write_toml(
            tmp_path / "litwatch.toml",
            {"database": {"url": sqlite_url}, "email": {"outbox_dir": str(outbox)},
             "digest": {"send_empty": True}},
        )  # fmt: skip
        cli = [sys.executable, "-m", "crawler.cli", "--config", str(config)]
        done = subprocess.run([*cli, "bounces", "process", "--maildir", str(folder)],
                              capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "4 suspended, 1 unsubscribed" in done.stdout
        sent = subprocess.run([*cli, "digest", "send"], capture_output=True, text=True,
                              timeout=120, check=False)  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        recipients = {message_from_bytes(p.read_bytes())["To"] for p in outbox.rglob("*.eml")}
        got = {addr for addr in ADDRESSES if any(addr in r for r in recipients)}
        assert got == {"slow.reader@example.edu", "mary.smith@example.com", "reader@example.org"}
        listed = subprocess.run(
            [*cli, "subscribers", "list", "--all", "--json"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        rows = {r["email"]: r for r in map(json.loads, listed.stdout.splitlines())}
        assert rows["dana.reader@example.com"]["status"] == "suspended"
        assert rows["dana.reader@example.com"]["reason"] == "hard bounce 5.1.1"
        back = subprocess.run([*cli, "subscribers", "reactivate", "dana.reader@example.com"],
                              capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        assert back.returncode == 0 and "reactivated" in back.stdout
        listed = subprocess.run(
            [*cli, "subscribers", "list", "--json"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert "dana.reader@example.com" in listed.stdout
    finally:
        engine.dispose()
        shutil.rmtree(tmp_path / "bounces", ignore_errors=True)
