"""``litwatch bounces process`` against a real IMAP server: a private Dovecot instance
(tests/support/dovecot.py) with implicit TLS on a loopback port, its certificate trusted
through ``[email.bounces] imap_ca_file``, the password from LITWATCH_IMAP_PASSWORD.

Real-format returned mail is appended over IMAP: an RFC 3464 hard and soft bounce, an
RFC 5965 abuse report and an RFC 3834 auto-reply. The real CLI runs as a subprocess, on
SQLite and PostgreSQL. Skips, saying so, where Dovecot is not installed (``.ci/run``
installs Debian's dovecot-imapd).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from crawler.db.engine import transaction
from crawler.db.models import BounceRow, Subscriber, utcnow
from tests.support import REPO_ROOT
from tests.support.config import write_toml
from tests.support.dovecot import IMAP_PASSWORD, IMAP_USER, Dovecot, dovecot_binary, private_dovecot
from tests.support.returned_mail import arf, auto_reply, dsn

ADDRESSES = ["hard@example.org", "slow@example.org", "complainer@example.org",
             "away@example.org", "quiet@example.org"]  # fmt: skip


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    binary = dovecot_binary()
    if binary is None:
        pytest.skip("Dovecot is not installed (apt-get install dovecot-imapd; .ci/run does)")
    with private_dovecot(binary) as server:
        yield server


def _litwatch(config: Path, password: str = IMAP_PASSWORD) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LITWATCH_")}
    env["LITWATCH_IMAP_PASSWORD"] = password
    return subprocess.run(
        [sys.executable, "-m", "crawler.cli", "--config", str(config), "bounces", "process"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _config(path: Path, engine: Engine, server: Dovecot, ca_file: Path | None) -> Path:
    imap = {"imap_host": "127.0.0.1", "imap_port": server.port, "imap_user": IMAP_USER}
    if ca_file is not None:
        imap["imap_ca_file"] = str(ca_file)
    return write_toml(
        path,
        {"database": {"url": engine.url.render_as_string(hide_password=False)},
         "email": {"outbox_dir": str(path.parent / "outbox")}, "email.bounces": imap},
    )  # fmt: skip


def _statuses(engine: Engine) -> dict[str, str]:
    with transaction(engine) as session:
        return {s.email: s.status for s in session.scalars(select(Subscriber))}


def _rows(engine: Engine) -> int:
    with transaction(engine) as session:
        return int(session.scalar(select(func.count()).select_from(BounceRow)) or 0)


@pytest.mark.slow
def test_bounces_process_reads_a_real_imap_mailbox(
    engine: Engine, dovecot: Dovecot, tmp_path: Path, record_property: Any
) -> None:
    record_property("mailbox_kind", "imap (Dovecot)")
    with transaction(engine) as session:
        for email in ADDRESSES:
            session.add(Subscriber(email=email, email_key=email, token=email,
                                   topics=["fibromyalgia"], status="active",
                                   created_at=utcnow()))  # fmt: skip
    dovecot.append([
        dsn("hard@example.org", "imap-h1"),
        dsn("slow@example.org", "imap-s1", soft=True),
        arf("complainer@example.org", "imap-c1"),
        auto_reply("away@example.org", "imap-r1"),
    ])  # fmt: skip
    before = dovecot.flags()
    assert len(before) == 4
    config = _config(tmp_path / "litwatch.toml", engine, dovecot, dovecot.certificate.ca_file)

    first = _litwatch(config)
    print(f"mailbox kind: imap (Dovecot at 127.0.0.1:{dovecot.port}): {first.stdout.strip()}")
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        "imap: 4 messages (0 already processed): 1 auto-reply, 1 complaint, 1 hard, 1 soft; "
        "1 suspended, 1 unsubscribed"
    ]
    assert _statuses(engine) == {
        "hard@example.org": "suspended", "slow@example.org": "active",
        "complainer@example.org": "unsubscribed", "away@example.org": "active",
        "quiet@example.org": "active",
    }  # fmt: skip
    # Read only: every message is still there, unflagged, the auto-reply included.
    assert dovecot.flags() == before
    rows = _rows(engine)

    second = _litwatch(config)
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines() == [
        "imap: 4 messages (4 already processed): nothing new; 0 suspended, 0 unsubscribed"
    ]
    assert _rows(engine) == rows

    # New mail next to processed mail: only the new message counts.
    dovecot.append([dsn("slow@example.org", "imap-h2")])
    third = _litwatch(config)
    assert third.returncode == 0, third.stderr
    assert "5 messages (4 already processed): 1 hard; 1 suspended" in third.stdout
    assert _statuses(engine)["slow@example.org"] == "suspended"
    with transaction(engine) as session:
        kinds = sorted(session.scalars(select(BounceRow.kind)))
    assert kinds == ["auto_reply", "complaint", "hard", "hard", "soft"]


@pytest.mark.slow
def test_imap_errors_are_one_line_each(sqlite_url: str, dovecot: Dovecot, tmp_path: Path) -> None:
    from tests.support.db import migrated_engine

    engine = migrated_engine(sqlite_url)
    try:
        trusted = _config(tmp_path / "trusted.toml", engine, dovecot, dovecot.certificate.ca_file)
        wrong = _litwatch(trusted, password="not the password")
        assert wrong.returncode == 1
        assert wrong.stderr.startswith(f"litwatch: IMAP {IMAP_USER}@127.0.0.1: ")
        # Without imap_ca_file the private server's certificate is not trusted.
        untrusted = _litwatch(_config(tmp_path / "system.toml", engine, dovecot, None))
        assert untrusted.returncode == 1
        assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
        assert "Traceback" not in wrong.stderr + untrusted.stderr
        assert _rows(engine) == 0
    finally:
        engine.dispose()
