"""Sign-up rate limits held in the database and counted per client behind trusted proxies.

Issue 12, A8: the counters lived in each process's memory (a restart forgot them, two web
processes each counted on their own) and only 127.0.0.1 could forward a client's address, so
behind a proxy in another container every visitor shared one bucket. Real databases (SQLite,
and PostgreSQL when LITWATCH_TEST_DATABASE_URL is set), a real uvicorn server on 127.0.0.1 and
clients bound to other loopback addresses (127.0.0.2 plays the proxy, 127.0.0.3 a stranger).
"""

from __future__ import annotations

import re
import threading
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from crawler.daemon.web import listen, serve_in_thread
from crawler.db import ratelimits
from crawler.db.engine import make_engine
from crawler.settings import ConfigError, Settings, load_settings
from digests.web import WebOptions, create_app
from tests.support.smtpserver import LocalSMTPServer

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # see tests/test_web.py
    from starlette.testclient import TestClient

TOPICS = ["fibromyalgia", "autoimmunity"]


def write_settings(tmp_path: Path, smtp_port: int, web_extra: str = "") -> Settings:
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
base_url = "http://testserver"
{web_extra}
""",
        encoding="utf-8",
    )
    return load_settings(cfg, environ={})


@pytest.fixture
def settings(tmp_path: Path, smtp_server: LocalSMTPServer) -> Settings:
    return write_settings(tmp_path, smtp_server.port)


def signup(client: TestClient | httpx.Client, email: str, forwarded_for: str = "") -> int:
    """GET the form (for its CSRF cookie and field), then POST a sign-up; the status."""
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    page = client.get("/subscribe", headers=headers)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, page.text
    data = {"csrf_token": match.group(1), "email": email, "topics": TOPICS, "format": "html"}
    return client.post("/subscribe", data=data, headers=headers).status_code


def app_client(settings: Settings, engine: Engine, limit: int) -> TestClient:
    return TestClient(create_app(settings, engine, WebOptions(client_limit=(limit, 3600.0))))


def test_two_apps_on_one_database_share_one_bucket(settings: Settings, engine: Engine) -> None:
    with app_client(settings, engine, 3) as one, app_client(settings, engine, 3) as two:
        codes = [
            signup(one, "a@example.org"),
            signup(two, "b@example.org"),
            signup(one, "c@example.org"),
            signup(two, "d@example.org"),
            signup(one, "e@example.org"),
        ]
    assert codes == [200, 200, 200, 429, 429]


def test_a_restart_keeps_the_count(settings: Settings, engine: Engine) -> None:
    url = engine.url.render_as_string(hide_password=False)
    with app_client(settings, engine, 2) as before:
        assert [signup(before, f"r{i}@example.org") for i in range(2)] == [200, 200]
    engine.dispose()
    restarted = make_engine(url)
    try:
        with app_client(settings, restarted, 2) as after:
            assert signup(after, "r9@example.org") == 429
    finally:
        restarted.dispose()


def test_concurrent_hits_from_two_engines_are_each_counted_once(engine: Engine) -> None:
    url = engine.url.render_as_string(hide_password=False)
    other = make_engine(url)
    counts: list[int] = []
    lock = threading.Lock()

    def worker(eng: Engine) -> None:
        for _ in range(10):
            seen = ratelimits.hit(eng, "race", "one key", 3600.0).count
            with lock:
                counts.append(seen)

    threads = [threading.Thread(target=worker, args=(e,)) for e in (engine, other) * 2]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        other.dispose()
    # Every hit saw its own count: none lost, none counted twice.
    assert sorted(counts) == list(range(1, 41))


def test_a_window_restarts_when_it_is_over(engine: Engine) -> None:
    t0 = datetime(2025, 3, 10, 7, 0, tzinfo=UTC)
    assert ratelimits.hit(engine, "s", "k", 60.0, t0).count == 1
    assert ratelimits.hit(engine, "s", "k", 60.0, t0 + timedelta(seconds=59)).count == 2
    later = ratelimits.hit(engine, "s", "k", 60.0, t0 + timedelta(seconds=60))
    assert (later.count, later.started) == (1, t0 + timedelta(seconds=60))
    assert ratelimits.hit(engine, "other scope", "k", 60.0, t0).count == 1


def test_trusted_proxies_setting(tmp_path: Path) -> None:
    assert write_settings(tmp_path, 25).web.trusted_proxies == ["127.0.0.1"]
    extra = 'trusted_proxies = ["127.0.0.2", "10.1.2.3/16", "::1"]'
    got = write_settings(tmp_path, 25, extra).web.trusted_proxies
    assert got == ["127.0.0.2", "10.1.0.0/16", "::1"]
    env = {"LITWATCH_WEB_TRUSTED_PROXIES": '["172.17.0.0/16"]'}  # the container's way
    assert load_settings(None, environ=env).web.trusted_proxies == ["172.17.0.0/16"]
    for bad in ('["*"]', '["proxy.example"]', '["127.0.0.1/40"]'):
        with pytest.raises(ConfigError, match="trusted_proxies"):
            write_settings(tmp_path, 25, f"trusted_proxies = {bad}")


def test_per_client_behind_a_trusted_proxy_and_per_peer_otherwise(
    tmp_path: Path, engine: Engine, smtp_server: LocalSMTPServer
) -> None:
    settings = write_settings(tmp_path, smtp_server.port, 'trusted_proxies = ["127.0.0.2"]')
    app = create_app(settings, engine, WebOptions(client_limit=(2, 3600.0)))
    sock = listen("127.0.0.1", 0)
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop = threading.Event()
    thread = serve_in_thread(app, sock, stop, settings.web.trusted_proxies)

    def client_from(peer: str) -> httpx.Client:
        transport = httpx.HTTPTransport(local_address=peer)
        return httpx.Client(base_url=base, transport=transport, timeout=10)

    try:
        with client_from("127.0.0.2") as proxy, client_from("127.0.0.3") as stranger:
            # The proxy forwards two clients: each has its own bucket of two.
            first = [signup(proxy, f"p{i}@example.org", "127.0.0.10") for i in range(3)]
            second = signup(proxy, "q@example.org", "127.0.0.11")
            # A peer that is not a trusted proxy is counted as itself, whatever it claims.
            spoofed = [signup(stranger, f"s{i}@example.org", f"127.0.0.{20 + i}") for i in range(3)]
    finally:
        stop.set()
        thread.join(timeout=10)
    assert first == [200, 200, 429]
    assert second == 200
    assert spoofed == [200, 200, 429]
