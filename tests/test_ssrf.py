"""SSRF through story links and redirects (issue 12 A2): a crawl reaches nothing internal.

A news feed on 127.0.0.1 (the operator's configured origin, allowed) links to an "internal
host" (a second real HTTP server bound to 127.0.0.2), to its own server spelt ``localhost``
and ``2130706433``, and to a story on its origin that redirects to 127.0.0.2. None of those
may be fetched, and nothing from them stored; the one story on the origin is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from crawler.db.models import FollowedLink, PaperRow
from crawler.ingest.addresses import (
    PublicOnlyResolver,
    host_refusal,
    literal,
    origin,
    refusal,
    resolve,
)
from tests.support.httpserver import InternalHTTPServer, LocalHTTPServer
from tests.test_crawl_e2e import (
    FIXTURES,
    RSS,
    assert_clean_exit,
    db_engines,  # noqa: F401 (a fixture)
    litwatch_crawl,
    summary_rows,
    write_config,
)

STORY = (FIXTURES / "story_jci144201.html").read_text(encoding="utf-8")
LEGIT = "/releases/2021/07/210701120626.htm"


def internal_page(doi: str) -> bytes:
    """A story page naming ``doi``: what an internal host would give away if fetched."""
    return STORY.replace("10.1172/JCI144201", doi).replace("Fibromyalgia", "Internal").encode()


def news_feed(links: list[str]) -> bytes:
    items = "".join(
        f"<item><title>Fibromyalgia news {i}</title><link>{link}</link>"
        f"<description>fibromyalgia</description><guid>{link}</guid></item>"
        for i, link in enumerate(links)
    )
    return f'<?xml version="1.0"?><rss version="2.0"><channel><title>News</title>{items}' \
        "</channel></rss>".encode()  # fmt: skip


@pytest.fixture
def internal_server() -> Iterator[InternalHTTPServer]:
    with InternalHTTPServer("127.0.0.2") as server:
        yield server


@pytest.mark.slow
def test_story_links_and_redirects_to_internal_hosts_are_never_fetched(
    sqlite_url: str,
    http_server: LocalHTTPServer,
    internal_server: InternalHTTPServer,
    tmp_path: Path,
    db_engines: Callable[[str], Engine],  # noqa: F811
) -> None:
    internal_server.add(
        "/admin/secret.htm", internal_page("10.9999/internal.one"), content_type="text/html"
    )
    internal_server.add(
        "/admin/other.htm", internal_page("10.9999/internal.two"), content_type="text/html"
    )
    port = http_server.port
    # The feed's own server, reached under other names: not the configured origin.
    http_server.add("/local.htm", internal_page("10.9999/internal.local"), content_type="text/html")
    http_server.add(
        "/numeric.htm", internal_page("10.9999/internal.numeric"), content_type="text/html"
    )
    http_server.add(LEGIT, STORY.encode(), content_type="text/html")
    http_server.add(
        "/hop.htm",
        b"",
        status=302,
        headers={"Location": internal_server.url("/admin/other.htm")},
    )
    links = [
        internal_server.url("/admin/secret.htm"),
        f"http://localhost:{port}/local.htm",
        f"http://2130706433:{port}/numeric.htm",
        http_server.url("/hop.htm"),
        http_server.url(LEGIT),
    ]
    http_server.add("/rss/news.xml", news_feed(links), content_type=RSS)
    source = {"id": "sd", "kind": "sciencedaily", "url": http_server.url("/rss/news.xml")}
    config = write_config(
        tmp_path / "litwatch.toml", sqlite_url, [{**source, "topics": ["fibromyalgia"]}]
    )

    proc = litwatch_crawl(config)

    assert_clean_exit(proc, 0)
    assert internal_server.log == []  # not even robots.txt
    assert http_server.count("/local.htm") == http_server.count("/numeric.htm") == 0
    assert http_server.count("/hop.htm") == 1  # on the origin; its redirect is refused
    assert http_server.count(LEGIT) == 1
    engine = db_engines(sqlite_url)
    with engine.connect() as conn:
        dois = set(conn.scalars(select(PaperRow.doi_key)))
        titles = set(conn.scalars(select(PaperRow.title)))
        followed = {
            r.url: r.dois for r in conn.execute(select(FollowedLink.url, FollowedLink.dois))
        }
    assert dois == {"10.1172/jci144201"}
    assert not any("Internal" in (t or "") for t in titles)
    # Refused stories are recorded (no paper), so the next poll does not try them again.
    assert followed == {link: (1 if link.endswith(LEGIT) else 0) for link in links}
    assert summary_rows(proc.stdout)["sd"]["status"] == "ok"
    assert proc.stdout.count("refused") >= 4


# --- The address rules, without a crawl -------------------------------------------------------

REFUSED = [
    "127.0.0.1", "127.0.0.2", "localhost", "2130706433", "0x7f.1", "0177.0.0.1", "127.1",
    "[::1]", "[::ffff:127.0.0.1]", "[::ffff:7f00:2]", "10.1.2.3", "172.16.0.1", "192.168.1.1",
    "169.254.169.254", "[fe80::1]", "[fc00::1]", "224.0.0.1", "[ff02::1]", "0.0.0.0", "[::]",
    "100.64.0.1", "240.0.0.1", "[2002:7f00:1::]",
]  # fmt: skip


@pytest.mark.parametrize("host", REFUSED)
def test_non_public_hosts_are_refused_whatever_the_spelling(host: str) -> None:
    name = host.strip("[]")
    address = literal(name)
    addresses = [address] if address else asyncio.run(resolve(name, 80))
    assert addresses and host_refusal(name, addresses)


@pytest.mark.parametrize("host", ["8.8.8.8", "[2001:4860:4860::8888]", "93.184.215.14"])
def test_public_literals_are_allowed(host: str) -> None:
    address = literal(host)
    assert address is not None and host_refusal(host, [address]) is None


def test_origins_compare_scheme_host_and_default_port() -> None:
    assert origin("HTTP://Example.org/a") == origin("http://example.org:80/b")
    assert origin("https://example.org/") != origin("http://example.org/")
    assert origin("http://[::1]:8080/") == ("http", "::1", 8080)
    assert origin("http:///nohost") is None and origin("http://h:99999/") is None


def test_mapped_and_embedded_ipv6_follow_their_ipv4_address() -> None:
    mapped = literal("[::ffff:10.0.0.1]")
    assert mapped is not None and "private" in (refusal(mapped) or "")
    public = literal("::ffff:8.8.8.8")
    assert public is not None and refusal(public) is None


def test_the_resolver_refuses_a_name_that_resolves_to_loopback_unless_configured() -> None:
    """The check on the address actually connected to (DNS rebinding): Twisted's resolver."""
    from twisted.internet import error as net_error
    from twisted.internet.defer import Deferred

    class Reactor:
        def getThreadPool(self) -> None:  # not used: the cache answers
            raise AssertionError

    from scrapy.resolver import dnscache

    resolver = PublicOnlyResolver(Reactor(), 100, 5.0, ["intranet.test"])
    dnscache["rebound.test"] = "127.0.0.2"
    dnscache["intranet.test"] = "10.0.0.5"
    outcomes: list[object] = []

    def keep(result: Deferred[str]) -> None:
        result.addBoth(outcomes.append)

    keep(resolver.getHostByName("rebound.test"))
    keep(resolver.getHostByName("intranet.test"))
    del dnscache["rebound.test"], dnscache["intranet.test"]
    refused, allowed = outcomes
    assert getattr(refused, "type", None) is net_error.DNSLookupError
    assert "loopback" in refused.getErrorMessage()  # type: ignore[attr-defined]
    assert allowed == "10.0.0.5"
