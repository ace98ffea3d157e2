"""Each digest is claimed while the server answers its MAIL FROM, and before its DATA.

The sender commits a message's claim (state ``sending``, the attempt counted, and the
previous message's outcome with it) between sending MAIL FROM and reading the answer: a
transaction without DATA delivers nothing, so the exactly-once rule holds as long as DATA
waits for the commit. These tests look at the database from inside a real SMTP server
(aiosmtpd) at the moment DATA arrives, and at what happens when a claim is lost or fails.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, update
from sqlalchemy.exc import OperationalError

from crawler.db.models import Delivery
from digests import delivery as delivery_module
from digests.mail import flatten
from digests.send import send_digests
from digests.smtp import SmtpBackend
from tests.support.smtpserver import LocalSMTPServer, ReceivedMessage
from tests.test_digest_send import (
    NOW,
    SQLITE_ONLY,
    deliveries,
    delivery_of,
    paper,
    recipients,
    smtp_settings,
    store,
    subscribe_readers,
)


def short_mail(subject: str, body: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Litwatch <digest@example.org>"
    msg["To"] = "reader@example.org"
    msg["Subject"] = subject
    msg.set_content(body)
    return msg


def test_every_digest_is_claimed_before_its_data_arrives(
    engine: Engine, tmp_path: Path, plain_smtp: LocalSMTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    store(engine, [paper(1, "fibromyalgia")], NOW - timedelta(days=1))
    emails = subscribe_readers(engine, 12)
    seen: dict[str, tuple[str, int]] = {}
    real_store = plain_smtp.store

    def store_after_looking(received: ReceivedMessage) -> int:
        (rcpt,) = received.rcpt_tos
        row = delivery_of(engine, rcpt)
        seen[rcpt] = (row.state, row.attempts)
        return real_store(received)

    monkeypatch.setattr(plain_smtp, "store", store_after_looking)
    report = send_digests(smtp_settings(tmp_path, engine, plain_smtp), engine, now=NOW)

    assert (report.sent, report.ok) == (12, True)
    # When its DATA arrived, each message was claimed (its attempt counted), not yet sent.
    assert seen == {email: ("sending", 1) for email in emails}
    assert Counter((d.state, d.attempts) for d in deliveries(engine)) == {("sent", 1): 12}
    assert plain_smtp.connections == 1


def test_a_claim_lost_to_another_sender_is_reset_and_never_delivered(
    engine: Engine, tmp_path: Path, plain_smtp: LocalSMTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    store(engine, [paper(1, "fibromyalgia")], NOW - timedelta(days=1))
    emails = subscribe_readers(engine, 6)
    victim = emails[3]
    real = delivery_module.record_and_claim

    def taken_meanwhile(engine: Engine, sent: Any, job: Any, until: datetime) -> bool:
        if job.email == victim:  # someone else sent it since the page was read
            with engine.begin() as conn:
                conn.execute(
                    update(Delivery).where(Delivery.id == job.delivery_id).values(state="sent")
                )
        return real(engine, sent, job, until)

    monkeypatch.setattr(delivery_module, "record_and_claim", taken_meanwhile)
    report = send_digests(smtp_settings(tmp_path, engine, plain_smtp), engine, now=NOW)

    assert (report.sent, report.already, report.ok) == (5, 1, True)
    # Its MAIL FROM and RCPT TO were reset: the next message went out on the same connection.
    assert recipients(plain_smtp.messages) == Counter(e for e in emails if e != victim)
    assert plain_smtp.connections == 1
    assert (delivery_of(engine, victim).state, delivery_of(engine, victim).attempts) == ("sent", 0)


@SQLITE_ONLY
def test_a_claim_that_fails_stops_the_run_before_any_data(
    engine: Engine, tmp_path: Path, plain_smtp: LocalSMTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    store(engine, [paper(1, "fibromyalgia")], NOW - timedelta(days=1))
    emails = subscribe_readers(engine, 3)
    real = delivery_module.record_and_claim

    def failing(engine: Engine, sent: Any, job: Any, until: datetime) -> bool:
        raise OperationalError("UPDATE deliveries", {}, Exception("disk I/O error"))

    monkeypatch.setattr(delivery_module, "record_and_claim", failing)
    settings = smtp_settings(tmp_path, engine, plain_smtp)
    with pytest.raises(OperationalError, match="disk I/O error"):
        send_digests(settings, engine, now=NOW)
    # The MAIL FROM in flight was abandoned with its connection: nothing was delivered, and
    # nothing was claimed.
    assert plain_smtp.messages == []
    assert Counter((d.state, d.attempts) for d in deliveries(engine)) == {("pending", 0): 3}

    monkeypatch.setattr(delivery_module, "record_and_claim", real)
    again = send_digests(settings, engine, now=NOW + timedelta(minutes=1))
    assert (again.sent, again.ok) == (3, True)
    assert recipients(plain_smtp.messages) == Counter(emails)


@SQLITE_ONLY
def test_lines_that_start_with_a_dot_arrive_as_written(
    engine: Engine, tmp_path: Path, plain_smtp: LocalSMTPServer
) -> None:
    msg = short_mail("dots", ".\n..\n.starts with a dot\nmiddle . dot\n.\n")
    backend = SmtpBackend(smtp_settings(tmp_path, engine, plain_smtp).email, None)
    try:
        backend.send(msg, "reader@example.org")
        backend.send(msg, "second@example.org")  # the connection is still in step
    finally:
        backend.close()
    first, second = plain_smtp.wait_for(2)
    assert first.raw == second.raw == flatten(msg, utf8=False)


@SQLITE_ONLY
def test_what_the_claim_raises_stops_the_message_even_when_it_looks_like_a_network_error(
    engine: Engine, tmp_path: Path, plain_smtp: LocalSMTPServer
) -> None:
    msg = short_mail("claimed?", "body\n")

    def claim() -> None:  # a database driver's socket error, say
        raise ConnectionResetError("database connection reset")

    backend = SmtpBackend(smtp_settings(tmp_path, engine, plain_smtp).email, None)
    try:
        # Not taken for a dropped SMTP connection (which would be retried, the claim lost).
        with pytest.raises(ConnectionResetError, match="database connection reset"):
            backend.start(msg, "reader@example.org", claim)
        backend.send(msg, "next@example.org")  # a fresh connection; that mail goes out
    finally:
        backend.close()
    [received] = plain_smtp.wait_for(1)
    assert received.rcpt_tos == ("next@example.org",)
    assert plain_smtp.connections == 2


def test_a_paced_backend_is_not_ready_until_its_next_slot() -> None:
    from crawler.settings import load_settings

    now = [100.0]
    settings = load_settings(None, environ={"LITWATCH_EMAIL_SMTP_RATE_PER_MINUTE": "60"})
    backend = SmtpBackend(settings.email, None, clock=lambda: now[0], sleep=lambda s: None)
    assert not backend.ready()  # no connection yet: the next message would wait for one
    backend.conn = object()  # type: ignore[assignment]  # as if connected
    backend._pace()  # one message just went: the next slot is a second away
    assert not backend.ready()
    now[0] += 1.0
    assert backend.ready()
    backend.conn = None
