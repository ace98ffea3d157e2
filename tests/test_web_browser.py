"""The subscriber's whole journey in a real browser (headless Debian Chromium via Playwright).

A real uvicorn server (crawler.daemon.web) on 127.0.0.1, a real SMTP server receiving the
confirmation mail and a digest sent by digests.send.send_digests: sign up on the form, follow
the link in the mail, confirm, change preferences, read the web version of the digest, then
unsubscribe from the digest's List-Unsubscribe link. The database is checked after each step,
and a screenshot of every page is saved in test-output/web-browser/ (git-ignored).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from crawler.daemon.web import listen, serve_in_thread
from crawler.db.engine import transaction
from crawler.db.models import Subscriber, utcnow
from crawler.db.store import upsert
from crawler.items import Paper
from crawler.settings import Settings
from digests import subscribers
from digests.send import send_digests
from digests.web import create_app
from tests.support.db import migrated_engine
from tests.support.smtpserver import LocalSMTPServer, ReceivedMessage
from tests.test_web import write_settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = Path(__file__).resolve().parent.parent / "test-output" / "web-browser"
EMAIL = "Browser.Reader@example.org"
HOSTILE = "<script>alert('title')</script> Autoantibodies & IL-6 <5 pg/mL in fibromyalgia"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (install Debian's chromium package)"
)


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    eng = migrated_engine(sqlite_url)
    yield eng
    eng.dispose()


@pytest.fixture
def server(
    tmp_path: Path, engine: Engine, smtp_server: LocalSMTPServer
) -> Iterator[tuple[str, Settings]]:
    """The web app served by uvicorn on an ephemeral port: (base URL, settings)."""
    sock = listen("127.0.0.1", 0)
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = write_settings(tmp_path, smtp_server.port, base)
    stop = threading.Event()
    thread = serve_in_thread(create_app(settings, engine), sock, stop)
    yield base, settings
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()


@pytest.fixture
def browser(server: tuple[str, Settings]) -> Iterator[tuple[Any, list[str]]]:
    """A Chromium tab, and the list of console errors and failed requests it collects."""
    playwright = pytest.importorskip("playwright.sync_api")
    problems: list[str] = []
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            tab = browser.new_page(viewport={"width": 900, "height": 900})
            tab.set_default_timeout(15_000)
            # A CSP violation (inline style, script) or a missing stylesheet shows up here.
            tab.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            tab.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
            yield tab, problems
        finally:
            browser.close()
    assert problems == []


def shoot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def subscriber(engine: Engine) -> Subscriber:
    with transaction(engine) as session:
        sub = subscribers.find(session, EMAIL)
        assert sub is not None
        return sub


def link_in(msg: ReceivedMessage, pattern: str) -> str:
    body = msg.message.get_body(preferencelist=("plain",))
    assert body is not None
    match = re.search(pattern, str(body.get_content()))
    assert match, body.get_content()
    return match.group(0)


def store_papers(engine: Engine) -> None:
    seen = utcnow() - timedelta(days=1)
    papers = [
        Paper(
            source_id="pubmed",
            origin="pubmed",
            doi="10.1000/browser.1",
            pmid="39000001",
            title=HOSTILE,
            abstract="Serum autoantibodies were measured in 120 patients.",
            journal="Pain Reports",
            published=date(2025, 3, 1),
            authors=["Ann Smith", "Bo Li"],
            publication_types=["Journal Article"],
            topics=["fibromyalgia", "autoimmunity"],
        ),
        Paper(
            source_id="pubmed",
            origin="pubmed",
            doi="10.1000/browser.2",
            pmid="39000002",
            title="Lupus flares and vitamin D",
            journal="Lupus",
            publication_types=["Randomized Controlled Trial"],
            topics=["autoimmunity"],
        ),
    ]
    upsert(engine, papers, now=seen)


def test_sign_up_confirm_preferences_and_unsubscribe_in_chromium(
    browser: tuple[Any, list[str]],
    server: tuple[str, Settings],
    engine: Engine,
    smtp_server: LocalSMTPServer,
) -> None:
    page, problems = browser
    base, settings = server
    store_papers(engine)

    # 1. The sign-up form.
    page.goto(f"{base}/subscribe")
    shoot(page, "1-subscribe")
    page.get_by_label("E-mail address").fill(EMAIL)
    page.get_by_label("Autoimmunity").uncheck()
    page.get_by_label("Plain text").check()
    page.get_by_label("Formatted (HTML)").check()
    page.get_by_role("button", name="Subscribe").click()
    page.get_by_role("heading", name="Check your inbox").wait_for()
    shoot(page, "2-check-inbox")
    assert subscriber(engine).status == "pending"

    # 2. The confirmation mail, its link, and the button.
    (mail,) = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ("Browser.Reader@example.org",)
    link = link_in(mail, re.escape(base) + r"/confirm/[A-Za-z0-9_.\-]+")
    page.goto(link)
    shoot(page, "3-confirm")
    assert subscriber(engine).status == "pending"  # opening the link changes nothing
    page.get_by_role("button", name="Confirm my subscription").click()
    page.get_by_role("heading", name="You are subscribed").wait_for()
    shoot(page, "4-confirmed")
    sub = subscriber(engine)
    assert (sub.status, sub.topics, sub.format) == ("active", ["fibromyalgia"], "html")

    # 3. Preferences, reached from the confirmation page.
    page.get_by_role("link", name="change your topics, format or time zone now").click()
    page.get_by_role("heading", name="Your preferences").wait_for()
    shoot(page, "5-preferences")
    page.get_by_label("Autoimmunity").check()
    page.get_by_label("Time zone").select_option("Europe/Oslo")
    page.get_by_role("button", name="Save preferences").click()
    page.get_by_text("Your preferences were saved.").wait_for()
    shoot(page, "6-preferences-saved")
    sub = subscriber(engine)
    assert sub.topics == ["fibromyalgia", "autoimmunity"] and sub.timezone == "Europe/Oslo"

    # 4. A real digest through SMTP; its web version; its List-Unsubscribe link.
    report = send_digests(settings, engine)
    assert (report.sent, report.failed, report.fatal) == (1, 0, None)
    digest = smtp_server.wait_for(2)[1]
    assert digest.rcpt_tos == ("Browser.Reader@example.org",)
    assert digest.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    match = re.search(r"<(http[^>]+)>", str(digest.message["List-Unsubscribe"]))
    assert match and match.group(1).startswith(f"{base}/u/")
    unsubscribe_url = match.group(1)
    archive = link_in(digest, re.escape(base) + r"/archive/\d{4}-\d{2}-\d{2}")
    page.goto(archive)
    page.get_by_role("heading", name="Where fibromyalgia meets autoimmunity").wait_for()
    assert page.get_by_text(HOSTILE).count() == 1  # shown as text, never run
    shoot(page, "7-archive")

    page.goto(unsubscribe_url)
    page.get_by_role("heading", name="Unsubscribe").wait_for()
    shoot(page, "8-unsubscribe")
    assert subscriber(engine).status == "active"
    page.get_by_role("button", name="Unsubscribe").click()
    page.get_by_role("heading", name="You are unsubscribed").wait_for()
    shoot(page, "9-unsubscribed")
    gone = subscriber(engine)
    assert gone.status == "unsubscribed" and gone.unsubscribed_at is not None
    assert problems == []
