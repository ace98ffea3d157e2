"""digests.bounce_parse: DSNs, ARF complaints, auto-replies, qmail/Exim bounces, and the rest.

Fixtures in tests/fixtures/mail are hand-written in the real formats (RFC 3464 and RFC 5965
examples, Postfix/sendmail/qmail/Exim shapes) with VERP tokens signed by SECRET.
"""

from __future__ import annotations

import email
import re
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from digests.bounce_parse import BounceReport, classify, classify_all
from digests.bounce_report import DIAGNOSTIC_MAX, KINDS
from digests.verp import read_verp_token

MAIL = Path(__file__).parent / "fixtures" / "mail"
SECRET = b"litwatch-test-verp-secret-2026"


def fixture(name: str) -> bytes:
    return (MAIL / name).read_bytes()


def subscriber(report: BounceReport) -> int | None:
    assert report.verp_token is not None
    return read_verp_token(SECRET, report.verp_token)


def _without_headers(raw: bytes, *names: str) -> bytes:
    """``raw`` with every line starting with one of ``names`` (any part) removed."""
    pattern = re.compile(rb"(?im)^(?:" + b"|".join(n.encode() for n in names) + rb"):.*\n")
    return pattern.sub(b"", raw)


def _dsn(blocks: str, *, sender: str = "MAILER-DAEMON@mail.example.net") -> bytes:
    return (
        f"From: {sender}\nTo: bounces@lists.example.org\nMessage-ID: <dsn.1@mail.example.net>\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\n\nSee below.\n\n"
        "--b\nContent-Type: message/delivery-status\n\n"
        f"Reporting-MTA: dns; mail.example.net\n\n{blocks}\n"
        "--b--\n"
    ).encode()


# --- RFC 3464 DSNs --------------------------------------------------------------------------


def test_postfix_dsn_is_a_hard_bounce_with_everything_filled_in() -> None:
    report = classify(fixture("dsn_hard.eml"))
    assert report.kind == "hard" and report.is_bounce
    assert report.recipient == "dana.reader@example.com"  # lower-cased
    assert report.status == "5.1.1"
    assert report.diagnostic.startswith("550 5.1.1 <dana.reader@example.com>: Recipient")
    assert report.message_id == "<20260302061209.4Xk2s51Q0Mz9sQp@mail.example.net>"
    assert report.original_message_id == (
        "<litwatch.2026-03-02.4217.0f3c2a9d1b7e4c55@lists.example.org>"
    )
    assert subscriber(report) == 4217


def test_dsn_wins_over_its_auto_submitted_header() -> None:
    # Postfix, Exim and Exchange mark bounces "Auto-Submitted: auto-replied" (RFC 3834 3.1.7).
    raw = fixture("dsn_hard.eml")
    assert b"Auto-Submitted: auto-replied" in raw
    assert classify(raw).kind == "hard"


def test_multi_recipient_dsn_gives_one_report_per_failed_or_delayed_recipient() -> None:
    reports = classify_all(fixture("dsn_multi.eml"))
    assert [(r.kind, r.recipient, r.status) for r in reports] == [
        ("hard", "nobody@example.com", "5.1.1"),
        ("soft", "slow.reader@example.edu", "4.4.1"),
    ]  # the relayed recipient (2.0.0) is not a failure
    assert {r.message_id for r in reports} == {"<202603030830.1238UBx4012345@relay.example.net>"}
    assert {subscriber(r) for r in reports} == {4218}
    assert reports[0].original_message_id == (
        "<litwatch.2026-03-02.4218.77e1f0a2b3c4d5e6@lists.example.org>"
    )
    assert classify(fixture("dsn_multi.eml")).kind == "hard"  # the most severe


@pytest.mark.parametrize(
    ("action", "status", "diagnostic", "kind", "expected_status"),
    [
        ("failed", "5.1.1", "smtp; 550 5.1.1 no such user", "hard", "5.1.1"),
        ("failed", "4.4.7", "smtp; 421 4.4.7 queue expired", "soft", "4.4.7"),
        ("delayed", "4.2.2", "smtp; 452 4.2.2 mailbox full", "soft", "4.2.2"),
        ("delayed", "5.0.0", "", "soft", "5.0.0"),  # delayed is never final
        ("Failed (permanent)", "5.2.1 (disabled)", "", "hard", "5.2.1"),
        ("failed", "", "smtp; 550 5.7.1 blocked by policy", "hard", "5.7.1"),
        ("failed", "", "X-Unix; timeout", "soft", None),  # cannot grade: soft
    ],
)
def test_dsn_grading(
    action: str, status: str, diagnostic: str, kind: str, expected_status: str | None
) -> None:
    block = f"Final-Recipient: rfc822; someone@example.com\nAction: {action}\n"
    block += f"Status: {status}\n" if status else ""
    block += f"Diagnostic-Code: {diagnostic}\n" if diagnostic else ""
    report = classify(_dsn(block))
    assert (report.kind, report.status) == (kind, expected_status)
    assert report.recipient == "someone@example.com"


@pytest.mark.parametrize("action", ["delivered", "relayed", "expanded"])
def test_success_dsn_is_not_a_bounce(action: str) -> None:
    block = f"Final-Recipient: rfc822; someone@example.com\nAction: {action}\nStatus: 2.0.0\n"
    report = classify(_dsn(block))
    assert report.kind == "not_bounce"
    assert report.message_id == "<dsn.1@mail.example.net>"


def test_original_recipient_is_preferred_over_a_forwarding_target() -> None:
    block = (
        "Original-Recipient: rfc822;reader@example.org\n"
        "Final-Recipient: rfc822;reader.forwarded@elsewhere.example\n"
        "Action: failed\nStatus: 5.1.1\n"
    )
    assert classify(_dsn(block)).recipient == "reader@example.org"


def test_verp_token_from_the_dsn_envelope_when_headers_lost_it() -> None:
    stripped = _without_headers(fixture("dsn_hard.eml"), "To", "Delivered-To", "Return-Path")
    report = classify(stripped)
    assert report.kind == "hard"
    assert subscriber(report) == 4217  # from X-Postfix-Sender
    gone = classify(_without_headers(stripped, "X-Postfix-Sender"))
    assert gone.kind == "hard" and gone.verp_token is None


def test_dsn_with_many_recipients_is_bounded() -> None:
    blocks = "\n".join(
        f"Final-Recipient: rfc822; r{i}@example.com\nAction: failed\nStatus: 5.1.1\n"
        for i in range(150)
    )
    reports = classify_all(_dsn(blocks))
    assert 0 < len(reports) <= 100
    assert all(r.kind == "hard" for r in reports)


def test_long_diagnostic_is_one_bounded_line() -> None:
    diagnostic = "smtp; 550 5.1.1 " + "very long reason\n " * 200
    block = "Final-Recipient: rfc822; a@example.com\nAction: failed\nStatus: 5.1.1\n"
    report = classify(_dsn(block + f"Diagnostic-Code: {diagnostic}\n"))
    assert len(report.diagnostic) <= DIAGNOSTIC_MAX
    assert "\n" not in report.diagnostic and report.diagnostic.startswith("550 5.1.1 very")


def test_forwarded_dsn_attachment_is_not_our_bounce() -> None:
    forwarded = (
        b"From: Colleague <colleague@example.com>\nTo: digest@lists.example.org\n"
        b"Subject: Fwd: bounce?\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="x"\n\n'
        b"--x\nContent-Type: text/plain\n\nWhat is this?\n\n"
        b"--x\nContent-Type: message/rfc822\n\n" + fixture("dsn_hard.eml") + b"\n--x--\n"
    )
    assert classify(forwarded).kind == "not_bounce"


# --- RFC 5965 complaints --------------------------------------------------------------------


def test_arf_abuse_report_is_a_complaint_about_the_original_recipient() -> None:
    report = classify(fixture("arf_abuse.eml"))
    assert report.kind == "complaint" and not report.is_bounce
    assert report.recipient == "complainer@mailbox.example.net"
    assert report.diagnostic == "feedback-type: abuse"
    assert report.original_message_id == (
        "<litwatch.2026-03-02.555.9ab1c0de7f234567@lists.example.org>"
    )
    assert subscriber(report) == 555  # from Original-Mail-From


def test_arf_original_rcpt_to_wins_when_not_redacted() -> None:
    raw = fixture("arf_abuse.eml").replace(
        b"Version: 1\n", b"Version: 1\nOriginal-Rcpt-To: <Real.Reader@example.org>\n"
    )
    assert classify(raw).recipient == "real.reader@example.org"


@pytest.mark.parametrize(
    ("feedback", "kind"),
    [("not-spam", "not_bounce"), ("auth-failure", "not_bounce"), ("fraud", "complaint")],
)
def test_arf_feedback_types(feedback: str, kind: str) -> None:
    raw = fixture("arf_abuse.eml").replace(
        b"Feedback-Type: abuse", f"Feedback-Type: {feedback}".encode()
    )
    assert classify(raw).kind == kind


# --- RFC 3834 auto-replies ------------------------------------------------------------------


def test_out_of_office_reply_is_an_auto_reply_not_a_bounce() -> None:
    report = classify(fixture("autoreply.eml"))
    assert report.kind == "auto_reply" and not report.is_bounce
    assert report.recipient == "mary.smith@example.com"
    assert report.original_message_id == (
        "<litwatch.2026-03-02.12.5d6e7f8091a2b3c4@lists.example.org>"
    )
    assert subscriber(report) == 12


def _person(extra: str, subject: str = "Re: Your weekly literature digest") -> bytes:
    return (
        "From: Kim Lee <kim@example.com>\nTo: digest@lists.example.org\n"
        f"Subject: {subject}\nMessage-ID: <r1@example.com>\n{extra}"
        "Content-Type: text/plain\n\nThanks!\n"
    ).encode()


@pytest.mark.parametrize(
    ("extra", "subject", "kind"),
    [
        ("X-Autoreply: yes\n", "Re: digest", "auto_reply"),
        ("X-Autorespond: Vacation\n", "Re: digest", "auto_reply"),
        ("Precedence: auto_reply\n", "Re: digest", "auto_reply"),
        ("Auto-Submitted: auto-generated\n", "Re: digest", "auto_reply"),
        ("", "Out of Office: Your weekly literature digest", "auto_reply"),
        ("", "Automatic reply: Your weekly literature digest", "auto_reply"),
        ("", "Abwesenheitsnotiz: Ihr Literaturüberblick", "auto_reply"),
        ("", "Auto: Your weekly literature digest", "auto_reply"),
        ("Auto-Submitted: no\n", "Re: digest", "not_bounce"),  # RFC 3834 5.1: a person
        ("Precedence: bulk\n", "Re: digest", "not_bounce"),
        ("X-Autoreply: no\n", "Re: digest", "not_bounce"),
        ("", "Re: vacation plans and the digest", "not_bounce"),
    ],
)
def test_auto_reply_markers(extra: str, subject: str, kind: str) -> None:
    assert classify(_person(extra, subject)).kind == kind


def test_read_receipt_is_an_automatic_answer() -> None:
    raw = (
        b"From: kim@example.com\nTo: digest@lists.example.org\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/report; report-type=disposition-notification; boundary="m"\n\n'
        b"--m\nContent-Type: text/plain\n\nDisplayed.\n\n"
        b"--m\nContent-Type: message/disposition-notification\n\n"
        b"Final-Recipient: rfc822; kim@example.com\n"
        b"Disposition: manual-action/MDN-sent-manually; displayed\n\n--m--\n"
    )
    assert classify(raw).kind == "auto_reply"


# --- non-standard bounces -------------------------------------------------------------------


def test_qmail_bounce_names_each_recipient() -> None:
    reports = classify_all(fixture("qmail.eml"))
    assert [(r.kind, r.recipient, r.status) for r in reports] == [
        ("hard", "gone.user@example.net", "5.1.1"),
        ("hard", "typo@example.invalid", "5.1.2"),
    ]
    assert reports[0].diagnostic == "550 5.1.1 <gone.user@example.net>... No such user here"
    assert reports[0].original_message_id == (
        "<litwatch.2026-03-02.77.3c4d5e6f7a8b9c0d@lists.example.org>"
    )
    assert subscriber(reports[0]) == 77


def test_exim_bounce_is_hard_despite_auto_submitted() -> None:
    report = classify(fixture("exim.eml"))
    assert (report.kind, report.recipient, report.status) == (
        "hard",
        "pat.doe@example.com",
        "5.2.1",
    )
    assert report.diagnostic == "550 5.2.1 <pat.doe@example.com>: mailbox disabled"
    assert report.message_id == "<E1vZx3K-000AbC-2Q@mx.example.com>"
    assert report.original_message_id == (
        "<litwatch.2026-03-02.901.aa11bb22cc33dd44@lists.example.org>"
    )
    assert subscriber(report) == 901


def test_plain_text_bounce_finds_verp_in_the_returned_copy() -> None:
    stripped = _without_headers(fixture("exim.eml"), "To", "Envelope-to")
    stripped = stripped.replace(b"for bounces+901", b"for someone")
    report = classify(stripped)
    assert report.kind == "hard" and subscriber(report) == 901  # from "Return-path:" in the body


def test_x_failed_recipients_without_a_code_is_soft() -> None:
    raw = (
        b"From: Mail Delivery System <MAILER-DAEMON@mx.example.com>\n"
        b"To: bounces@lists.example.org\nX-Failed-Recipients: Lost@Example.com\n"
        b"Subject: Undeliverable\n\nDelivery to lost@example.com did not work out.\n"
    )
    report = classify(raw)
    assert (report.kind, report.recipient, report.status) == ("soft", "lost@example.com", None)


def test_normal_reply_is_not_a_bounce() -> None:
    report = classify(fixture("reply.eml"))
    assert report.kind == "not_bounce"
    assert report.recipient is None
    assert report.original_message_id == (
        "<litwatch.2026-03-02.4300.1a2b3c4d5e6f7a8b@lists.example.org>"
    )


@pytest.mark.parametrize(
    "raw",
    [
        # A person sends qmail's text (or has X-Failed-Recipients set by a broken client).
        _without_headers(fixture("qmail.eml"), "Return-Path").replace(
            b"From: MAILER-DAEMON@", b"From: someone@"
        ),
        _without_headers(fixture("exim.eml"), "Return-path", "Auto-Submitted").replace(
            b"<Mailer-Daemon@mx.example.com>", b"<pat@example.com>"
        ),
        # A mail system's note in no known shape.
        b"From: MAILER-DAEMON@mx.example.com\nSubject: Note\n\nYour message was delivered.\n",
    ],
    ids=["qmail-text-from-a-person", "exim-text-from-a-person", "daemon-chatter"],
)
def test_conservative_when_unsure(raw: bytes) -> None:
    assert classify(raw).kind == "not_bounce"


# --- input forms and robustness -------------------------------------------------------------


def test_message_objects_and_bytes_agree() -> None:
    raw = fixture("dsn_multi.eml")
    as_bytes = classify_all(raw)
    assert classify_all(email.message_from_bytes(raw)) == as_bytes
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    assert classify_all(parsed) == as_bytes


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff\xfe garbage",
        b"Content-Type: multipart/report; report-type=delivery-status\n\nno boundary",
        b'Content-Type: multipart/report; boundary="z"\n\n--z\nContent-Type: message/'
        b"delivery-status\n\n\x00\x01:\n\n--z",
        fixture("dsn_hard.eml")[:900],
        b"Subject: =?utf-8?b?!!!?= \nFrom: =?x-unknown?q?a?= <a@b>\n\nhi",
        b"Content-Type: " + b"multipart/mixed; boundary=a\n\n--a\n" * 300,
    ],
    ids=["empty", "binary", "no-boundary", "nul-fields", "truncated", "bad-words", "deep"],
)
def test_malformed_input_never_raises(raw: bytes) -> None:
    reports = classify_all(raw)
    assert reports and all(r.kind in KINDS for r in reports)
    assert classify(raw).kind != "hard"
