"""Provider bounce webhooks through the real app: authentication, formats, policy, idempotence."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from crawler.db.engine import transaction
from crawler.db.models import BounceRow, Subscriber
from crawler.settings import Settings
from tests.test_web import add_subscriber, make_client, write_settings

FIXTURES = Path(__file__).parent / "fixtures" / "mail"
SECRET = "webhook-secret-for-tests-2026"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return write_settings(tmp_path, 9)  # no mail is sent here: the SMTP port is never used


@pytest.fixture(autouse=True)
def webhook_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LITWATCH_WEBHOOK_SECRET", SECRET)


def _signature(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


def _status(engine: Engine, email: str) -> str:
    with transaction(engine) as session:
        sub = session.scalar(select(Subscriber).where(Subscriber.email_key == email))
        assert sub is not None
        return sub.status


def test_a_signed_generic_hard_bounce_suspends_once(settings: Settings, engine: Engine) -> None:
    add_subscriber(engine, "dead@example.org")
    body = json.dumps({"type": "bounce", "email": "dead@example.org", "status": "5.1.1",
                       "permanent": True, "message_id": "evt-1"}).encode()  # fmt: skip
    with make_client(settings, engine) as client:
        unsigned = client.post("/webhooks/bounces/litwatch", content=body)
        assert unsigned.status_code == 403
        assert _status(engine, "dead@example.org") == "active"
        headers = {"X-Litwatch-Signature": _signature(body)}
        first = client.post("/webhooks/bounces/litwatch", content=body, headers=headers)
        again = client.post("/webhooks/bounces/litwatch", content=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert "1 suspended" in first.text and "already processed" in again.text
    assert _status(engine, "dead@example.org") == "suspended"
    with transaction(engine) as session:
        assert len(list(session.scalars(select(BounceRow)))) == 1


def test_ses_complaint_through_the_secret_path_unsubscribes(
    settings: Settings, engine: Engine
) -> None:
    body = (FIXTURES / "ses_complaint.json").read_bytes()
    complained = json.loads(json.loads(body)["Message"])["complaint"]["complainedRecipients"]
    email = complained[0]["emailAddress"].lower()
    add_subscriber(engine, email)
    with make_client(settings, engine) as client:
        wrong = client.post("/webhooks/bounces/ses/not-the-secret", content=body)
        right = client.post(f"/webhooks/bounces/ses/{SECRET}", content=body)
        sns = client.post(
            f"/webhooks/bounces/ses/{SECRET}",
            content=(FIXTURES / "sns_subscription_confirmation.json").read_bytes(),
        )
        bad = client.post(f"/webhooks/bounces/postmark/{SECRET}", content=b"{not json")
    assert wrong.status_code == 403
    assert right.status_code == 200 and _status(engine, email) == "unsubscribed"
    assert sns.status_code == 200 and "operator confirms" in sns.text
    assert bad.status_code == 400


def test_without_a_secret_the_endpoint_does_not_exist(
    settings: Settings, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LITWATCH_WEBHOOK_SECRET")
    with make_client(settings, engine) as client:
        assert client.post("/webhooks/bounces/litwatch", content=b"{}").status_code == 404
