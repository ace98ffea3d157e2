"""Fuzzing the bounce readers: classify never raises; webhooks raise only WebhookError.

Bounded (200 examples per property, no deadline) so the suite stays quick. Skipped when
hypothesis is not installed.
"""

from __future__ import annotations

import email
import json
from email import policy
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from digests.bounce_parse import BounceReport, classify, classify_all  # noqa: E402
from digests.bounce_report import DIAGNOSTIC_MAX, KINDS  # noqa: E402
from digests.bounce_webhooks import (  # noqa: E402
    SnsSubscriptionConfirmation,
    WebhookError,
    parse_webhook,
)

MAIL = Path(__file__).parent / "fixtures" / "mail"
SEEDS = [p.read_bytes() for p in sorted(MAIL.glob("*.eml"))]
FUZZ = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


def check(reports: list[BounceReport]) -> None:
    assert reports, "classify_all returns at least one report"
    for report in reports:
        assert report.kind in KINDS
        assert len(report.diagnostic) <= DIAGNOSTIC_MAX and "\n" not in report.diagnostic
        if report.recipient is not None:
            assert report.recipient == report.recipient.lower() and "@" in report.recipient


@st.composite
def mutated_fixture(draw: st.DrawFn) -> bytes:
    """A fixture with a few spans deleted, replaced or duplicated: nearly-valid mail."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        start = draw(st.integers(0, len(data)))
        end = draw(st.integers(start, min(len(data), start + 200)))
        action = draw(st.sampled_from(["delete", "replace", "duplicate"]))
        if action == "delete":
            del data[start:end]
        elif action == "replace":
            data[start:end] = draw(st.binary(max_size=40))
        else:
            data[start:start] = data[start:end]
    return bytes(data)


HEADER_LINES = st.sampled_from(
    [
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\n",
        b"Content-Type: multipart/report; report-type=feedback-report; boundary=b\n",
        b"Content-Type: message/delivery-status\n",
        b"From: MAILER-DAEMON@example.net\n",
        b"X-Failed-Recipients: a@example.com, \n",
        b"Auto-Submitted: auto-replied\n",
        b"Final-Recipient: rfc822; \n",
        b"Action: failed\nStatus: 5.\n",
        b"--b\n",
        b"\n",
    ]
)


@FUZZ
@given(st.binary(max_size=3000))
def test_arbitrary_bytes(raw: bytes) -> None:
    check(classify_all(raw))


@FUZZ
@given(mutated_fixture())
def test_mutated_fixtures(raw: bytes) -> None:
    check(classify_all(raw))
    assert classify(raw).kind in KINDS


@FUZZ
@given(st.lists(st.one_of(HEADER_LINES, st.binary(max_size=30)), max_size=40))
def test_shuffled_report_fragments(lines: list[bytes]) -> None:
    check(classify_all(b"".join(lines)))


@FUZZ
@given(mutated_fixture())
def test_default_policy_messages(raw: bytes) -> None:
    # EmailMessage parses headers lazily and can raise on access: classify must not.
    check(classify_all(email.message_from_bytes(raw, policy=policy.default)))


#: JSON shaped like the providers' bodies: their keys, with any values.
KEYS = st.sampled_from(
    ["type", "email", "status", "permanent", "message_id", "Type", "Message", "MessageId",
     "SubscribeURL", "notificationType", "bounce", "bounceType", "bouncedRecipients",
     "emailAddress", "complaint", "complainedRecipients", "mail", "RecordType", "ID", "Email"]
)  # fmt: skip
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=6),
    max_leaves=30,
)


@FUZZ
@given(st.sampled_from(["litwatch", "ses", "postmark"]), JSON, st.booleans())
def test_webhooks_raise_only_webhook_error(provider: str, value: object, wrap: bool) -> None:
    if wrap and isinstance(value, dict):  # an SNS envelope around it
        value = {"Type": "Notification", "MessageId": "m", "Message": json.dumps(value)}
    try:
        result = parse_webhook(provider, json.dumps(value))
    except WebhookError:
        return
    assert isinstance(result, list | SnsSubscriptionConfirmation)
    if isinstance(result, list) and result:
        check(result)
