"""digests.bounce_webhooks: provider webhook bodies into BounceReport, and HMAC signatures.

JSON fixtures follow the providers' documented shapes (Amazon SES notification contents and
SNS HTTP message formats; Postmark's bounce and spam-complaint webhooks).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from digests.bounce_report import BounceReport
from digests.bounce_webhooks import (
    SnsSubscriptionConfirmation,
    WebhookError,
    parse_generic,
    parse_postmark,
    parse_ses,
    parse_webhook,
    verify_webhook_signature,
)
from digests.verp import read_verp_token

MAIL = Path(__file__).parent / "fixtures" / "mail"
SECRET = b"litwatch-test-verp-secret-2026"
HOOK_SECRET = b"webhook-shared-secret"
ORIGINAL = "<litwatch.2026-03-02.4217.0f3c2a9d1b7e4c55@lists.example.org>"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((MAIL / name).read_text())
    return data


def body(data: object) -> bytes:
    return json.dumps(data).encode()


def reports(result: object) -> list[BounceReport]:
    assert isinstance(result, list)
    return result


# --- signatures -----------------------------------------------------------------------------


def sign(data: bytes, secret: bytes = HOOK_SECRET) -> str:
    return hmac.new(secret, data, hashlib.sha256).hexdigest()


@pytest.mark.parametrize("form", ["sha256={}", "{}", "SHA256={}", " sha256={} "])
def test_good_signature_in_each_accepted_form(form: str) -> None:
    data = b'{"type": "bounce"}'
    assert verify_webhook_signature(HOOK_SECRET, data, form.format(sign(data)))
    assert verify_webhook_signature(HOOK_SECRET, data, form.format(sign(data).upper()))


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha256=",
        "sha1=" + "0" * 40,
        "sha256=" + "0" * 64,
        "sha256=" + sign(b'{"type": "bounce"}', b"another secret"),
        "sha256=" + sign(b'{"type": "bounce"} '),  # the body changed by one byte
        "sha256=" + sign(b'{"type": "bounce"}')[:-1] + "é",
        "sha256=" + sign(b'{"type": "bounce"}') + "00",
    ],
)
def test_bad_signatures_are_refused(header: str | None) -> None:
    assert not verify_webhook_signature(HOOK_SECRET, b'{"type": "bounce"}', header)


def test_empty_secret_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        verify_webhook_signature(b"", b"{}", "sha256=" + sign(b"{}", b""))


# --- litwatch's own format ------------------------------------------------------------------


def test_generic_bounce_and_complaint() -> None:
    events = [
        {
            "type": "bounce",
            "email": "Dana.Reader@example.com",
            "status": "5.1.1",
            "permanent": True,
            "message_id": "evt-1",
            "original_message_id": ORIGINAL,
            "diagnostic": "550 5.1.1 user unknown",
            "envelope_from": "bounces+4217-gewpmx4p2g5swvj5@lists.example.org",
        },
        {"type": "complaint", "email": "kim@example.com", "message_id": "evt-2"},
    ]
    hard, complaint = parse_generic(body(events))
    assert hard == BounceReport(
        "hard",
        "dana.reader@example.com",
        "5.1.1",
        "550 5.1.1 user unknown",
        "litwatch:evt-1",
        ORIGINAL,
        "4217-gewpmx4p2g5swvj5",
    )
    assert hard.verp_token is not None and read_verp_token(SECRET, hard.verp_token) == 4217
    assert (complaint.kind, complaint.recipient, complaint.message_id) == (
        "complaint",
        "kim@example.com",
        "litwatch:evt-2",
    )


@pytest.mark.parametrize(
    ("fields", "kind"),
    [
        ({"permanent": True}, "hard"),
        ({"permanent": False}, "soft"),
        ({"status": "4.2.2"}, "soft"),
        ({"status": "5.7.1"}, "hard"),
        ({"status": "4.4.1", "permanent": False}, "soft"),
    ],
)
def test_generic_grading(fields: dict[str, Any], kind: str) -> None:
    event = {"type": "bounce", "email": "a@example.com", "message_id": "e", **fields}
    assert parse_generic(body(event))[0].kind == kind


@pytest.mark.parametrize(
    "event",
    [
        {"type": "bounce", "email": "a@example.com", "message_id": "e"},  # cannot grade
        {
            "type": "bounce",
            "email": "a@example.com",
            "message_id": "e",
            "status": "4.2.2",
            "permanent": True,
        },  # permanent and status disagree
        {"type": "bounce", "email": "a@example.com", "message_id": "e", "status": "5.1"},
        {"type": "bounce", "email": "a@example.com", "message_id": "e", "permanent": "yes"},
        {"type": "bounce", "email": "not-an-address", "message_id": "e", "permanent": True},
        {"type": "bounce", "email": "a@example.com", "permanent": True},  # no event id
        {"type": "delivery", "email": "a@example.com", "message_id": "e"},
        {"email": "a@example.com", "message_id": "e"},
        ["not", "an", "object"],
    ],
)
def test_generic_malformed_events_are_webhook_errors(event: object) -> None:
    with pytest.raises(WebhookError):
        parse_generic(body(event))


# --- Amazon SES through SNS -----------------------------------------------------------------


def test_ses_permanent_bounce_gives_one_hard_report_per_recipient() -> None:
    found = reports(parse_ses((MAIL / "ses_bounce.json").read_bytes()))
    assert [(r.kind, r.recipient, r.status) for r in found] == [
        ("hard", "dana.reader@example.com", "5.1.1"),
        ("hard", "old.address@example.net", "5.1.10"),
    ]
    first = found[0]
    assert first.message_id == "ses:0102018e0a1b2c3d-7f3e2a10-4c1b-4d2e-9a8b-1c2d3e4f5a6b-000000"
    assert first.original_message_id == ORIGINAL
    assert first.diagnostic == "smtp; 550 5.1.1 <dana.reader@example.com>: user unknown"
    assert first.verp_token is not None and read_verp_token(SECRET, first.verp_token) == 4217


def _ses_variant(change: dict[str, Any], name: str = "ses_bounce.json") -> dict[str, Any]:
    envelope = load(name)
    message = json.loads(envelope["Message"])
    for key, value in change.items():
        message[key].update(value)
    envelope["Message"] = json.dumps(message)
    return envelope


@pytest.mark.parametrize(
    ("bounce_type", "kind"),
    [("Transient", "soft"), ("Undetermined", "soft"), ("Permanent", "hard")],
)
def test_ses_bounce_types(bounce_type: str, kind: str) -> None:
    envelope = _ses_variant({"bounce": {"bounceType": bounce_type}})
    assert {r.kind for r in reports(parse_ses(body(envelope)))} == {kind}


def test_ses_complaint() -> None:
    (report,) = reports(parse_ses((MAIL / "ses_complaint.json").read_bytes()))
    assert (report.kind, report.recipient, report.diagnostic) == (
        "complaint",
        "complainer@mailbox.example.net",
        "feedback-type: abuse",
    )
    assert report.message_id == "ses:0102018e1f2e3d4c-aa11bb22-cc33-4d44-8e55-ff6677889900-000000"
    assert report.verp_token is not None and read_verp_token(SECRET, report.verp_token) == 555


def test_ses_raw_message_delivery_reads_the_same() -> None:
    envelope = load("ses_bounce.json")
    raw = envelope["Message"].encode()
    assert parse_ses(raw) == parse_ses(body(envelope))


def test_sns_subscription_confirmation_is_returned_for_the_web_layer() -> None:
    result = parse_webhook("ses", (MAIL / "sns_subscription_confirmation.json").read_bytes())
    assert isinstance(result, SnsSubscriptionConfirmation)
    assert result.topic_arn == "arn:aws:sns:eu-west-1:123456789012:litwatch-bounces"
    assert result.subscribe_url.startswith("https://sns.eu-west-1.amazonaws.com/?Action=Confirm")
    assert result.token.startswith("2336412f") and result.message_id


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription",
        "https://sns.eu-west-1.amazonaws.com.evil.example/confirm",
        "https://169.254.169.254/latest/meta-data/",
        "https://evil.example/?sns.eu-west-1.amazonaws.com",
        "https://user@evil.example@sns.eu-west-1.amazonaws.com/",
        "https://sns.eu-west-1.amazonaws.com:8443/",
    ],
)
def test_subscribe_url_must_be_an_sns_endpoint(url: str) -> None:
    # The web layer fetches this URL: anything else would be a request forgery.
    data = load("sns_subscription_confirmation.json") | {"SubscribeURL": url}
    with pytest.raises(WebhookError, match="SubscribeURL"):
        parse_ses(body(data))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"Type": "UnsubscribeConfirmation"}, []),
        ({"Message": json.dumps({"notificationType": "Delivery", "mail": {}})}, []),
    ],
)
def test_ses_messages_with_nothing_to_do(change: dict[str, Any], expected: list[Any]) -> None:
    assert parse_ses(body(load("ses_bounce.json") | change)) == expected


@pytest.mark.parametrize(
    "change",
    [
        {"Type": "Surprise"},
        {"Message": "not json"},
        {"Message": json.dumps({"notificationType": "Bounce"})},  # no bounce object
        {"Message": json.dumps({"notificationType": "Bounce", "bounce": {"bounceType": "x"}})},
        {"Message": json.dumps({"mail": {}})},
        {"Message": 7},
    ],
)
def test_ses_malformed_is_a_webhook_error(change: dict[str, Any]) -> None:
    with pytest.raises(WebhookError):
        parse_ses(body(load("ses_bounce.json") | change))


# --- Postmark -------------------------------------------------------------------------------


def test_postmark_hard_bounce() -> None:
    (report,) = parse_postmark((MAIL / "postmark_bounce.json").read_bytes())
    assert (report.kind, report.recipient, report.status) == (
        "hard",
        "dana.reader@example.com",
        "5.1.1",
    )
    assert report.message_id == "postmark:4323372036854775807"
    assert report.original_message_id == "883953f4-6105-42a2-a16a-77a8eac79483"
    assert report.diagnostic.startswith("HardBounce: smtp;550 5.1.1 The email account")


def test_postmark_spam_complaint() -> None:
    (report,) = parse_postmark((MAIL / "postmark_spam_complaint.json").read_bytes())
    assert (report.kind, report.recipient, report.message_id) == (
        "complaint",
        "complainer@mailbox.example.net",
        "postmark:42",
    )


@pytest.mark.parametrize(
    ("type_name", "kind"),
    [
        ("SoftBounce", "soft"),
        ("Transient", "soft"),
        ("BadEmailAddress", "hard"),
        ("AutoResponder", "auto_reply"),
        ("Subscribe", "not_bounce"),
        ("SomethingNew", "not_bounce"),
    ],
)
def test_postmark_bounce_types(type_name: str, kind: str) -> None:
    event = load("postmark_bounce.json") | {"Type": type_name}
    assert parse_postmark(body(event))[0].kind == kind


def test_postmark_bounce_without_record_type_is_still_a_bounce() -> None:
    event = load("postmark_bounce.json")
    del event["RecordType"]
    assert parse_postmark(body(event))[0].kind == "hard"


@pytest.mark.parametrize("record", ["Delivery", "Open", "Click", "SubscriptionChange"])
def test_postmark_other_records_are_ignored(record: str) -> None:
    assert parse_postmark(body(load("postmark_bounce.json") | {"RecordType": record})) == []


@pytest.mark.parametrize(
    "change",
    [{"RecordType": "Inbound"}, {"Email": ""}, {"Email": None}, {"ID": None}, {"ID": True}],
)
def test_postmark_malformed_is_a_webhook_error(change: dict[str, Any]) -> None:
    with pytest.raises(WebhookError):
        parse_postmark(body(load("postmark_bounce.json") | change))


# --- any provider ---------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["litwatch", "ses", "postmark"])
@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b"\xff\xfe\x00", b"[" * 100_000, b"null", b"42", b" " * (1024 * 1024 + 1)],
    ids=["empty", "text", "binary", "deep", "null", "number", "huge"],
)
def test_malformed_bodies_are_webhook_errors(provider: str, raw: bytes) -> None:
    with pytest.raises(WebhookError):
        parse_webhook(provider, raw)


def test_unknown_provider() -> None:
    with pytest.raises(WebhookError, match="unknown webhook provider"):
        parse_webhook("mailgun", b"{}")
