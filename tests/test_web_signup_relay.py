"""A stalled mail relay must not freeze the web pages (issue 12 A7).

Sign-up mail used to be sent inside the request: with a relay that accepts connections and
never greets, 45 sign-ups took every worker thread and /healthz and the one-click
unsubscribe waited for them. Here the real web server (uvicorn in a thread, as ``litwatch
web`` and the daemon run it) talks to such a relay on 127.0.0.1: a listening socket that
never accepts, so connections complete and then hear nothing.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from crawler.daemon.web import listen, serve_in_thread
from crawler.db.engine import transaction
from crawler.settings import Settings, load_settings
from digests import subscribers
from digests.tokens import UNSUBSCRIBE, signer_for
from digests.web import WebOptions, create_app
from digests.web.mails import stop_queues

SIGNUPS = 45
RELAY_TIMEOUT = 30  # seconds smtplib waits for the greeting that never comes (the default)


@pytest.fixture
def stalled_relay() -> Iterator[int]:
    """A port on 127.0.0.1 that takes TCP connections and never says a word."""
    with socket.create_server(("127.0.0.1", 0), backlog=SIGNUPS + 5) as sock:
        yield sock.getsockname()[1]
    stop_queues()


def relay_settings(tmp_path: Path, port: int, base_url: str) -> Settings:
    cfg = tmp_path / "litwatch.toml"
    cfg.write_text(
        f"""
[email]
backend = "smtp"
from = "litwatch <digest@example.org>"
[email.smtp]
host = "127.0.0.1"
port = {port}
starttls = false
timeout = "{RELAY_TIMEOUT}s"
[web]
base_url = "{base_url}"
""",
        encoding="utf-8",
    )
    return load_settings(cfg, environ={})


@pytest.fixture
def web(tmp_path: Path, engine: Engine, stalled_relay: int) -> Iterator[str]:
    """The web server's base URL, serving until the test ends."""
    sock = listen("127.0.0.1", 0)
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = relay_settings(tmp_path, stalled_relay, base)
    app = create_app(settings, engine, WebOptions(client_limit=(1000, 3600.0)))
    stop = threading.Event()
    thread = serve_in_thread(app, sock, stop)
    yield base
    stop.set()
    thread.join(timeout=15)


def timed(call: object) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()  # type: ignore[operator]
    return response, time.monotonic() - started


def test_a_stalled_relay_leaves_unsubscribe_and_healthz_answering_at_once(
    web: str, engine: Engine
) -> None:
    with transaction(engine) as session:
        reader = subscribers.add(
            session, "reader@example.org", known_topics=["fibromyalgia", "autoimmunity"]
        )
    one_click = f"{web}/u/{signer_for(engine).sign(UNSUBSCRIBE, reader.token)}"
    with httpx.Client(base_url=web, timeout=60) as browser:
        form = browser.get("/subscribe")
        match = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert match
        token, cookies = match.group(1), dict(browser.cookies)

    def sign_up(i: int) -> tuple[int, float]:
        data = {
            "csrf_token": token,
            "email": f"new{i}@example.org",
            "topics": "fibromyalgia",
            "format": "html",
        }
        with httpx.Client(base_url=web, cookies=cookies, timeout=60) as client:
            response, seconds = timed(lambda: client.post("/subscribe", data=data))
        return response.status_code, seconds

    with ThreadPoolExecutor(SIGNUPS) as pool:
        signups = [pool.submit(sign_up, i) for i in range(SIGNUPS)]
        time.sleep(0.5)  # the sign-ups are in
        with httpx.Client(timeout=60) as probe:
            health, health_seconds = timed(lambda: probe.get(f"{web}/healthz"))
            left, left_seconds = timed(
                lambda: probe.post(one_click, data={"List-Unsubscribe": "One-Click"})
            )
        answers = [f.result() for f in signups]

    assert health.status_code == 200 and health_seconds < 1.0
    assert left.status_code == 200 and left_seconds < 1.0
    with transaction(engine) as session:
        found = subscribers.find(session, "reader@example.org")
        assert found is not None and found.status == "unsubscribed"
    # Every sign-up was answered (its mail waits for the relay), none after the relay's timeout.
    assert [code for code, _ in answers] == [200] * SIGNUPS
    assert max(seconds for _, seconds in answers) < RELAY_TIMEOUT / 3
