"""Faults at record time: a digest whose "sent" cannot be recorded is not sent again blindly.

Issue 12 A1: the record of a sent digest failed (SQLite locked by another connection for
longer than the busy timeout), the delivery stayed pending with its attempt count unchanged,
and the daemon's retry job sent it again every few minutes. Here a real SMTP server
(aiosmtpd on 127.0.0.1) takes the message and, before it answers 250, another connection
takes SQLite's write lock, so the sender's record of "sent" fails for real. The daemon's
retry job (``retry_pending``) then runs again and again.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from crawler.db import engine as engine_module
from crawler.db.engine import make_engine
from tests.support.db import migrated_engine
from tests.support.smtpserver import LocalSMTPServer, ReceivedMessage
from tests.test_digest_send import (
    NOW,
    deliveries,
    delivery_of,
    make_settings,
    paper,
    recipients,
    smtp_sections,
    store,
    subscribe,
)

VICTIM = "victim@example.org"
EMAILS = ["first@example.org", VICTIM, "third@example.org"]


class LockingSMTPServer(LocalSMTPServer):
    """Stores each message, then, for the victim's, locks the database before answering."""

    def __init__(self, database: Path) -> None:
        super().__init__()
        self.database = database
        self.holders: list[sqlite3.Connection] = []

    def store(self, message: ReceivedMessage) -> int:
        number = super().store(message)
        if VICTIM in message.rcpt_tos:
            conn = sqlite3.connect(self.database, check_same_thread=False, isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")  # SQLite's one write lock, as a long writer holds it
            self.holders.append(conn)
        return number

    def release(self) -> None:
        for conn in self.holders:
            conn.rollback()
            conn.close()
        self.holders.clear()


@pytest.fixture
def short_busy_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """A migrated SQLite database whose connections give up on a lock after one second."""
    url = f"sqlite:///{tmp_path / 'faults.db'}"
    migrated_engine(url).dispose()
    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_S", 1)
    eng = make_engine(url)
    yield eng
    eng.dispose()


@pytest.fixture
def locking_smtp(tmp_path: Path) -> Iterator[LockingSMTPServer]:
    with LockingSMTPServer(tmp_path / "faults.db") as server:
        yield server
        server.release()


def first_send_fails_at_record(
    engine: Engine, tmp_path: Path, server: LockingSMTPServer, **email: Any
) -> Any:
    """Subscribe three readers and send: the victim's message is taken, its record fails.

    The claim made before sending was committed, with the attempt counted.
    """
    from digests.send import send_digests

    store(engine, [paper(1, "fibromyalgia")], NOW - timedelta(days=1))
    for address in EMAILS:
        subscribe(engine, address)
    sections = smtp_sections(server, None, tmp_path / "outbox")
    sections["email"].update(email)
    settings = make_settings(tmp_path, engine, sections)
    with pytest.raises(OperationalError, match="locked"):
        send_digests(settings, engine, now=NOW)
    server.release()
    assert recipients(server.messages) == Counter(EMAILS[:2])
    victim = delivery_of(engine, VICTIM)
    assert (victim.state, victim.attempts) == ("sending", 1)
    return settings


def retry_job_runs(
    engine: Engine, settings: Any, server: LockingSMTPServer, minutes: list[int]
) -> list[int | str]:
    """The daemon's retry job at NOW + each of ``minutes``: what each run sent, or "error"
    when it raised (the scheduler logs a job's error and runs it again next time)."""
    from digests.send import retry_pending

    outcomes: list[int | str] = []
    for m in minutes:
        try:
            outcomes.append(retry_pending(settings, engine, now=NOW + timedelta(minutes=m)).sent)
        except OperationalError:
            outcomes.append("error")
        server.release()
    return outcomes


def test_a_digest_whose_record_failed_is_not_sent_again(
    short_busy_engine: Engine, tmp_path: Path, locking_smtp: LockingSMTPServer
) -> None:
    """Default policy (at most once): the victim gets the digest once, whatever follows."""
    from digests.send import send_digests

    settings = first_send_fails_at_record(short_busy_engine, tmp_path, locking_smtp)

    sent = retry_job_runs(short_busy_engine, settings, locking_smtp, [5, 10, 15, 20, 25])
    assert recipients(locking_smtp.messages)[VICTIM] == 1  # not 6: once, then every 5 min
    assert sent == [1, 0, 0, 0, 0]  # the third reader's digest, never yet tried, goes out
    rerun = send_digests(settings, short_busy_engine, now=NOW + timedelta(hours=5))
    assert (rerun.sent, rerun.already, rerun.unknown) == (0, 2, 1)

    assert recipients(locking_smtp.messages) == Counter(EMAILS)  # each exactly once
    victim = delivery_of(short_busy_engine, VICTIM)
    assert (victim.state, victim.attempts) == ("unknown", 1)
    assert victim.last_error is not None and "outcome unknown" in victim.last_error


def test_resend_once_sends_one_more_copy_after_the_delay_with_the_same_message_id(
    short_busy_engine: Engine, tmp_path: Path, locking_smtp: LockingSMTPServer
) -> None:
    """Policy "resend_once": one more copy, only after the delay, and never a third."""
    settings = first_send_fails_at_record(
        short_busy_engine, tmp_path, locking_smtp, on_unknown="resend_once", resend_after="30m"
    )
    # Before the delay: the third reader's digest goes out, the victim's waits.
    assert retry_job_runs(short_busy_engine, settings, locking_smtp, [5, 10, 20]) == [1, 0, 0]
    assert recipients(locking_smtp.messages)[VICTIM] == 1
    assert delivery_of(short_busy_engine, VICTIM).state == "resend"

    # After it: one more copy, whose record fails again (the lock is taken again), and no
    # later run sends a third.
    runs = retry_job_runs(short_busy_engine, settings, locking_smtp, [31, 40, 60, 120, 600])
    assert runs == ["error", 0, 0, 0, 0]

    copies = [m for m in locking_smtp.messages if m.rcpt_tos == (VICTIM,)]
    assert len(copies) == 2
    victim = delivery_of(short_busy_engine, VICTIM)
    assert copies[0].message["Message-ID"] == copies[1].message["Message-ID"] == victim.message_id
    assert (victim.state, victim.attempts) == ("unknown", 2)
    assert Counter(d.state for d in deliveries(short_busy_engine)) == {"sent": 2, "unknown": 1}
