"""Subscriber web (digests.web): every route over HTTP with Starlette's TestClient.

Real databases (SQLite, and PostgreSQL when LITWATCH_TEST_DATABASE_URL is set) and a real
SMTP server on 127.0.0.1 receive the confirmation mails; nothing is mocked. Time is moved only
to make tokens old (itsdangerous stamps tokens with time.time()).
"""

from __future__ import annotations

import re
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import lxml.html
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, func, select

from crawler.cli.context import App
from crawler.cli.web_cmds import web as web_command
from crawler.daemon.web import start_web_thread
from crawler.db.engine import make_engine, transaction
from crawler.db.models import (
    CrawlRun,
    Delivery,
    DeliveryPaper,
    PaperRow,
    RateLimit,
    Subscriber,
)
from crawler.db.store import upsert
from crawler.items import Paper
from crawler.settings import Settings, load_settings
from digests import subscribers
from digests.tokens import CONFIRM, PREFERENCES, UNSUBSCRIBE, Signer, signer_for
from digests.web import WebOptions, create_app
from digests.web.mails import drain_queues, stop_queues
from digests.web.security import CSRF_COOKIE, RateLimiter
from tests.support.smtpserver import LocalSMTPServer, ReceivedMessage

with warnings.catch_warnings():
    # starlette 0.52's testclient names anyio.abc.BlockingPortal, an alias newer anyio
    # deprecates at attribute access; harmless, and not ours to fix.
    warnings.simplefilter("ignore", DeprecationWarning)
    from starlette.testclient import TestClient

BASE = "http://testserver"
TOPICS = ["fibromyalgia", "autoimmunity"]
NOW = datetime(2025, 3, 10, 7, 0, tzinfo=UTC)
HOSTILE = '<script>alert("x")</script> IL-6 <5 pg/mL & "quotes"'


# --- set-up helpers ---------------------------------------------------------------------------


def write_settings(tmp_path: Path, smtp_port: int, base_url: str = BASE) -> Settings:
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
def settings(tmp_path: Path, smtp_server: LocalSMTPServer) -> Iterator[Settings]:
    yield write_settings(tmp_path, smtp_server.port)
    # Sign-up mail is sent in the background: let it reach the server before it stops.
    drain_queues()
    stop_queues()


def make_client(settings: Settings, engine: Engine, **options: Any) -> TestClient:
    return TestClient(create_app(settings, engine, WebOptions(**options)))


@pytest.fixture
def client(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    with make_client(settings, engine) as c:
        yield c


def add_subscriber(
    engine: Engine, email: str, status: str = "active", topics: list[str] | None = None
) -> Subscriber:
    with transaction(engine) as session:
        return subscribers.add(
            session, email, known_topics=TOPICS, topics=topics or TOPICS, status=status
        )


def reload(engine: Engine, email: str) -> Subscriber:
    with transaction(engine) as session:
        sub = subscribers.find(session, email)
        assert sub is not None
        return sub


def count_subscribers(engine: Engine) -> int:
    with transaction(engine) as session:
        return session.scalar(select(func.count(Subscriber.id))) or 0


def csrf_of(client: TestClient, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, "form has no CSRF field"
    return match.group(1)


def signup(client: TestClient, email: str, token: str, **extra: Any) -> httpx.Response:
    data = {"csrf_token": token, "email": email, "topics": TOPICS, "format": "html", **extra}
    return client.post("/subscribe", data=data)


def mail_text(msg: ReceivedMessage) -> str:
    body = msg.message.get_body(preferencelist=("plain",))
    assert body is not None
    return str(body.get_content())


def confirm_link(msg: ReceivedMessage) -> str:
    match = re.search(rf"{BASE}/confirm/[A-Za-z0-9_.\-]+", mail_text(msg))
    assert match, mail_text(msg)
    return match.group(0)


def signed(engine: Engine, purpose: str, value: Any, *, age: float = 0.0) -> str:
    """A token made by the installation's key, as if issued ``age`` seconds ago."""
    signer = signer_for(engine)
    if not age:
        return signer.sign(purpose, value)
    real = time.time
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(time, "time", lambda: real() - age)
        return signer.sign(purpose, value)


def doc(response: httpx.Response) -> Any:
    return lxml.html.document_fromstring(response.text)


# --- security headers -------------------------------------------------------------------------

ROUTES = [
    ("GET", "/"),
    ("GET", "/subscribe"),
    ("POST", "/subscribe"),
    ("GET", "/confirm/not-a-token"),
    ("POST", "/confirm/not-a-token"),
    ("GET", "/u/not-a-token"),
    ("POST", "/u/not-a-token"),
    ("GET", "/preferences/not-a-token"),
    ("POST", "/preferences/not-a-token"),
    ("GET", "/archive"),
    ("GET", "/archive/2025-03-10"),
    ("GET", "/feed.atom"),
    ("GET", "/feed/fibromyalgia.atom"),
    ("GET", "/feed/nope.atom"),
    ("GET", "/healthz"),
    ("GET", "/static/site.css"),
    ("GET", "/favicon.ico"),
    ("GET", "/no/such/page"),
    ("PUT", "/subscribe"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_security_headers_on_every_route(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path)
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "script-src" not in csp and "unsafe" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] in ("no-referrer", "same-origin")
    assert response.headers["x-frame-options"] == "DENY"


def test_token_pages_are_not_cached_but_public_pages_may_be(
    client: TestClient, engine: Engine
) -> None:
    sub = add_subscriber(engine, "cache@example.org")
    personal = client.get(f"/u/{signed(engine, UNSUBSCRIBE, sub.token)}")
    assert personal.headers["cache-control"] == "no-store"
    assert "public" in client.get("/archive").headers["cache-control"]


def test_method_not_allowed_and_unknown_path(client: TestClient) -> None:
    wrong = client.put("/subscribe")
    assert wrong.status_code == 405
    assert "GET" in wrong.headers["allow"] and "POST" in wrong.headers["allow"]
    missing = client.get("/no/such/page")
    assert missing.status_code == 404
    assert doc(missing).get("lang") == "en"


def test_oversized_body_is_refused_before_parsing(client: TestClient) -> None:
    response = client.post(
        "/subscribe",
        content=b"email=" + b"a" * 100_000,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 413


def test_oversized_chunked_body_is_refused(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"email="
        for _ in range(20):
            yield b"a" * 8192

    response = client.post(
        "/subscribe",
        content=chunks(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert response.headers["x-content-type-options"] == "nosniff"


def dead_engine() -> Engine:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return make_engine(f"postgresql+psycopg://nobody@127.0.0.1:{port}/none?connect_timeout=2")


def test_server_error_page_keeps_the_security_headers(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LITWATCH_SECRET_KEY", "test-key-without-database")
    app = create_app(settings, dead_engine())
    with TestClient(app, raise_server_exceptions=False) as c:
        response = c.get("/archive")
    assert response.status_code == 500
    assert "Something went wrong" in response.text
    assert "Traceback" not in response.text and "psycopg" not in response.text
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"


# --- one-click unsubscribe (RFC 8058) -------------------------------------------------------


def test_get_unsubscribe_shows_a_button_and_changes_nothing(
    client: TestClient, engine: Engine
) -> None:
    sub = add_subscriber(engine, "reader@example.org")
    token = signed(engine, UNSUBSCRIBE, sub.token)
    page = client.get(f"/u/{token}")
    assert page.status_code == 200
    (form,) = doc(page).xpath("//form")
    assert form.get("method") == "post" and form.get("action") == f"/u/{token}"
    assert form.xpath(".//input[@name='List-Unsubscribe']/@value") == ["One-Click"]
    assert form.xpath(".//button[@type='submit']")
    assert reload(engine, "reader@example.org").status == "active"


def test_one_click_post_unsubscribes_without_cookies_or_csrf(
    settings: Settings, engine: Engine
) -> None:
    sub = add_subscriber(engine, "reader@example.org")
    token = signed(engine, UNSUBSCRIBE, sub.token)
    # A mailbox provider's POST: a fresh client, no cookies, no CSRF field, no redirects.
    with make_client(settings, engine) as provider:
        response = provider.post(
            f"/u/{token}", data={"List-Unsubscribe": "One-Click"}, follow_redirects=False
        )
    assert response.status_code == 200
    assert "unsubscribed" in response.text
    after = reload(engine, "reader@example.org")
    assert after.status == "unsubscribed"
    assert after.unsubscribed_at is not None


def test_one_click_accepts_multipart_form_data(client: TestClient, engine: Engine) -> None:
    # RFC 8058 section 3.1 allows either form encoding.
    sub = add_subscriber(engine, "multi@example.org")
    boundary = "litwatchboundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
        f"One-Click\r\n--{boundary}--\r\n"
    ).encode()
    response = client.post(
        f"/u/{signed(engine, UNSUBSCRIBE, sub.token)}",
        content=body,
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 200
    assert reload(engine, "multi@example.org").status == "unsubscribed"


def test_replayed_one_click_post_is_idempotent(client: TestClient, engine: Engine) -> None:
    sub = add_subscriber(engine, "reader@example.org")
    url = f"/u/{signed(engine, UNSUBSCRIBE, sub.token)}"
    first = client.post(url, data={"List-Unsubscribe": "One-Click"})
    when = reload(engine, "reader@example.org").unsubscribed_at
    time.sleep(0.01)
    second = client.post(url, data={"List-Unsubscribe": "One-Click"})
    assert first.status_code == second.status_code == 200
    after = reload(engine, "reader@example.org")
    assert after.status == "unsubscribed"
    assert after.unsubscribed_at == when
    # The GET page now says so instead of offering the button again.
    assert not doc(client.get(url)).xpath("//form")


def test_one_click_post_without_the_body_changes_nothing(
    client: TestClient, engine: Engine
) -> None:
    sub = add_subscriber(engine, "reader@example.org")
    url = f"/u/{signed(engine, UNSUBSCRIBE, sub.token)}"
    assert client.post(url).status_code == 400
    assert client.post(url, data={"List-Unsubscribe": "Yes"}).status_code == 400
    assert reload(engine, "reader@example.org").status == "active"


def bad_tokens(engine: Engine, secret: str, purpose: str) -> dict[str, str]:
    good = signed(engine, purpose, secret)
    other = PREFERENCES if purpose != PREFERENCES else UNSUBSCRIBE
    flipped = good[:-2] + ("A" if good[-2] != "A" else "B") + good[-1]
    return {
        "forged with another key": Signer("not-the-installation-key").sign(purpose, secret),
        "tampered signature": flipped,
        "another purpose": signed(engine, other, secret),
        "garbage": "x" * 40,
        "too long": good + "a" * 600,
    }


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_forged_unsubscribe_tokens_are_refused(
    client: TestClient, engine: Engine, method: str
) -> None:
    sub = add_subscriber(engine, "reader@example.org")
    for why, token in bad_tokens(engine, sub.token, UNSUBSCRIBE).items():
        response = client.request(method, f"/u/{token}", data={"List-Unsubscribe": "One-Click"})
        assert response.status_code == 400, why
        assert "reader@example.org" not in response.text, why
    assert reload(engine, "reader@example.org").status == "active"


def test_valid_token_of_a_deleted_subscriber_is_404(client: TestClient, engine: Engine) -> None:
    token = signed(engine, UNSUBSCRIBE, "a-secret-nobody-holds")
    assert client.get(f"/u/{token}").status_code == 404
    assert client.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"}).status_code == 404


# --- sign-up and double opt-in ----------------------------------------------------------------


def test_subscribe_form_is_accessible(client: TestClient) -> None:
    page = client.get("/subscribe")
    tree = doc(page)
    assert tree.get("lang") == "en"
    assert not tree.xpath("//script") and not tree.xpath("//*[@style]")
    inputs = tree.xpath("//form//input[not(@type='hidden')]|//form//select")
    assert {i.get("name") for i in inputs} == {"email", "topics", "format"}
    for element in inputs:
        ident = element.get("id")
        assert ident and tree.xpath(f"//label[@for='{ident}']"), element.get("name")
    assert {b.text for b in tree.xpath("//fieldset/legend")} == {"Topics", "E-mail format"}
    assert page.cookies.get(CSRF_COOKIE)
    assert "samesite=strict" in page.headers["set-cookie"].lower()
    assert "httponly" in page.headers["set-cookie"].lower()


def test_signup_sends_a_confirmation_and_the_button_activates(
    client: TestClient, engine: Engine, smtp_server: LocalSMTPServer
) -> None:
    token = csrf_of(client, "/subscribe")
    response = signup(client, "New.Reader@Example.org", token, topics=["autoimmunity"])
    assert response.status_code == 200
    assert "Check your inbox" in response.text
    pending = reload(engine, "new.reader@example.org")
    assert pending.status == "pending" and pending.confirmed_at is None

    (mail,) = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ("New.Reader@example.org",)
    assert mail.message["Subject"] == "Confirm your litwatch subscription"
    link = confirm_link(mail)

    page = client.get(link)  # a link scanner's GET changes nothing
    assert page.status_code == 200
    assert doc(page).xpath("//form[@method='post']//button")
    assert reload(engine, "new.reader@example.org").status == "pending"

    done = client.post(link)
    assert done.status_code == 200
    active = reload(engine, "new.reader@example.org")
    assert active.status == "active" and active.confirmed_at is not None
    assert active.topics == ["autoimmunity"] and active.format == "html"
    # The page links to the subscriber's own preferences.
    prefs = doc(done).xpath("//a[contains(@href, '/preferences/')]/@href")
    assert prefs and client.get(prefs[0]).status_code == 200

    again = client.post(link)  # a replay: same answer, nothing changes
    assert again.status_code == 200
    assert reload(engine, "new.reader@example.org").confirmed_at == active.confirmed_at


def test_expired_confirmation_link_is_refused(client: TestClient, engine: Engine) -> None:
    sub = add_subscriber(engine, "late@example.org", status="pending")
    payload = {"s": sub.token, "t": TOPICS, "f": "text", "i": time.time() - 49 * 3600}
    old = signed(engine, CONFIRM, payload, age=49 * 3600)
    assert client.get(f"/confirm/{old}").status_code == 400
    response = client.post(f"/confirm/{old}")
    assert response.status_code == 400 and "expired" in response.text
    assert reload(engine, "late@example.org").status == "pending"
    # Within the 48 hours it still works.
    recent = signed(engine, CONFIRM, {**payload, "i": time.time() - 47 * 3600}, age=47 * 3600)
    assert client.post(f"/confirm/{recent}").status_code == 200
    assert reload(engine, "late@example.org").format == "text"


def test_forged_confirmation_links_are_refused(client: TestClient, engine: Engine) -> None:
    sub = add_subscriber(engine, "pending@example.org", status="pending")
    payload = {"s": sub.token, "t": TOPICS, "f": "html", "i": time.time()}
    forged = Signer("attacker-key").sign(CONFIRM, payload)
    wrong_purpose = signed(engine, UNSUBSCRIBE, payload)
    wrong_shape = signed(engine, CONFIRM, sub.token)  # a bare string, not our payload
    for token in (forged, wrong_purpose, wrong_shape, "garbage"):
        assert client.post(f"/confirm/{token}").status_code == 400
        assert client.get(f"/confirm/{token}").status_code == 400
    assert reload(engine, "pending@example.org").status == "pending"


def test_no_enumeration_same_answer_for_new_pending_active_and_unsubscribed(
    client: TestClient, engine: Engine, smtp_server: LocalSMTPServer
) -> None:
    add_subscriber(engine, "pending@example.org", status="pending")
    add_subscriber(engine, "active@example.org", status="active", topics=["fibromyalgia"])
    left = add_subscriber(engine, "left@example.org", status="active")
    client.post(
        f"/u/{signed(engine, UNSUBSCRIBE, left.token)}", data={"List-Unsubscribe": "One-Click"}
    )
    token = csrf_of(client, "/subscribe")
    answers = {
        email: signup(client, email, token, format="text")
        for email in (
            "new@example.org",
            "pending@example.org",
            "active@example.org",
            "left@example.org",
        )
    }

    def comparable(r: httpx.Response) -> tuple[int, bytes, list[tuple[str, str]]]:
        headers = sorted((k, v) for k, v in r.headers.items() if k.lower() != "date")
        return r.status_code, r.content, headers

    first = comparable(answers["new@example.org"])
    assert first[0] == 200
    for email, response in answers.items():
        assert comparable(response) == first, email
        assert "set-cookie" not in response.headers
    # Each request cost exactly one mail, whatever the state.
    mails = smtp_server.wait_for(4)
    assert sorted(m.rcpt_tos[0] for m in mails) == sorted(answers)
    # The active subscriber got no second subscription and no change.
    assert count_subscribers(engine) == 4
    active = reload(engine, "active@example.org")
    assert (
        active.status == "active" and active.topics == ["fibromyalgia"] and active.format == "html"
    )
    note = next(m for m in mails if m.rcpt_tos == ("active@example.org",))
    assert "already subscribed" in mail_text(note) and "/confirm/" not in mail_text(note)
    # Withdrawn consent stays withdrawn until the new link is used.
    assert reload(engine, "left@example.org").status == "unsubscribed"


def test_unsubscribed_address_needs_a_fresh_confirmation(
    client: TestClient, engine: Engine, smtp_server: LocalSMTPServer
) -> None:
    token = csrf_of(client, "/subscribe")
    signup(client, "back@example.org", token)
    old_link = confirm_link(smtp_server.wait_for(1)[0])
    client.post(old_link)
    sub = reload(engine, "back@example.org")
    assert sub.status == "active"
    client.post(
        f"/u/{signed(engine, UNSUBSCRIBE, sub.token)}", data={"List-Unsubscribe": "One-Click"}
    )
    assert reload(engine, "back@example.org").status == "unsubscribed"

    # A link sent before the unsubscribe cannot undo it.
    stale = client.post(old_link)
    assert stale.status_code == 410
    assert reload(engine, "back@example.org").status == "unsubscribed"

    signup(client, "back@example.org", token, topics=["fibromyalgia"])
    assert reload(engine, "back@example.org").status == "unsubscribed"  # not until confirmed
    fresh = confirm_link(smtp_server.wait_for(2)[1])
    assert client.post(fresh).status_code == 200
    again = reload(engine, "back@example.org")
    assert again.status == "active" and again.topics == ["fibromyalgia"]
    assert again.unsubscribed_at is None


def test_pending_signup_is_refreshed_not_duplicated(
    client: TestClient, engine: Engine, smtp_server: LocalSMTPServer
) -> None:
    token = csrf_of(client, "/subscribe")
    signup(client, "twice@example.org", token, topics=["fibromyalgia"])
    signup(client, "TWICE@example.org", token, topics=["autoimmunity"], format="text")
    assert count_subscribers(engine) == 1
    sub = reload(engine, "twice@example.org")
    assert sub.status == "pending" and sub.topics == ["autoimmunity"] and sub.format == "text"
    assert len(smtp_server.wait_for(2)) == 2


def test_csrf_failures_are_refused_without_side_effects(
    settings: Settings, engine: Engine, smtp_server: LocalSMTPServer
) -> None:
    with make_client(settings, engine) as victim, make_client(settings, engine) as attacker:
        good = csrf_of(victim, "/subscribe")
        other = csrf_of(attacker, "/subscribe")  # valid, but for the attacker's cookie
        cases: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
            "no token": ({}, {}),
            "token of another browser": ({"csrf_token": other}, {}),
            "tampered token": ({"csrf_token": good[:-3] + "abc"}, {}),
            "unsigned cookie value": ({"csrf_token": victim.cookies[CSRF_COOKIE]}, {}),
            "foreign origin": ({"csrf_token": good}, {"origin": "https://evil.example"}),
        }
        for why, (fields, headers) in cases.items():
            data = {"email": "victim@example.org", "topics": TOPICS, "format": "html", **fields}
            response = victim.post("/subscribe", data=data, headers=headers)
            assert response.status_code == 403, why
        expired = signed(engine, "csrf", victim.cookies[CSRF_COOKIE], age=13 * 3600)
        assert signup(victim, "victim@example.org", expired).status_code == 403
        victim.cookies.clear()
        assert signup(victim, "victim@example.org", good).status_code == 403  # no cookie
        # The same origin, sent by browsers on a POST, is fine.
        fresh = csrf_of(victim, "/subscribe")
        ok = victim.post(
            "/subscribe",
            data={
                "csrf_token": fresh,
                "email": "fine@example.org",
                "topics": TOPICS,
                "format": "html",
            },
            headers={"origin": BASE},
        )
        assert ok.status_code == 200
    assert count_subscribers(engine) == 1
    assert [m.rcpt_tos for m in smtp_server.wait_for(1)] == [("fine@example.org",)]


def test_invalid_input_is_shown_escaped_and_nothing_is_recorded(
    client: TestClient, engine: Engine, smtp_server: LocalSMTPServer
) -> None:
    token = csrf_of(client, "/subscribe")
    bad = signup(client, '"><script>alert(1)</script>@example.org', token)
    assert bad.status_code == 400
    assert "<script>alert(1)" not in bad.text
    tree = doc(bad)
    assert not tree.xpath("//script")
    assert tree.xpath("//input[@name='email']/@value") == [
        '"><script>alert(1)</script>@example.org'
    ]
    assert tree.xpath("//*[@role='alert']")
    assert signup(client, "ok@example.org", token, topics=["astrology"]).status_code == 400
    assert signup(client, "ok@example.org", token, topics=[]).status_code == 400
    assert signup(client, "ok@example.org", token, format="pdf").status_code == 400
    assert count_subscribers(engine) == 0
    assert smtp_server.messages == []


def test_rate_limit_per_address(
    settings: Settings, engine: Engine, smtp_server: LocalSMTPServer
) -> None:
    with make_client(settings, engine, address_limit=(2, 3600.0)) as c:
        token = csrf_of(c, "/subscribe")
        assert signup(c, "flood@example.org", token).status_code == 200
        assert signup(c, "FLOOD@example.org", token).status_code == 200
        blocked = signup(c, "Flood@Example.org", token)
        assert blocked.status_code == 429
        assert int(blocked.headers["retry-after"]) > 0
        assert signup(c, "other@example.org", token).status_code == 200
    assert len(smtp_server.wait_for(3)) == 3
    time.sleep(0.2)
    assert len(smtp_server.messages) == 3  # the refused request sent nothing


def test_rate_limit_per_client(settings: Settings, engine: Engine) -> None:
    with make_client(settings, engine, client_limit=(3, 3600.0)) as c:
        token = csrf_of(c, "/subscribe")
        codes = [signup(c, f"reader{i}@example.org", token).status_code for i in range(4)]
    assert codes == [200, 200, 200, 429]
    assert count_subscribers(engine) == 3


def test_rate_limiter_window_restarts_and_old_windows_are_pruned(engine: Engine) -> None:
    # Counted in the database (rate_limits): a fixed window, not a sliding one.
    now = [datetime(2025, 3, 10, 7, 0, tzinfo=UTC)]
    limiter = RateLimiter(engine, "test", 2, 60.0, clock=lambda: now[0], prune_every=3)
    assert limiter.hit("a") == 0 and limiter.hit("a") == 0
    assert limiter.hit("a") == pytest.approx(60.0)  # third hit: prunes nothing, then refused
    assert limiter.hit("b") == 0
    now[0] += timedelta(seconds=30)
    assert limiter.hit("a") == pytest.approx(30.0)
    now[0] += timedelta(seconds=30.5)
    assert limiter.hit("a") == 0  # a new window; this sixth hit pruned both stale rows first
    with transaction(engine) as session:
        assert session.scalar(select(func.count()).select_from(RateLimit)) == 1


def test_mail_server_down_gives_the_same_answer_for_any_address_and_the_mail_waits(
    tmp_path: Path, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """The mail is sent outside the request (issue 12 A7): the page cannot depend on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    settings = write_settings(tmp_path, closed_port)
    add_subscriber(engine, "known@example.org")
    try:
        with make_client(settings, engine) as c:
            token = csrf_of(c, "/subscribe")
            unknown = signup(c, "unknown@example.org", token)
            known = signup(c, "known@example.org", token)
        assert unknown.status_code == known.status_code == 200
        assert unknown.content == known.content
        assert drain_queues()
        failed = (
            f"event=web.mail_failed error='cannot connect to SMTP server 127.0.0.1:{closed_port}"
        )
        assert caplog.text.count(failed) == 2  # each waits for its retry
    finally:
        stop_queues()


# --- preferences ------------------------------------------------------------------------------


def test_preferences_show_and_save(client: TestClient, engine: Engine) -> None:
    sub = add_subscriber(engine, "prefs@example.org")
    url = f"/preferences/{signed(engine, PREFERENCES, sub.token)}"
    page = client.get(url)
    tree = doc(page)
    assert sorted(tree.xpath("//input[@name='topics'][@checked]/@value")) == sorted(TOPICS)
    assert tree.xpath("//input[@name='format'][@checked]/@value") == ["html"]
    assert tree.xpath("//select[@name='timezone']/option[@selected]/@value") == ["UTC"]
    for element in tree.xpath("//form//input[not(@type='hidden')]|//form//select"):
        assert tree.xpath(f"//label[@for='{element.get('id')}']")
    token = tree.xpath("//input[@name='csrf_token']/@value")[0]
    saved = client.post(
        url,
        data={
            "csrf_token": token,
            "action": "save",
            "topics": ["autoimmunity"],
            "format": "text",
            "timezone": "Europe/Oslo",
        },
    )
    assert saved.status_code == 200 and "saved" in saved.text
    after = reload(engine, "prefs@example.org")
    assert (after.topics, after.format, after.timezone) == (["autoimmunity"], "text", "Europe/Oslo")
    assert after.status == "active"


def test_preferences_refuse_bad_input_and_missing_csrf(client: TestClient, engine: Engine) -> None:
    sub = add_subscriber(engine, "prefs@example.org")
    url = f"/preferences/{signed(engine, PREFERENCES, sub.token)}"
    token = csrf_of(client, url)
    base = {"csrf_token": token, "action": "save", "topics": TOPICS, "format": "html"}
    assert client.post(url, data={**base, "timezone": "Mars/Olympus"}).status_code == 400
    assert client.post(url, data={**base, "timezone": "UTC", "topics": []}).status_code == 400
    no_csrf = {k: v for k, v in base.items() if k != "csrf_token"}
    assert client.post(url, data={**no_csrf, "timezone": "Asia/Tokyo"}).status_code == 403
    leave = client.post(url, data={"action": "leave"})
    assert leave.status_code == 403
    after = reload(engine, "prefs@example.org")
    assert (after.timezone, after.topics, after.status) == ("UTC", TOPICS, "active")


def test_preferences_leave_and_no_resubscribe_by_saving(client: TestClient, engine: Engine) -> None:
    sub = add_subscriber(engine, "prefs@example.org")
    url = f"/preferences/{signed(engine, PREFERENCES, sub.token)}"
    token = csrf_of(client, url)
    left = client.post(url, data={"csrf_token": token, "action": "leave"})
    assert left.status_code == 200
    assert reload(engine, "prefs@example.org").status == "unsubscribed"
    save = {"csrf_token": token, "action": "save", "topics": TOPICS, "format": "text"}
    assert client.post(url, data={**save, "timezone": "UTC"}).status_code == 409
    after = reload(engine, "prefs@example.org")
    assert after.status == "unsubscribed" and after.format == "html"
    assert not doc(client.get(url)).xpath("//form")


def test_forged_preferences_tokens_are_refused(client: TestClient, engine: Engine) -> None:
    sub = add_subscriber(engine, "prefs@example.org")
    for why, token in bad_tokens(engine, sub.token, PREFERENCES).items():
        assert client.get(f"/preferences/{token}").status_code == 400, why
        assert client.post(f"/preferences/{token}", data={"action": "leave"}).status_code == 400
    assert reload(engine, "prefs@example.org").status == "active"


# --- archive ----------------------------------------------------------------------------------


def add_paper(engine: Engine, title: str, doi: str, topics: list[str], **extra: Any) -> int:
    item = Paper(
        source_id="pubmed",
        origin="pubmed",
        url=f"https://pubmed.ncbi.nlm.nih.gov/{extra.get('pmid', '1')}/",
        doi=doi,
        title=title,
        topics=topics,
        **extra,
    )
    upsert(engine, [item], now=NOW - timedelta(days=2))
    with transaction(engine) as session:
        pid = session.scalar(select(PaperRow.id).where(PaperRow.doi == doi))
        assert pid is not None
        return pid


def add_delivery(
    engine: Engine, sub: Subscriber, period: date, paper_ids: list[int], state: str = "sent"
) -> None:
    with transaction(engine) as session:
        delivery = Delivery(
            subscriber_id=sub.id,
            period=period,
            cutoff=NOW,
            state=state,
            attempts=1,
            message_id=f"<{sub.id}.{period}@example.org>",
            paper_count=len(paper_ids),
            created_at=NOW,
            sent_at=NOW if state == "sent" else None,
        )
        session.add(delivery)
        session.flush()
        session.add_all([DeliveryPaper(delivery_id=delivery.id, paper_id=p) for p in paper_ids])


def test_archive_lists_sent_periods_and_shows_each_digest(
    client: TestClient, engine: Engine
) -> None:
    fibro = add_paper(engine, "Sleep in fibromyalgia", "10.1000/fm.1", ["fibromyalgia"], pmid="11")
    auto = add_paper(engine, HOSTILE, "10.1000/ai.2", ["autoimmunity"], pmid="12")
    both = add_paper(engine, "Autoantibodies in FM", "10.1000/both.3", TOPICS, pmid="13")
    unsent = add_paper(engine, "Still pending", "10.1000/pend.4", ["fibromyalgia"], pmid="14")
    a = add_subscriber(engine, "a@example.org", topics=["fibromyalgia"])
    b = add_subscriber(engine, "b@example.org", topics=["autoimmunity"])
    c = add_subscriber(engine, "c@example.org")
    add_delivery(engine, a, date(2025, 3, 10), [fibro, both])
    add_delivery(engine, b, date(2025, 3, 10), [auto, both])
    add_delivery(engine, a, date(2025, 3, 3), [fibro])
    add_delivery(engine, c, date(2025, 2, 24), [unsent], state="pending")

    listing = doc(client.get("/archive"))
    items = [
        " ".join(li.text_content().split()) for li in listing.xpath("//ul[@class='periods']/li")
    ]
    assert items == ["10 Mar 2025: 3 papers", "3 Mar 2025: 1 paper"]
    assert listing.xpath("//ul[@class='periods']//a/@href") == [
        "/archive/2025-03-10",
        "/archive/2025-03-03",
    ]

    page = client.get("/archive/2025-03-10")
    assert page.status_code == 200
    tree = doc(page)
    titles = [t.text_content() for t in tree.xpath("//p[@class='title']")]
    assert sorted(titles) == sorted(["Sleep in fibromyalgia", HOSTILE, "Autoantibodies in FM"])
    # The overlap section comes first; the hostile title is text, never markup.
    assert tree.xpath("//h2[@class='section']")[0].text == "Where fibromyalgia meets autoimmunity"
    assert not tree.xpath("//script") and "<script>alert" not in page.text
    # Escaped exactly once: "<5" shows as written, never as "&amp;lt;5".
    assert "IL-6 &lt;5 pg/mL &amp; &#34;quotes&#34;" in page.text
    assert "&amp;lt;" not in page.text
    assert "https://doi.org/10.1000/fm.1" in tree.xpath("//p[@class='title']/a/@href")
    assert "Still pending" not in page.text


@pytest.mark.parametrize(
    "period", ["2025-02-24", "2025-03-17", "2025-13-01", "yesterday", "2025-3-3"]
)
def test_archive_unknown_or_malformed_period_is_404(
    client: TestClient, engine: Engine, period: str
) -> None:
    pid = add_paper(engine, "A paper", "10.1000/x.1", ["fibromyalgia"])
    sub = add_subscriber(engine, "a@example.org")
    add_delivery(engine, sub, date(2025, 2, 24), [pid], state="pending")
    assert client.get(f"/archive/{period}").status_code == 404


def test_empty_archive(client: TestClient) -> None:
    page = client.get("/archive")
    assert page.status_code == 200 and "No digest has been sent yet" in page.text


# --- health -----------------------------------------------------------------------------------


def test_healthz_reports_database_and_last_times(client: TestClient, engine: Engine) -> None:
    empty = client.get("/healthz")
    assert empty.status_code == 200
    assert empty.json() == {"database": "ok", "last_crawl": None, "last_digest": None}
    finished = datetime(2025, 3, 9, 6, 30, tzinfo=UTC)
    with transaction(engine) as session:
        session.add(
            CrawlRun(
                source_id="pubmed",
                started_at=finished - timedelta(minutes=5),
                finished_at=finished,
                status="ok",
            )
        )
        later = finished + timedelta(hours=1)
        session.add(
            CrawlRun(source_id="feed", started_at=later, finished_at=later, status="failed")
        )
    sub = add_subscriber(engine, "a@example.org")
    add_delivery(engine, sub, date(2025, 3, 10), [])
    report = client.get("/healthz").json()
    assert report["database"] == "ok"
    assert datetime.fromisoformat(report["last_crawl"]) == finished  # the failed run is not one
    assert datetime.fromisoformat(report["last_digest"]) == NOW


def test_healthz_503_when_the_database_is_unreachable(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LITWATCH_SECRET_KEY", "test-key-without-database")
    with TestClient(create_app(settings, dead_engine())) as c:
        response = c.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"database": "error", "last_crawl": None, "last_digest": None}


# --- serving: the daemon thread and the CLI --------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_web_thread_serves_until_stopped(tmp_path: Path, engine: Engine) -> None:
    port = free_port()
    settings = write_settings(tmp_path, 25, base_url=f"http://127.0.0.1:{port}")
    settings = settings.model_copy(update={"web": settings.web.model_copy(update={"port": port})})
    stop = threading.Event()
    thread = start_web_thread(settings, engine, stop)
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert response.status_code == 200 and response.json()["database"] == "ok"
        assert "server" not in response.headers
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_web_command_reports_a_busy_port(tmp_path: Path, db_url: str) -> None:
    cfg = tmp_path / "web.toml"
    cfg.write_text(f'[database]\nurl = "{db_url}"\n', encoding="utf-8")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        app = App(str(cfg), "error")
        try:
            result = CliRunner().invoke(
                web_command, ["--host", "127.0.0.1", "--port", str(port)], obj=app
            )
        finally:
            app.engine(schema=False).dispose()
    assert result.exit_code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.output


def test_web_command_refuses_an_unusable_dkim_key(tmp_path: Path, db_url: str) -> None:
    cfg = tmp_path / "web.toml"
    missing = tmp_path / "no-such.private"
    cfg.write_text(
        f'[database]\nurl = "{db_url}"\n[email.dkim]\ndomain = "example.org"\n'
        f'selector = "lw"\nkey_file = "{missing}"\n',
        encoding="utf-8",
    )
    app = App(str(cfg), "error")
    try:
        result = CliRunner().invoke(web_command, ["--host", "127.0.0.1", "--port", "0"], obj=app)
    finally:
        app.engine(schema=False).dispose()
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()  # one line, before serving anything
    assert "DKIM" in line and str(missing) in line and "serving" not in result.output


def test_preferences_opt_out_of_updates_on_papers_sent(client: TestClient, engine: Engine) -> None:
    sub = add_subscriber(engine, "updates@example.org")
    url = f"/preferences/{signed(engine, PREFERENCES, sub.token)}"
    tree = doc(client.get(url))
    assert tree.xpath("//input[@name='updates'][@checked]/@value") == ["yes"]
    token = tree.xpath("//input[@name='csrf_token']/@value")[0]
    form = {"csrf_token": token, "action": "save", "topics": ["autoimmunity"], "format": "html",
            "timezone": "UTC"}  # fmt: skip
    assert client.post(url, data=form).status_code == 200  # the box left unticked
    assert reload(engine, "updates@example.org").updates is False
    assert not doc(client.get(url)).xpath("//input[@name='updates'][@checked]")
    assert client.post(url, data=form | {"updates": "yes"}).status_code == 200
    assert reload(engine, "updates@example.org").updates is True
