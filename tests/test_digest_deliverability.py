"""Deliverability at send time (issue 15): DKIM, VERP, List-Id, Message-IDs per installation.

Real database, real SMTP server (aiosmtpd on 127.0.0.1); signatures are checked with dkimpy's
own verifier against the TXT record ``litwatch email dkim-record`` prints.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, timedelta
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import Engine

from crawler.db import meta
from crawler.settings import ConfigError, load_settings
from digests.dkim_sign import dns_record
from digests.mail import message_id
from digests.send import send_digests
from digests.tokens import secret_key
from digests.verp import read_verp, read_verp_token
from digests.web.mails import confirmation_message, send_mail
from tests.support.db import migrated_engine
from tests.support.smtpserver import LocalSMTPServer
from tests.test_digest_cli import litwatch
from tests.test_digest_send import (
    FROM,
    NOW,
    SQLITE_ONLY,
    db_url_of,
    deliveries,
    make_settings,
    paper,
    raw_header,
    smtp_sections,
    store,
    subscribe,
    write_config,
)

DOMAIN, SELECTOR = "example.org", "lw2026"


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path_factory.mktemp("dkim") / "lw2026.private"
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    return path


def dnsfunc(key_file: Path) -> Callable[..., bytes]:
    """Answers the DKIM TXT query from the record ``dkim-record`` prints (strings joined)."""
    record = dns_record(SELECTOR, DOMAIN, key_file.read_bytes())
    owner, _, quoted = record.partition(" IN TXT ")
    value = "".join(re.findall(r'"([^"]*)"', quoted)).encode()

    def answer(name: bytes, timeout: int = 5) -> bytes:
        return value if name.decode().rstrip(".") == owner.rstrip(".") else b""

    return answer


def verifies(raw: bytes, key_file: Path) -> bool:
    return bool(dkim.verify(raw, dnsfunc=dnsfunc(key_file)))


def signed_headers(raw: bytes) -> set[str]:
    signature = raw_header(raw, "DKIM-Signature").replace(" ", "")
    [h] = re.findall(r"(?:^|;)h=([^;]+)", signature)
    return {name.lower() for name in h.split(":")}


def sections_with(server: LocalSMTPServer, tmp_path: Path, **email: Any) -> dict[str, Any]:
    sections = smtp_sections(server, None, tmp_path / "outbox")
    for name, values in email.items():
        sections[f"email.{name}"] = values
    return sections


def dkim_section(key_file: Path) -> dict[str, str]:
    return {"domain": DOMAIN, "selector": SELECTOR, "key_file": str(key_file)}


def a_week(engine: Engine) -> None:
    store(engine, [paper(1, "fibromyalgia"), paper(2, "autoimmunity")], NOW - timedelta(days=1))


# --- DKIM -----------------------------------------------------------------------------------------


@SQLITE_ONLY
def test_every_digest_is_dkim_signed_and_verifies(
    engine: Engine, tmp_path: Path, plain_smtp: LocalSMTPServer, key_file: Path
) -> None:
    a_week(engine)
    subscribe(engine, "ada@example.org", name="Ada Ærø")
    subscribe(engine, "bob@example.org", fmt="text")
    sections = sections_with(plain_smtp, tmp_path, dkim=dkim_section(key_file))
    report = send_digests(make_settings(tmp_path, engine, sections), engine, now=NOW)
    assert (report.sent, report.fatal) == (2, None)
    for received in plain_smtp.wait_for(2):
        assert verifies(received.raw, key_file), received.rcpt_tos
        covered = signed_headers(received.raw)
        assert {
            "from",
            "subject",
            "date",
            "message-id",
            "list-id",
            "list-unsubscribe",
            "list-unsubscribe-post",
        } <= covered
        assert f"d={DOMAIN}" in raw_header(received.raw, "DKIM-Signature").replace(" ", "")
        # A header added on the way (a second List-Unsubscribe) breaks the signature.
        forged = b"List-Unsubscribe: <https://evil.example/>\r\n" + received.raw
        assert not verifies(forged, key_file)


@SQLITE_ONLY
def test_the_file_outbox_is_signed_too(engine: Engine, tmp_path: Path, key_file: Path) -> None:
    a_week(engine)
    subscribe(engine, "ada@example.org")
    sections = {
        "web": {"base_url": "https://digest.example.org"},
        "email": {"from": FROM, "outbox_dir": str(tmp_path / "outbox")},
        "email.dkim": dkim_section(key_file),
    }
    report = send_digests(make_settings(tmp_path, engine, sections), engine, now=NOW)
    assert report.sent == 1
    [eml] = (tmp_path / "outbox").glob("*.eml")
    assert eml.read_bytes().startswith(b"DKIM-Signature:")
    assert verifies(eml.read_bytes(), key_file)


@SQLITE_ONLY
def test_the_signup_confirmation_is_signed(
    engine: Engine, tmp_path: Path, plain_smtp: LocalSMTPServer, key_file: Path
) -> None:
    sections = sections_with(plain_smtp, tmp_path, dkim=dkim_section(key_file))
    settings = make_settings(tmp_path, engine, sections)
    link = "https://digest.example.org/confirm/abc"
    msg = confirmation_message(settings, "new@example.org", link, 48, NOW)
    send_mail(settings, msg, "new@example.org")
    [received] = plain_smtp.wait_for(1)
    assert verifies(received.raw, key_file)


@pytest.mark.parametrize("problem", ["missing", "not-pem", "no-selector"])
@SQLITE_ONLY
def test_an_unusable_key_stops_the_run_before_anything_is_planned(
    engine: Engine, tmp_path: Path, plain_smtp: LocalSMTPServer, key_file: Path, problem: str
) -> None:
    a_week(engine)
    subscribe(engine, "ada@example.org")
    section = dkim_section(key_file)
    if problem == "missing":
        section["key_file"] = str(tmp_path / "nowhere.private")
    elif problem == "not-pem":
        (tmp_path / "junk.private").write_text("not a key\n")
        section["key_file"] = str(tmp_path / "junk.private")
    else:
        section["selector"] = ""
    config = write_config(
        tmp_path / "litwatch.toml",
        db_url_of(engine),
        sections_with(plain_smtp, tmp_path, dkim=section),
    )
    result = litwatch(config, "digest", "send")
    assert result.exit_code != 0
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("litwatch: ") and ("DKIM" in line or "dkim" in line), line
    assert "Traceback" not in result.output
    assert deliveries(engine) == [] and plain_smtp.connections == 0


# --- VERP -----------------------------------------------------------------------------------------


@SQLITE_ONLY
def test_verp_gives_each_subscriber_an_envelope_sender_that_names_them(
    engine: Engine, tmp_path: Path, plain_smtp: LocalSMTPServer
) -> None:
    a_week(engine)
    ada = subscribe(engine, "ada@example.org")
    bob = subscribe(engine, "bob@example.org")
    bounces = {"verp": True, "verp_domain": "bounces.example.org", "verp_prefix": "lw-bounce"}
    sections = sections_with(plain_smtp, tmp_path, bounces=bounces)
    report = send_digests(make_settings(tmp_path, engine, sections), engine, now=NOW)
    assert report.sent == 2
    secret = secret_key(engine).encode()
    by_rcpt = {m.rcpt_tos[0]: m for m in plain_smtp.wait_for(2)}
    for address, sid in (("ada@example.org", ada), ("bob@example.org", bob)):
        sender = by_rcpt[address].mail_from
        local, _, domain = sender.rpartition("@")
        prefix, _, token = local.partition("+")
        assert (prefix, domain) == ("lw-bounce", "bounces.example.org")
        assert read_verp_token(secret, token) == sid == read_verp(secret, sender)
        # The From is the configured one all the same.
        assert str(by_rcpt[address].message["From"]) == FROM


@SQLITE_ONLY
def test_signup_mail_carries_the_new_subscribers_verp_sender(
    engine: Engine, tmp_path: Path, plain_smtp: LocalSMTPServer
) -> None:
    from digests.web import WebOptions, create_app
    from digests.web.mails import drain_queues, stop_queues
    from tests.test_web import BASE, csrf_of, reload, signup

    bounces = {"verp": True, "verp_domain": "bounces.example.org"}
    sections = sections_with(plain_smtp, tmp_path, bounces=bounces)
    sections["web"]["base_url"] = BASE
    settings = make_settings(tmp_path, engine, sections)
    from starlette.testclient import TestClient

    try:
        with TestClient(create_app(settings, engine, WebOptions())) as client:
            assert signup(client, "new@example.org", csrf_of(client, "/subscribe")).is_success
            assert drain_queues()
    finally:
        stop_queues()
    [received] = plain_smtp.wait_for(1)
    pending = reload(engine, "new@example.org")
    assert pending.status == "pending"
    secret = secret_key(engine).encode()
    # A bounce of the confirmation names the address that asked, as a digest's would.
    assert read_verp(secret, received.mail_from) == pending.id
    assert received.mail_from.endswith("@bounces.example.org")
    assert str(received.message["From"]) == FROM


@SQLITE_ONLY
def test_without_verp_the_envelope_sender_is_the_from_address(
    engine: Engine, tmp_path: Path, plain_smtp: LocalSMTPServer
) -> None:
    a_week(engine)
    subscribe(engine, "ada@example.org")
    settings = make_settings(tmp_path, engine, sections_with(plain_smtp, tmp_path))
    assert settings.email.bounces.verp is False
    assert send_digests(settings, engine, now=NOW).sent == 1
    [received] = plain_smtp.wait_for(1)
    assert received.mail_from == "digest@example.org"


@SQLITE_ONLY
def test_a_verp_domain_that_is_no_host_name_stops_the_run(
    engine: Engine, tmp_path: Path, plain_smtp: LocalSMTPServer
) -> None:
    a_week(engine)
    subscribe(engine, "ada@example.org")
    bounces = {"verp": True, "verp_domain": "not a domain"}
    sections = sections_with(plain_smtp, tmp_path, bounces=bounces)
    report = send_digests(make_settings(tmp_path, engine, sections), engine, now=NOW)
    assert report.fatal is not None and "verp" in report.fatal
    assert deliveries(engine) == []


# --- List-Id --------------------------------------------------------------------------------------


@SQLITE_ONLY
def test_list_id_is_configurable(
    engine: Engine, tmp_path: Path, plain_smtp: LocalSMTPServer
) -> None:
    a_week(engine)
    subscribe(engine, "ada@example.org")
    sections = sections_with(plain_smtp, tmp_path)
    sections["email"].update(list_id="fibro.lists.example.org", list_name="Fibro: weekly")
    assert send_digests(make_settings(tmp_path, engine, sections), engine, now=NOW).sent == 1
    [received] = plain_smtp.wait_for(1)
    assert raw_header(received.raw, "List-Id") == '"Fibro: weekly" <fibro.lists.example.org>'


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("list_id", "litwatch.example.org\r\nBcc: victim@example.org"),
        ("list_id", "no-dot"),
        ("list_id", "a <b>.example.org"),
        ("list_name", "litwatch\nBcc: victim@example.org"),
    ],
)
def test_list_id_and_name_cannot_inject_headers(tmp_path: Path, key: str, value: str) -> None:
    config = write_config(tmp_path / "litwatch.toml", "sqlite://", {"email": {key: value}})
    with pytest.raises(ConfigError, match=key):
        load_settings(config, environ={})


# --- Message-ID per installation ------------------------------------------------------------------


def test_message_ids_differ_between_installations_and_stay_across_reruns(
    tmp_path: Path, plain_smtp: LocalSMTPServer
) -> None:
    ids: list[str] = []
    for site in ("one", "two"):
        (tmp_path / site).mkdir()
        engine = migrated_engine(f"sqlite:///{tmp_path / site / 'litwatch.db'}")
        try:
            a_week(engine)
            sid = subscribe(engine, "ada@example.org")
            settings = make_settings(
                tmp_path / site, engine, sections_with(plain_smtp, tmp_path / site)
            )
            # A first run deferred (451), a rerun after the backoff: the same Message-ID.
            plain_smtp.refuse_recipient("ada@example.org", permanent=False)
            assert send_digests(settings, engine, now=NOW).pending == 1
            [planned] = deliveries(engine)
            plain_smtp.reset_failures()
            later = NOW + timedelta(hours=1)
            assert send_digests(settings, engine, now=later).sent == 1
            sent = plain_smtp.messages[-1].message["Message-ID"]
            installation = meta.installation_id(engine)
            assert sent == planned.message_id == deliveries(engine)[0].message_id
            assert sent == message_id(sid, date(2026, 3, 2), FROM, installation)
            assert meta.installation_id(engine) == installation  # made once
            ids.append(sent)
        finally:
            engine.dispose()
    assert ids[0] != ids[1]
    assert re.fullmatch(
        r"<litwatch\.2026-03-02\.1\.[0-9a-f]{16}\.[0-9a-f]{16}@example\.org>", ids[0]
    )


def test_message_id_is_a_function_of_its_inputs() -> None:
    period = date(2026, 3, 2)
    one = message_id(7, period, FROM, "0123456789abcdef")
    assert one == message_id(7, period, FROM, "0123456789abcdef")
    assert one != message_id(7, period, FROM, "fedcba9876543210")
    assert one != message_id(8, period, FROM, "0123456789abcdef")
    parsed = message_from_bytes(f"Message-ID: {one}\r\n\r\n".encode(), policy=policy.default)
    assert parsed["Message-ID"] == one
