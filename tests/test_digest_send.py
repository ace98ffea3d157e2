"""Sending digests end to end: a real database, a real SMTP server (aiosmtpd), no mocks.

The messages are read back from the server and parsed; the database is read back to check
what was recorded. Core exactly-once tests run on SQLite and PostgreSQL (``engine``).
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.exc import OperationalError

from crawler.db import meta
from crawler.db.engine import transaction
from crawler.db.models import Delivery, DeliveryPaper, Subscriber
from crawler.db.store import upsert
from crawler.items import Paper
from crawler.locks import NamedLock
from crawler.settings import Settings, load_settings
from digests import delivery as delivery_module
from digests import subscribers as subs
from digests.delivery import RETRY_BASE, SendReport
from digests.mail import message_id
from digests.render import MAX_HTML_BYTES
from digests.send import SEND_LOCK, retry_pending, send_digests
from digests.tokens import PREFERENCES, UNSUBSCRIBE, Signer, TokenError, signer_for
from tests.conftest import SMTP_PASSWORD, SMTP_USER
from tests.support.config import write_toml
from tests.support.smtpserver import LocalCertificate, LocalSMTPServer, ReceivedMessage

#: A Monday, 07:00 UTC: the default cron moment.
NOW = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
BASE_URL = "https://digest.example.org"
FROM = "Litwatch Digest <digest@example.org>"
MAILTO = "unsubscribe@example.org"
OVERLAP_TITLE = "Where fibromyalgia meets autoimmunity"
SUBJECT_PREFIX = "litwatch weekly digest: "


#: Tests of formatting and client behaviour need no second database; exactly-once ones do.
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


# --- configuration ------------------------------------------------------------------------------


def write_config(path: Path, db_url: str, sections: dict[str, dict[str, Any]]) -> Path:
    """A TOML config: the database plus ``sections`` ({"email.smtp": {...}, ...})."""
    return write_toml(path, {"database": {"url": db_url}, **sections})


def base_sections(outbox: Path) -> dict[str, dict[str, Any]]:
    return {
        "web": {"base_url": BASE_URL},
        "email": {"from": FROM, "unsubscribe_mailto": MAILTO, "outbox_dir": str(outbox)},
    }


def smtp_sections(
    server: LocalSMTPServer, cert: LocalCertificate | None, outbox: Path, **smtp: Any
) -> dict[str, dict[str, Any]]:
    """Sections sending through ``server`` (STARTTLS + AUTH when ``cert`` is given)."""
    sections = base_sections(outbox)
    sections["email"]["backend"] = "smtp"
    sections["email.smtp"] = {
        "host": server.host,
        "port": server.port,
        "starttls": cert is not None,
        "username": SMTP_USER if server.auth else "",
        "ca_file": str(cert.ca_file) if cert else "",
        "timeout": "5s",
        **smtp,
    }
    return sections


def db_url_of(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def make_settings(
    tmp_path: Path, engine: Engine, sections: dict[str, dict[str, Any]] | None = None
) -> Settings:
    config = write_config(
        tmp_path / "litwatch.toml",
        db_url_of(engine),
        sections or base_sections(tmp_path / "outbox"),
    )
    return load_settings(config, environ={})


# --- papers and subscribers ---------------------------------------------------------------------


def paper(n: int, *topics: str, **fields: Any) -> Paper:
    """A PubMed-like paper numbered ``n`` on ``topics`` (fields override the defaults)."""
    values: dict[str, Any] = {
        "url": f"https://pubmed.ncbi.nlm.nih.gov/{41000000 + n}/",
        "pmid": str(41000000 + n),
        "doi": f"10.5555/lw.{n}",
        "title": f"Study {n} of widespread pain",
        "journal": "Journal of Tests",
        "published": date(2026, 2, 20),
        "authors": ["Ada Lovelace", "Alan Turing"],
        "abstract": f"Abstract of study {n}.",
    }
    values.update(fields)
    return Paper(source_id="pubmed-test", origin="pubmed", topics=list(topics), **values)


def store(engine: Engine, papers: Iterable[Paper], at: datetime) -> list[int]:
    """Insert papers first seen at ``at``; return their ids."""
    return upsert(engine, list(papers), now=at).paper_ids


def subscribe(engine: Engine, email: str, **kwargs: Any) -> int:
    """Add an active subscriber (all topics unless ``topics`` is given); return the id."""
    with transaction(engine) as session:
        sub = subs.add(session, email, known_topics=["fibromyalgia", "autoimmunity"], **kwargs)
        return sub.id


def subscribe_readers(engine: Engine, count: int) -> list[str]:
    """Subscribe reader0@example.org ... reader<count-1>@; return their addresses."""
    emails = [f"reader{i}@example.org" for i in range(count)]
    for email in emails:
        subscribe(engine, email)
    return emails


def deliveries(engine: Engine) -> list[Delivery]:
    with transaction(engine) as session:
        return list(session.scalars(select(Delivery).order_by(Delivery.id)))


def delivery_of(engine: Engine, email: str) -> Delivery:
    with transaction(engine) as session:
        sub = subs.find(session, email)
        assert sub is not None
        rows = list(session.scalars(select(Delivery).where(Delivery.subscriber_id == sub.id)))
    assert len(rows) == 1, rows
    return rows[0]


def papers_of(engine: Engine, delivery_id: int) -> set[int]:
    with transaction(engine) as session:
        return set(
            session.scalars(
                select(DeliveryPaper.paper_id).where(DeliveryPaper.delivery_id == delivery_id)
            )
        )


def recipients(messages: Iterable[ReceivedMessage]) -> Counter[str]:
    return Counter(r for m in messages for r in m.rcpt_tos)


def body(msg: EmailMessage, subtype: str) -> str:
    part = msg.get_body(preferencelist=(subtype,))
    assert part is not None and part.get_content_type() == f"text/{subtype}"
    return str(part.get_content()).replace("\r\n", "\n")


def raw_header(raw: bytes, name: str) -> str:
    """A header exactly as it went over the wire, unfolded (to see any RFC 2047 encoding)."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    lines = head.replace("\r\n ", " ").replace("\r\n\t", " ").split("\r\n")
    [value] = [v for k, _, v in (ln.partition(":") for ln in lines) if k.lower() == name.lower()]
    return value.strip()


@pytest.fixture
def tls_smtp(smtp_server_tls_auth: LocalSMTPServer, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The STARTTLS + AUTH server, with the password where litwatch reads it."""
    monkeypatch.setenv("LITWATCH_SMTP_PASSWORD", SMTP_PASSWORD)
    return smtp_server_tls_auth


def smtp_settings(
    tmp_path: Path, engine: Engine, server: LocalSMTPServer, cert: LocalCertificate | None = None
) -> Settings:
    return make_settings(tmp_path, engine, smtp_sections(server, cert, tmp_path / "outbox"))


# --- structure, headers, content ----------------------------------------------------------------


SCRIPT_TITLE = "<script>alert('x')</script> & autoantibodies in fibromyalgia"
IL6_TITLE = "IL-6 <5 pg/mL predicts response"


def week_of_papers(engine: Engine) -> dict[str, int]:
    """Four papers first seen two days before NOW: one per section plus tricky text."""
    ids = store(
        engine,
        [
            paper(1, "fibromyalgia", "autoimmunity", title=SCRIPT_TITLE),
            paper(2, "fibromyalgia", title=IL6_TITLE, abstract="Serum IL-6 <5 pg/mL & CRP."),
            paper(3, "autoimmunity", title="Lupus and fatigue: a cohort"),
            paper(4, "fibromyalgia", "autoimmunity", title="Passive transfer of IgG"),
        ],
        NOW - timedelta(days=2),
    )
    return dict(zip(("script", "il6", "lupus", "igg"), ids, strict=True))


def test_digest_over_starttls_and_auth_is_well_formed(
    engine: Engine,
    tmp_path: Path,
    tls_smtp: LocalSMTPServer,
    tls_certificate: LocalCertificate,
    caplog: pytest.LogCaptureFixture,
) -> None:
    week_of_papers(engine)
    ada = subscribe(engine, "Ada@Example.org", name="Ada Ærø")
    subscribe(engine, "bob@example.org", fmt="text", topics=["autoimmunity"])
    settings = smtp_settings(tmp_path, engine, tls_smtp, tls_certificate)
    caplog.set_level(logging.DEBUG)

    report = send_digests(settings, engine, now=NOW)

    assert (report.sent, report.failed, report.pending, report.fatal) == (2, 0, 0, None)
    by_rcpt = {m.rcpt_tos[0]: m for m in tls_smtp.wait_for(2)}
    assert set(by_rcpt) == {"Ada@example.org", "bob@example.org"}
    assert all(m.tls and m.login == SMTP_USER for m in by_rcpt.values())
    assert SMTP_PASSWORD not in caplog.text

    ada_msg = by_rcpt["Ada@example.org"].message
    raw = by_rcpt["Ada@example.org"].raw
    # multipart/alternative: text/plain first, then text/html, both UTF-8.
    assert ada_msg.get_content_type() == "multipart/alternative"
    parts = list(ada_msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    assert "Ada Ærø" in body(ada_msg, "plain")
    assert str(ada_msg["To"]) == "Ada Ærø <Ada@example.org>"
    assert str(ada_msg["Subject"]) == f"{SUBJECT_PREFIX}4 new papers (2026-03-02)"

    # Message-ID: the one recorded, derived from (installation, subscriber, period) only.
    row = delivery_of(engine, "ada@example.org")
    assert (row.state, row.attempts, row.period) == ("sent", 1, date(2026, 3, 2))
    installation = meta.installation_id(engine)
    assert ada_msg["Message-ID"] == row.message_id
    assert row.message_id == message_id(ada, date(2026, 3, 2), FROM, installation)
    assert f".{installation}." in row.message_id
    # RFC 2919 List-Id: derived from the From's domain by default.
    assert raw_header(raw, "List-Id") == "litwatch <litwatch.example.org>"

    # RFC 8058 one-click unsubscribe, with the signed token, never RFC 2047-encoded.
    unsubscribe = raw_header(raw, "List-Unsubscribe")
    assert "=?" not in unsubscribe
    https, mailto = (t.strip() for t in unsubscribe.split(","))
    assert https.startswith(f"<{BASE_URL}/u/") and https.endswith(">")
    assert mailto == f"<mailto:{MAILTO}?subject=unsubscribe>"
    token = https[len(f"<{BASE_URL}/u/") : -1]
    signer = signer_for(engine)
    with transaction(engine) as session:
        secret = session.get(Subscriber, ada)
        assert secret is not None
        assert signer.verify(UNSUBSCRIBE, token) == secret.token
    assert raw_header(raw, "List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"

    # The text-only subscriber gets text/plain only, on their topic only.
    bob_msg = by_rcpt["bob@example.org"].message
    assert bob_msg.get_content_type() == "text/plain"
    text = body(bob_msg, "plain")
    assert "Lupus and fatigue: a cohort" in text
    assert IL6_TITLE not in text  # fibromyalgia only
    assert str(bob_msg["Subject"]) == f"{SUBJECT_PREFIX}3 new papers (2026-03-02)"


@SQLITE_ONLY
def test_sections_each_paper_once_and_escaping(
    engine: Engine, tmp_path: Path, plain_smtp: LocalSMTPServer
) -> None:
    week_of_papers(engine)
    subscribe(engine, "ada@example.org")
    report = send_digests(smtp_settings(tmp_path, engine, plain_smtp), engine, now=NOW)
    assert report.sent == 1
    [received] = plain_smtp.wait_for(1)
    text, html = body(received.message, "plain"), body(received.message, "html")

    # The overlap section comes first, then the topic sections.
    heads = [text.index(t) for t in (OVERLAP_TITLE, "\nFibromyalgia\n", "\nAutoimmunity\n")]
    assert heads == sorted(heads)
    assert text.index("Passive transfer of IgG") < text.index("\nFibromyalgia\n")
    # Each paper once in each part (papers on both topics are not repeated per topic).
    for title in ("Passive transfer of IgG", "Lupus and fatigue: a cohort", IL6_TITLE):
        assert text.count(title) == 1, title
    assert text.count(SCRIPT_TITLE) == 1
    assert html.count("Passive transfer of IgG") == 1
    assert html.count("Lupus and fatigue: a cohort") == 1

    # Escaped exactly once in HTML, as written in text.
    assert "<script>" not in html
    assert html.count("&lt;script&gt;alert(") == 1
    assert "IL-6 &lt;5 pg/mL predicts response" in html
    assert "&amp;lt;" not in html
    assert "IL-6 <5 pg/mL predicts response" in text
    assert "&lt;" not in text and "&amp;" not in text


@SQLITE_ONLY
def test_many_papers_stay_under_the_html_limit(
    engine: Engine, tmp_path: Path, plain_smtp: LocalSMTPServer
) -> None:
    long_abstract = "Widespread pain and autoantibodies were measured in detail. " * 40
    store(
        engine,
        [paper(n, "fibromyalgia", abstract=long_abstract) for n in range(1, 301)],
        NOW - timedelta(days=1),
    )
    subscribe(engine, "ada@example.org")
    report = send_digests(smtp_settings(tmp_path, engine, plain_smtp), engine, now=NOW)
    assert report.sent == 1
    [received] = plain_smtp.wait_for(1)
    html_part = received.message.get_body(preferencelist=("html",))
    assert html_part is not None
    wire_html = str(html_part.get_content())  # CRLF line ends, as received
    html = wire_html.replace("\r\n", "\n")
    assert len(html.encode("utf-8")) <= MAX_HTML_BYTES
    assert len(wire_html.encode("utf-8")) < 102 * 1024  # where Gmail clips
    shown = sum(f"Study {n} of widespread pain<" in html for n in range(1, 301))
    assert 0 < shown < 300
    assert f"{300 - shown} more" in html
    assert f'href="{BASE_URL}/archive/2026-03-02"' in html
    assert str(received.message["Subject"]) == f"{SUBJECT_PREFIX}300 new papers (2026-03-02)"
    # All 300 are recorded as sent: the web archive shows the rest, none comes again.
    assert len(papers_of(engine, delivery_of(engine, "ada@example.org").id)) == 300


# --- exactly once ---------------------------------------------------------------------------------


def test_one_connection_and_rerun_sends_nothing(
    engine: Engine, tmp_path: Path, plain_smtp: LocalSMTPServer
) -> None:
    store(engine, [paper(1, "fibromyalgia")], NOW - timedelta(days=1))
    emails = subscribe_readers(engine, 10)
    settings = smtp_settings(tmp_path, engine, plain_smtp)

    first = send_digests(settings, engine, now=NOW)
    assert (first.sent, first.already) == (10, 0)
    assert recipients(plain_smtp.wait_for(10)) == Counter(emails)
    assert plain_smtp.connections == 1

    # Later the same day, and with an explicit period end naming the same day: nothing new.
    again = send_digests(settings, engine, now=NOW + timedelta(hours=9))
    assert (again.sent, again.already) == (0, 10)
    again = send_digests(settings, engine, period_end=date(2026, 3, 2), now=NOW)
    assert (again.sent, again.already) == (0, 10)
    assert len(plain_smtp.messages) == 10
    assert plain_smtp.connections == 1  # no connection when nothing is due
    assert {d.state for d in deliveries(engine)} == {"sent"}


def test_permanent_refusal_fails_one_and_sends_the_rest(
    engine: Engine, tmp_path: Path, plain_smtp: LocalSMTPServer
) -> None:
    store(engine, [paper(1, "fibromyalgia")], NOW - timedelta(days=1))
    for email in ("a@example.org", "gone@example.org", "c@example.org"):
        subscribe(engine, email)
    plain_smtp.refuse_recipient("gone@example.org", permanent=True)

    report = send_digests(smtp_settings(tmp_path, engine, plain_smtp), engine, now=NOW)

    assert (report.sent, report.failed, report.pending, report.ok) == (2, 1, 0, False)
    assert any("gone@example.org" in e and "550" in e for e in report.errors)
    assert recipients(plain_smtp.messages) == Counter(["a@example.org", "c@example.org"])
    gone = delivery_of(engine, "gone@example.org")
    assert (gone.state, gone.attempts) == ("failed", 1)
    assert gone.last_error is not None and gone.last_error.startswith("550")
    # A rerun does not try again, and reports it as failed, never as "already sent".
    plain_smtp.reset_failures()
    again = send_digests(smtp_settings(tmp_path, engine, plain_smtp), engine, now=NOW)
    assert (again.sent, again.already, again.failed, again.ok) == (0, 2, 1, False)
    assert any(e.startswith("gone@example.org: failed: 550") for e in again.errors)
    assert len(plain_smtp.messages) == 2


def test_temporary_refusal_is_retried_after_the_backoff_with_the_same_message_id(
    engine: Engine, tmp_path: Path, plain_smtp: LocalSMTPServer
) -> None:
    store(engine, [paper(1, "fibromyalgia")], NOW - timedelta(days=1))
    subscribe(engine, "a@example.org")
    subscribe(engine, "busy@example.org")
    plain_smtp.refuse_recipient("busy@example.org", permanent=False)
    settings = smtp_settings(tmp_path, engine, plain_smtp)

    report = send_digests(settings, engine, now=NOW)
    assert (report.sent, report.pending, report.failed, report.ok) == (1, 1, 0, False)
    busy = delivery_of(engine, "busy@example.org")
    assert (busy.state, busy.attempts) == ("pending", 1)
    assert busy.last_error is not None and busy.last_error.startswith("451")
    assert busy.next_attempt_at == NOW + RETRY_BASE
    planned_id = busy.message_id

    # Before the backoff has passed: left alone.
    plain_smtp.reset_failures()
    early = send_digests(settings, engine, now=NOW + RETRY_BASE / 2)
    assert (early.sent, early.pending) == (0, 1)
    assert len(plain_smtp.messages) == 1

    # After it: sent, with the Message-ID planned before the first attempt.
    later = send_digests(settings, engine, now=NOW + RETRY_BASE + timedelta(seconds=1))
    assert (later.sent, later.pending, later.ok) == (1, 0, True)
    busy = delivery_of(engine, "busy@example.org")
    assert (busy.state, busy.attempts, busy.last_error) == ("sent", 2, None)
    [_, retried] = plain_smtp.messages
    assert retried.rcpt_tos == ("busy@example.org",)
    assert retried.message["Message-ID"] == planned_id == busy.message_id


def test_backoff_grows_and_a_retry_outlives_its_period(
    engine: Engine, tmp_path: Path, plain_smtp: LocalSMTPServer
) -> None:
    store(engine, [paper(1, "fibromyalgia")], NOW - timedelta(days=1))
    subscribe(engine, "busy@example.org")
    plain_smtp.refuse_recipient("busy@example.org", permanent=False)
    settings = smtp_settings(tmp_path, engine, plain_smtp)
    send_digests(settings, engine, now=NOW)
    second_try = NOW + RETRY_BASE
    send_digests(settings, engine, now=second_try)
    busy = delivery_of(engine, "busy@example.org")
    assert busy.attempts == 2 and busy.next_attempt_at == second_try + 2 * RETRY_BASE

    # The next run is days later (a new period): the pending digest still goes out, once,
    # as planned; the new period's digest holds only what is new since.
    plain_smtp.reset_failures()
    store(engine, [paper(2, "fibromyalgia")], NOW + timedelta(days=2))
    later = send_digests(settings, engine, now=NOW + timedelta(days=3))
    assert (later.sent, later.pending) == (2, 0)
    rows = deliveries(engine)
    assert [(d.period, d.state) for d in rows] == [
        (date(2026, 3, 2), "sent"),
        (date(2026, 3, 5), "sent"),
    ]
    assert [len(papers_of(engine, d.id)) for d in rows] == [1, 1]
    ids = [m.message["Message-ID"] for m in plain_smtp.messages]
    assert ids == [d.message_id for d in rows]


def test_connection_refused_leaves_the_digest_pending(
    engine: Engine, tmp_path: Path, plain_smtp: LocalSMTPServer
) -> None:
    store(engine, [paper(1, "fibromyalgia")], NOW - timedelta(days=1))
    subscribe(engine, "a@example.org")
    subscribe(engine, "b@example.org")
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    sections = smtp_sections(plain_smtp, None, tmp_path / "outbox")
    sections["email.smtp"]["port"] = closed_port
    settings = make_settings(tmp_path, engine, sections)

    report = send_digests(settings, engine, now=NOW)

    assert report.sent == 0 and not report.ok
    assert report.fatal is not None and "cannot connect" in report.fatal
    # Both were planned (a page is planned at once); the run stopped at the first attempt.
    [first, second] = deliveries(engine)
    assert (first.state, first.attempts) == ("pending", 1)
    assert first.last_error is not None and "cannot connect" in first.last_error
    assert first.next_attempt_at == NOW + RETRY_BASE
    assert (second.state, second.attempts, second.last_error) == ("pending", 0, None)
    assert report.pending == 2

    later = send_digests(
        smtp_settings(tmp_path, engine, plain_smtp), engine, now=NOW + timedelta(minutes=6)
    )
    assert (later.sent, later.pending, later.ok) == (2, 0, True)
    assert recipients(plain_smtp.messages) == Counter(["a@example.org", "b@example.org"])


@SQLITE_ONLY
def test_timeout_leaves_the_digest_pending(
    engine: Engine, tmp_path: Path, plain_smtp: LocalSMTPServer
) -> None:
    store(engine, [paper(1, "fibromyalgia")], NOW - timedelta(days=1))
    subscribe(engine, "a@example.org")
    plain_smtp.slow_after(0, 1.5)
    sections = smtp_sections(plain_smtp, None, tmp_path / "outbox", timeout="0.5s")
    settings = make_settings(tmp_path, engine, sections)

    report = send_digests(settings, engine, now=NOW)
    assert plain_smtp.connections == 1  # a timeout is not retried at once

    assert (report.sent, report.pending, report.ok) == (0, 1, False)
    row = delivery_of(engine, "a@example.org")
    assert (row.state, row.attempts) == ("pending", 1)
    assert row.last_error is not None and "timed out" in row.last_error
    assert row.next_attempt_at == NOW + RETRY_BASE

    plain_smtp.reset_failures()
    later = send_digests(settings, engine, now=NOW + timedelta(minutes=6))
    assert (later.sent, later.ok) == (1, True)
    assert delivery_of(engine, "a@example.org").state == "sent"


def test_a_stopped_run_sends_what_it_handed_over_and_leaves_the_rest_pending(
    engine: Engine, tmp_path: Path, plain_smtp: LocalSMTPServer
) -> None:
    store(engine, [paper(1, "fibromyalgia")], NOW - timedelta(days=1))
    emails = subscribe_readers(engine, 6)
    settings = smtp_settings(tmp_path, engine, plain_smtp)
    checks = iter([False, False, False, True])  # SIGTERM after three subscribers
    seen: list[int] = []

    report = send_digests(
        settings,
        engine,
        now=NOW,
        should_stop=lambda: next(checks),
        progress=lambda r: seen.append(r.sent + r.pending),
    )

    # The three handed to the sender's thread were sent before the run returned; the other
    # three were planned with their page and wait, pending and untried.
    assert (report.sent, report.pending, report.fatal, report.ok) == (3, 3, None, True)
    assert recipients(plain_smtp.messages) == Counter(emails[:3])
    assert Counter((d.state, d.attempts) for d in deliveries(engine)) == {
        ("sent", 1): 3,
        ("pending", 0): 3,
    }
    assert len(seen) == 3
    assert not [t for t in threading.enumerate() if t.name == "litwatch-send"]

    again = send_digests(settings, engine, now=NOW + timedelta(minutes=1))
    assert (again.sent, again.pending, again.already, again.ok) == (3, 0, 3, True)
    assert recipients(plain_smtp.messages) == Counter(emails)


@SQLITE_ONLY
def test_a_database_error_on_the_sender_thread_reaches_the_caller(
    engine: Engine, tmp_path: Path, plain_smtp: LocalSMTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    store(engine, [paper(1, "fibromyalgia")], NOW - timedelta(days=1))
    emails = subscribe_readers(engine, 4)
    real_record = delivery_module.record
    recorded: list[int] = []

    def failing_record(engine: Engine, delivery_id: int, **values: object) -> None:
        if values.get("state") == "sent" and recorded:
            raise OperationalError("UPDATE deliveries", {}, Exception("disk I/O error"))
        real_record(engine, delivery_id, **values)
        recorded.append(delivery_id)

    real_both = delivery_module.record_and_claim

    def failing_both(engine: Engine, sent: Any, job: Any, until: datetime) -> bool:
        # A record made with the next message's claim (one commit): the claim fails with it.
        if sent is not None and recorded:
            raise OperationalError("UPDATE deliveries", {}, Exception("disk I/O error"))
        claimed = real_both(engine, sent, job, until)
        recorded.extend([sent["delivery_id"]] if sent is not None else [])
        return claimed

    monkeypatch.setattr(delivery_module, "record", failing_record)
    monkeypatch.setattr(delivery_module, "record_and_claim", failing_both)
    settings = smtp_settings(tmp_path, engine, plain_smtp)
    with pytest.raises(OperationalError, match="disk I/O error"):
        send_digests(settings, engine, now=NOW)
    assert not [t for t in threading.enumerate() if t.name == "litwatch-send"]
    # The first was recorded; the second was accepted but its record failed (its claim
    # stays: outcome unknown), and nothing was sent after the failure.
    assert recipients(plain_smtp.messages) == Counter(emails[:2])
    states = {d.subscriber_id: d.state for d in deliveries(engine)}
    assert sorted(states.values()) == ["pending", "pending", "sending", "sent"]

    monkeypatch.setattr(delivery_module, "record", real_record)
    monkeypatch.setattr(delivery_module, "record_and_claim", real_both)
    again = send_digests(settings, engine, now=NOW + timedelta(minutes=1))
    assert (again.sent, again.unknown, again.ok) == (2, 1, False)
    # Every subscriber has one digest; the one whose record failed is not sent blindly
    # again (at most once, the default policy): it is reported with an unknown outcome.
    assert recipients(plain_smtp.messages) == Counter(emails)
    assert delivery_of(engine, emails[1]).state == "unknown"


def test_dropped_connection_is_reopened_and_the_run_goes_on(
    engine: Engine, tmp_path: Path, plain_smtp: LocalSMTPServer
) -> None:
    store(engine, [paper(1, "fibromyalgia")], NOW - timedelta(days=1))
    emails = subscribe_readers(engine, 6)
    plain_smtp.drop_after(3, times=1)  # the 4th message is cut off once, unanswered

    report = send_digests(smtp_settings(tmp_path, engine, plain_smtp), engine, now=NOW)

    assert (report.sent, report.pending, report.failed, report.ok) == (6, 0, 0, True)
    assert recipients(plain_smtp.messages) == Counter(emails)
    assert plain_smtp.connections == 2
    assert {d.attempts for d in deliveries(engine)} == {1}


@SQLITE_ONLY
def test_a_server_that_keeps_dropping_stops_the_run(
    engine: Engine, tmp_path: Path, plain_smtp: LocalSMTPServer
) -> None:
    store(engine, [paper(1, "fibromyalgia")], NOW - timedelta(days=1))
    emails = subscribe_readers(engine, 8)
    plain_smtp.drop_after(2)

    report = send_digests(smtp_settings(tmp_path, engine, plain_smtp), engine, now=NOW)

    assert report.sent == 2 and report.fatal is not None
    assert "in a row" in report.fatal
    # All eight planned with their page; two sent, three tried, then the run stopped.
    states = Counter((d.state, d.attempts) for d in deliveries(engine))
    assert states == {("sent", 1): 2, ("pending", 1): 3, ("pending", 0): 3}
    assert report.pending == 6
    assert len(plain_smtp.messages) == 2

    # The server recovers: the next run sends every other subscriber's digest, once.
    plain_smtp.reset_failures()
    later = send_digests(
        smtp_settings(tmp_path, engine, plain_smtp), engine, now=NOW + timedelta(hours=1)
    )
    assert (later.sent, later.ok) == (6, True)
    assert recipients(plain_smtp.messages) == Counter(emails)


def test_refused_login_stops_the_run_and_sends_nothing(
    engine: Engine,
    tmp_path: Path,
    smtp_server_tls_auth: LocalSMTPServer,
    tls_certificate: LocalCertificate,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = "not-the-password-4711"
    monkeypatch.setenv("LITWATCH_SMTP_PASSWORD", wrong)
    caplog.set_level(logging.DEBUG)
    store(engine, [paper(1, "fibromyalgia")], NOW - timedelta(days=1))
    subscribe(engine, "a@example.org")
    subscribe(engine, "b@example.org")
    settings = smtp_settings(tmp_path, engine, smtp_server_tls_auth, tls_certificate)

    report = send_digests(settings, engine, now=NOW)

    assert report.fatal is not None and "login refused" in report.fatal
    assert "535" in report.fatal and "\n" not in report.fatal
    assert wrong not in report.fatal + caplog.text + " ".join(report.errors)
    assert report.sent == 0 and smtp_server_tls_auth.messages == []
    # Planned with their page, one tried: both wait for a run with the right password.
    assert [(d.state, d.attempts) for d in deliveries(engine)] == [("pending", 0), ("pending", 0)]
    assert report.pending == 2


@SQLITE_ONLY
def test_missing_password_is_one_clear_error(
    engine: Engine,
    tmp_path: Path,
    smtp_server_tls_auth: LocalSMTPServer,
    tls_certificate: LocalCertificate,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LITWATCH_SMTP_PASSWORD", raising=False)
    store(engine, [paper(1, "fibromyalgia")], NOW - timedelta(days=1))
    subscribe(engine, "a@example.org")
    settings = smtp_settings(tmp_path, engine, smtp_server_tls_auth, tls_certificate)
    report = send_digests(settings, engine, now=NOW)
    assert report.fatal is not None and "LITWATCH_SMTP_PASSWORD" in report.fatal
    assert smtp_server_tls_auth.connections == 0


def test_one_sender_at_a_time(engine: Engine, tmp_path: Path, plain_smtp: LocalSMTPServer) -> None:
    store(engine, [paper(1, "fibromyalgia")], NOW - timedelta(days=1))
    subscribe(engine, "a@example.org")
    settings = smtp_settings(tmp_path, engine, plain_smtp)
    with NamedLock(engine, SEND_LOCK) as other:  # as another process would hold it
        assert other.acquire()
        blocked = send_digests(settings, engine, now=NOW, lock_timeout=0.3)
        assert blocked.fatal is not None and "another digest send is running" in blocked.fatal
        assert deliveries(engine) == [] and plain_smtp.connections == 0
    report = send_digests(settings, engine, now=NOW, lock_timeout=0.3)
    assert (report.sent, report.fatal) == (1, None)


def test_max_per_run_caps_each_run(
    engine: Engine, tmp_path: Path, plain_smtp: LocalSMTPServer
) -> None:
    store(engine, [paper(1, "fibromyalgia")], NOW - timedelta(days=1))
    emails = subscribe_readers(engine, 5)
    sections = smtp_sections(plain_smtp, None, tmp_path / "outbox", max_per_run=2)
    settings = make_settings(tmp_path, engine, sections)

    sent = []
    for _ in range(3):
        report = send_digests(settings, engine, now=NOW)
        sent.append((report.sent, report.pending))
    assert sent == [(2, 3), (2, 1), (1, 0)]
    assert recipients(plain_smtp.messages) == Counter(emails)


@SQLITE_ONLY
def test_rate_per_minute_spreads_the_messages(
    engine: Engine, tmp_path: Path, plain_smtp: LocalSMTPServer
) -> None:
    store(engine, [paper(1, "fibromyalgia")], NOW - timedelta(days=1))
    for i in range(4):
        subscribe(engine, f"reader{i}@example.org")
    sections = smtp_sections(plain_smtp, None, tmp_path / "outbox", rate_per_minute=300)
    settings = make_settings(tmp_path, engine, sections)

    started = time.monotonic()
    report = send_digests(settings, engine, now=NOW)
    elapsed = time.monotonic() - started

    assert report.sent == 4
    assert 0.6 <= elapsed < 5  # 300/min: 0.2 s between messages, the first at once


# --- header injection ---------------------------------------------------------------------------


@SQLITE_ONLY
def test_a_name_with_line_breaks_cannot_add_headers(
    engine: Engine, tmp_path: Path, plain_smtp: LocalSMTPServer
) -> None:
    store(engine, [paper(1, "fibromyalgia")], NOW - timedelta(days=1))
    sub_id = subscribe(engine, "eve@example.org", name="Eve\r\nBcc: victim@example.net")
    subscribe(engine, "mallory@example.org")
    # Bypass the validation in subscribers.add, as a hand-edited database row would.
    with transaction(engine) as session:
        mallory = subs.find(session, "mallory@example.org")
        assert mallory is not None
        mallory.name = "Mallory\nBcc: victim@example.net\r\nX-Evil: 1"

    report = send_digests(smtp_settings(tmp_path, engine, plain_smtp), engine, now=NOW)

    assert report.sent == 2
    for received in plain_smtp.messages:
        msg = received.message
        assert msg["Bcc"] is None and msg["X-Evil"] is None
        assert received.rcpt_tos in (("eve@example.org",), ("mallory@example.org",))
        assert "\n" not in str(msg["To"]) and "victim@example.net" not in received.rcpt_tos
    with transaction(engine) as session:
        eve = session.get(Subscriber, sub_id)
        assert eve is not None and eve.name == "Eve Bcc: victim@example.net"


@SQLITE_ONLY
def test_names_are_escaped_once_in_html_and_kept_in_text(
    engine: Engine, tmp_path: Path, plain_smtp: LocalSMTPServer
) -> None:
    store(engine, [paper(1, "fibromyalgia")], NOW - timedelta(days=1))
    subscribe(engine, "zoe@example.org", name="Zoë <b>&amp;</b>")
    subscribe(engine, "yan@example.org", name="Yan")  # same content: one rendering, reused
    send_digests(smtp_settings(tmp_path, engine, plain_smtp), engine, now=NOW)
    by_rcpt = {m.rcpt_tos[0]: m.message for m in plain_smtp.wait_for(2)}
    zoe_html, zoe_text = (
        body(by_rcpt["zoe@example.org"], "html"),
        body(by_rcpt["zoe@example.org"], "plain"),
    )
    assert "Zoë &lt;b&gt;&amp;amp;&lt;/b&gt;" in zoe_html
    assert "<b>" not in zoe_html and "Hello Yan" not in zoe_html
    assert "Zoë <b>&amp;</b>" in zoe_text
    assert "Yan" in body(by_rcpt["yan@example.org"], "plain")
    # (not just "Zo": the random signed tokens in the links may contain those two letters)
    assert "Zoë" not in body(by_rcpt["yan@example.org"], "html")


@SQLITE_ONLY
def test_international_addresses_go_out_when_the_server_can_take_them(
    engine: Engine, tmp_path: Path, plain_smtp: LocalSMTPServer
) -> None:
    store(engine, [paper(1, "fibromyalgia")], NOW - timedelta(days=1))
    subscribe(engine, "jürgen@example.org")
    report = send_digests(smtp_settings(tmp_path, engine, plain_smtp), engine, now=NOW)
    assert report.sent == 1
    [received] = plain_smtp.messages
    assert received.rcpt_tos == ("jürgen@example.org",)
    # Sent with SMTPUTF8: the header holds the address in UTF-8, not an encoded word.
    assert "\r\nTo: jürgen@example.org\r\n".encode() in received.raw


@SQLITE_ONLY
def test_an_address_the_server_cannot_take_fails_alone(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LITWATCH_SMTP_PASSWORD", raising=False)
    store(engine, [paper(1, "fibromyalgia")], NOW - timedelta(days=1))
    subscribe(engine, "jürgen@example.org")  # needs SMTPUTF8, which this server lacks
    subscribe(engine, "ada@example.org")
    with LocalSMTPServer(smtputf8=False) as server:
        report = send_digests(smtp_settings(tmp_path, engine, server), engine, now=NOW)
        assert (report.sent, report.failed, report.pending) == (1, 1, 0)
        assert any("jürgen@example.org" in e and "SMTPUTF8" in e for e in report.errors)
        assert delivery_of(engine, "jürgen@example.org").state == "failed"
        assert recipients(server.messages) == Counter(["ada@example.org"])
        assert server.connections == 1


@pytest.mark.parametrize(
    "sender", ["litwatch", "Litwatch <>", "a@example.org, b@example.org", "Name <no-domain@>"]
)
@SQLITE_ONLY
def test_a_from_without_one_address_is_refused_before_anything_happens(
    engine: Engine, tmp_path: Path, plain_smtp: LocalSMTPServer, sender: str
) -> None:
    store(engine, [paper(1, "fibromyalgia")], NOW - timedelta(days=1))
    subscribe(engine, "a@example.org")
    sections = smtp_sections(plain_smtp, None, tmp_path / "outbox")
    sections["email"]["from"] = sender
    report = send_digests(make_settings(tmp_path, engine, sections), engine, now=NOW)
    assert report.fatal is not None and "[email] from" in report.fatal
    assert deliveries(engine) == [] and plain_smtp.connections == 0


# --- empty weeks ------------------------------------------------------------------------------


@SQLITE_ONLY
def test_an_empty_week_sends_nothing_by_default_and_a_note_when_asked(
    engine: Engine, tmp_path: Path, plain_smtp: LocalSMTPServer
) -> None:
    store(engine, [paper(1, "autoimmunity")], NOW - timedelta(days=1))
    subscribe(engine, "fibro@example.org", topics=["fibromyalgia"])
    sections = smtp_sections(plain_smtp, None, tmp_path / "outbox")

    report = send_digests(make_settings(tmp_path, engine, sections), engine, now=NOW)
    assert (report.sent, report.empty) == (0, 1)
    assert deliveries(engine) == [] and plain_smtp.messages == []

    sections["digest"] = {"send_empty": True}
    report = send_digests(make_settings(tmp_path, engine, sections), engine, now=NOW)
    assert (report.sent, report.empty) == (1, 0)
    [note] = plain_smtp.messages
    assert str(note.message["Subject"]) == f"{SUBJECT_PREFIX}nothing new (2026-03-02)"
    text = body(note.message, "plain")
    assert "Study 1" not in text and len(text) < 2000


# --- the file backend ---------------------------------------------------------------------------


@SQLITE_ONLY
def test_file_backend_writes_one_eml_per_message_and_html_for_html_readers(
    engine: Engine, tmp_path: Path
) -> None:
    week_of_papers(engine)
    subscribe(engine, "ada@example.org")
    subscribe(engine, "bob@example.org", fmt="text")
    outbox = tmp_path / "outbox"
    settings = make_settings(tmp_path, engine)  # backend "file" is the default
    assert settings.email.backend == "file"

    report = send_digests(settings, engine, now=NOW)

    assert report.sent == 2
    files = sorted(p.name for p in outbox.iterdir())
    assert [n for n in files if n.startswith(".")] == []  # no temporary files left over
    emls = [n for n in files if n.endswith(".eml")]
    htmls = [n for n in files if n.endswith(".html")]
    assert len(emls) == 2 and len(htmls) == 1
    parsed = {
        name: message_from_bytes((outbox / name).read_bytes(), policy=policy.default)
        for name in emls
    }
    by_to = {str(m["To"]): (name, m) for name, m in parsed.items()}
    ada_name, ada = by_to["ada@example.org"]
    assert isinstance(ada, EmailMessage)
    assert htmls == [ada_name.removesuffix(".eml") + ".html"]
    assert (outbox / htmls[0]).read_text(encoding="utf-8") == body(ada, "html")
    assert {m["Message-ID"] for m in parsed.values()} == {d.message_id for d in deliveries(engine)}

    snapshot = {p.name: p.stat().st_mtime_ns for p in outbox.iterdir()}
    again = send_digests(settings, engine, now=NOW + timedelta(hours=1))
    assert (again.sent, again.already) == (0, 2)
    assert {p.name: p.stat().st_mtime_ns for p in outbox.iterdir()} == snapshot


# --- tokens in the links ------------------------------------------------------------------------


@SQLITE_ONLY
def test_links_carry_purpose_bound_signed_tokens(
    engine: Engine, tmp_path: Path, plain_smtp: LocalSMTPServer
) -> None:
    store(engine, [paper(1, "fibromyalgia")], NOW - timedelta(days=1))
    sub_id = subscribe(engine, "ada@example.org")
    send_digests(smtp_settings(tmp_path, engine, plain_smtp), engine, now=NOW)
    [received] = plain_smtp.messages
    html = body(received.message, "html")
    signer = signer_for(engine)
    with transaction(engine) as session:
        sub = session.get(Subscriber, sub_id)
        assert sub is not None
        secret = sub.token
    [unsub] = set(re.findall(rf'href="{BASE_URL}/u/([^"]+)"', html))
    [prefs] = set(re.findall(rf'href="{BASE_URL}/preferences/([^"]+)"', html))
    # Each carries the subscriber's random secret (never the id), signed for its purpose.
    assert signer.verify(UNSUBSCRIBE, unsub) == secret
    assert signer.verify(PREFERENCES, prefs) == secret
    assert len(secret) >= 32 and secret != str(sub_id)
    with pytest.raises(TokenError):
        signer.verify(PREFERENCES, unsub)
    with pytest.raises(TokenError):
        signer.verify(UNSUBSCRIBE, prefs)
    with pytest.raises(TokenError):
        Signer("another installation's key").verify(UNSUBSCRIBE, unsub)


def test_report_is_ok_only_without_failures() -> None:
    assert SendReport(sent=3).ok
    assert not SendReport(sent=3, failed=1).ok
    assert not SendReport(fatal="login refused").ok


def test_retry_pending_sends_only_due_deferred_deliveries_and_plans_nothing(
    engine: Engine, tmp_path: Path, plain_smtp: LocalSMTPServer
) -> None:
    """The daemon's retry job: deferred digests go out after their backoff, mid-week."""
    store(engine, [paper(1, "fibromyalgia")], NOW - timedelta(days=1))
    subscribe(engine, "busy@example.org")
    settings = smtp_settings(tmp_path, engine, plain_smtp)
    plain_smtp.refuse_recipient("busy@example.org", permanent=False)
    send_digests(settings, engine, now=NOW)
    plain_smtp.reset_failures()
    subscribe(engine, "late@example.org")  # joined after the digest ran: nothing planned for them

    early = retry_pending(settings, engine, now=NOW + RETRY_BASE / 2)
    assert (early.sent, len(plain_smtp.messages)) == (0, 0)

    later = retry_pending(settings, engine, now=NOW + RETRY_BASE + timedelta(seconds=1))
    assert later.sent == 1
    [received] = plain_smtp.messages
    assert received.rcpt_tos == ("busy@example.org",)
    assert delivery_of(engine, "busy@example.org").state == "sent"
    assert {d.subscriber_id for d in deliveries(engine)} == {
        delivery_of(engine, "busy@example.org").subscriber_id
    }
