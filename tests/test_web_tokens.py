"""Token lifetimes, key rotation and server-made CSRF cookies (issue 12, A11 web parts).

Before: tokens never expired and the key could not be rotated, and the server signed any
CSRF cookie value a client chose (an attacker could fetch a field for a value of their own,
plant that cookie in a victim's browser and post the field). Real databases and a real SMTP
server on 127.0.0.1; time is moved only to make tokens old.
"""

from __future__ import annotations

import re
import time
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine

from crawler.cli.context import App
from crawler.cli.web_cmds import rotate_key
from crawler.db.engine import transaction
from crawler.db.models import Subscriber, utcnow
from crawler.settings import Settings, load_settings
from digests import subscribers
from digests.tokens import (
    LINK_MAX_AGE,
    PREVIOUS_ENV,
    SECRET_ENV,
    UNSUBSCRIBE,
    Links,
    Signer,
    TokenError,
    signer_for,
    signing_keys,
)
from digests.web import create_app
from digests.web.security import CSRF_COOKIE
from tests.support.smtpserver import LocalSMTPServer

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # see tests/test_web.py
    from starlette.testclient import TestClient

TOPICS = ["fibromyalgia", "autoimmunity"]
DAY = 86400


def write_settings(tmp_path: Path, smtp_port: int, base_url: str = "http://testserver") -> Settings:
    cfg = tmp_path / "litwatch.toml"
    cfg.write_text(
        f"""
[email]
backend = "smtp"
from = "litwatch <digest@example.org>"
[email.smtp]
host = "127.0.0.1"
port = {smtp_port}
starttls = false
timeout = "5s"
[web]
base_url = "{base_url}"
""",
        encoding="utf-8",
    )
    return load_settings(cfg, environ={})


@pytest.fixture
def settings(tmp_path: Path, smtp_server: LocalSMTPServer) -> Settings:
    return write_settings(tmp_path, smtp_server.port)


@pytest.fixture(autouse=True)
def no_key_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    monkeypatch.delenv(PREVIOUS_ENV, raising=False)


def add_subscriber(engine: Engine, email: str) -> Subscriber:
    with transaction(engine) as session:
        return subscribers.add(session, email, known_topics=TOPICS, topics=TOPICS)


def status_of(engine: Engine, email: str) -> str:
    with transaction(engine) as session:
        sub = subscribers.find(session, email)
        assert sub is not None
        return sub.status


def aged(signer: Signer, purpose: str, value: Any, age: float) -> str:
    """A token as if issued ``age`` seconds ago (itsdangerous stamps with time.time())."""
    real = time.time
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(time, "time", lambda: real() - age)
        return signer.sign(purpose, value)


def form_field(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


# --- CSRF cookies are the server's -----------------------------------------------------------


def test_a_client_chosen_csrf_cookie_is_replaced_never_signed(
    settings: Settings, engine: Engine, smtp_server: LocalSMTPServer
) -> None:
    chosen = "attacker-chosen-value-0123456789abcdef"
    with TestClient(create_app(settings, engine)) as attacker:
        attacker.cookies.set(CSRF_COOKIE, chosen)
        page = attacker.get("/subscribe")
        issued = page.cookies.get(CSRF_COOKIE)
        field = form_field(page.text)
    assert issued and issued != chosen
    assert signer_for(engine).verify("csrf", field) == issued != chosen
    # The attacker plants the chosen cookie in a victim's browser and posts the field.
    with TestClient(create_app(settings, engine)) as victim:
        victim.cookies.set(CSRF_COOKIE, chosen)
        data = {"csrf_token": field, "email": "victim@example.org", "topics": TOPICS}
        assert victim.post("/subscribe", data={**data, "format": "html"}).status_code == 403
        # Even a field signed for the chosen value is refused: the cookie lacks our mark.
        forged = signer_for(engine).sign("csrf", chosen)
        assert victim.post("/subscribe", data={**data, "csrf_token": forged}).status_code == 403
    assert smtp_server.messages == []


def test_a_server_made_cookie_is_kept_across_pages(settings: Settings, engine: Engine) -> None:
    with TestClient(create_app(settings, engine)) as browser:
        first = browser.get("/subscribe").cookies.get(CSRF_COOKIE)
        second = browser.get("/subscribe").cookies.get(CSRF_COOKIE)
    assert first and first == second  # two tabs open on forms both still work


def test_over_https_the_csrf_cookie_is_host_prefixed(
    tmp_path: Path, engine: Engine, smtp_server: LocalSMTPServer
) -> None:
    settings = write_settings(tmp_path, smtp_server.port, "https://testserver")
    with TestClient(create_app(settings, engine), base_url="https://testserver") as browser:
        page = browser.get("/subscribe")
        header = page.headers["set-cookie"]
        assert header.startswith(f"__Host-{CSRF_COOKIE}=")
        assert "Secure" in header and "Path=/" in header and "Domain" not in header
        data = {"csrf_token": form_field(page.text), "email": "tls@example.org"}
        sent = browser.post("/subscribe", data={**data, "topics": TOPICS, "format": "html"})
    assert sent.status_code == 200
    assert [m.rcpt_tos for m in smtp_server.wait_for(1)] == [("tls@example.org",)]


# --- link lifetimes --------------------------------------------------------------------------


def test_unsubscribe_links_work_90_days_then_expire(settings: Settings, engine: Engine) -> None:
    assert LINK_MAX_AGE == 90 * DAY
    sub = add_subscriber(engine, "old@example.org")
    signer = signer_for(engine)
    fresh_enough = aged(signer, UNSUBSCRIBE, sub.token, 89 * DAY)
    too_old = aged(signer, UNSUBSCRIBE, sub.token, 91 * DAY)
    one_click = {"List-Unsubscribe": "One-Click"}
    with TestClient(create_app(settings, engine)) as client:
        assert client.get(f"/u/{fresh_enough}").status_code == 200
        expired = client.post(f"/u/{too_old}", data=one_click)
        assert expired.status_code == 400 and "most recent digest" in expired.text
        assert client.get(f"/preferences/{aged(signer, 'preferences', sub.token, 91 * DAY)}")
        assert status_of(engine, "old@example.org") == "active"
        assert client.post(f"/u/{fresh_enough}", data=one_click).status_code == 200
    assert status_of(engine, "old@example.org") == "unsubscribed"


def test_old_preferences_links_expire_too(settings: Settings, engine: Engine) -> None:
    sub = add_subscriber(engine, "prefs@example.org")
    token = aged(signer_for(engine), "preferences", sub.token, 91 * DAY)
    with TestClient(create_app(settings, engine)) as client:
        assert client.get(f"/preferences/{token}").status_code == 400


# --- rotation --------------------------------------------------------------------------------


def test_environment_key_rotation_keeps_old_links_working(
    settings: Settings, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = add_subscriber(engine, "rot@example.org")
    monkeypatch.setenv(SECRET_ENV, "the old key")
    old_link = signer_for(engine).sign(UNSUBSCRIBE, sub.token)
    monkeypatch.setenv(SECRET_ENV, "the new key")
    with TestClient(create_app(settings, engine)) as client:
        assert client.get(f"/u/{old_link}").status_code == 400  # no previous key given
    monkeypatch.setenv(PREVIOUS_ENV, "an older key, the old key")
    with TestClient(create_app(settings, engine)) as client:
        assert client.get(f"/u/{old_link}").status_code == 200
    new_link = Links(settings, signer_for(engine)).unsubscribe(sub).rsplit("/", 1)[1]
    assert Signer("the new key").verify(UNSUBSCRIBE, new_link) == sub.token
    with pytest.raises(TokenError):
        Signer("the old key").verify(UNSUBSCRIBE, new_link)


def run_rotate(engine: Engine, tmp_path: Path, *args: str) -> Any:
    cfg = tmp_path / "rotate.toml"
    url = engine.url.render_as_string(hide_password=False)
    cfg.write_text(f'[database]\nurl = "{url}"\n', encoding="utf-8")
    app = App(str(cfg), "error")
    try:
        return CliRunner().invoke(rotate_key, list(args), obj=app)
    finally:
        app.engine(schema=False).dispose()


def test_rotate_key_command_with_the_generated_key(tmp_path: Path, engine: Engine) -> None:
    before = signer_for(engine)
    old_link = before.sign(UNSUBSCRIBE, "a subscriber's secret")
    [old_key] = signing_keys(engine)
    result = run_rotate(engine, tmp_path)
    assert result.exit_code == 0, result.output
    assert "1 older key(s) still verify" in result.output
    keys = signing_keys(engine)
    assert keys[0] == old_key and keys[-1] != old_key and len(keys) == 2
    after = signer_for(engine)
    assert after.verify(UNSUBSCRIBE, old_link) == "a subscriber's secret"
    new_link = after.sign(UNSUBSCRIBE, "x")
    with pytest.raises(TokenError):
        Signer(old_key).verify(UNSUBSCRIBE, new_link)  # new links use the new key only
    # A retired key stops verifying by itself once every link it signed has expired.
    assert signing_keys(engine, utcnow() + timedelta(seconds=LINK_MAX_AGE + 60)) == keys[-1:]
    # A leaked key: forget every older one at once.
    assert run_rotate(engine, tmp_path, "--forget-previous").exit_code == 0
    assert len(signing_keys(engine)) == 1
    with pytest.raises(TokenError):
        signer_for(engine).verify(UNSUBSCRIBE, old_link)


def test_rotate_key_refuses_when_the_key_is_in_the_environment(
    tmp_path: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, "operator's key")
    result = run_rotate(engine, tmp_path)
    assert result.exit_code == 1
    assert PREVIOUS_ENV in result.output
