"""Where a crawl may connect: the configured origins, and public addresses (SSRF, issue 12 A2).

A feed is data from someone else, and so is every link in it and every redirect its server
sends. A crawl makes a request only when it

* stays on the origin (scheme, host, port) of a URL the operator configured for the source
  (the operator's choice, loopback or private included: tests serve everything from one
  loopback origin, an intranet feed is legitimate), or
* goes to a host whose every address is public: loopback, private, link-local, shared
  (CGNAT), multicast, reserved and unspecified addresses are refused, IPv4 and IPv6,
  whatever the spelling (``localhost``, ``2130706433``, ``0x7f.1``, ``127.0.0.2``,
  ``[::1]``, ``[::ffff:127.0.0.1]``): names and numeric forms are read by the system's own
  resolver (``getaddrinfo``), the one the connection uses.

Two guards apply this. :class:`PublicAddressMiddleware` (a downloader middleware placed
before robots.txt) checks every request before it is sent: a story link, a robots.txt for a
new host, and each redirect, since Scrapy's RedirectMiddleware hands the redirected request
back to the scheduler and it passes through every downloader middleware again.
:class:`PublicOnlyResolver` (Scrapy's ``DNS_RESOLVER``) checks the address the connection
is then actually made to: a name that resolved to a public address for the middleware and
to 127.0.0.1 a moment later (DNS rebinding) is refused there. Its limit: a host named by an
IP literal is not resolved at all, so the middleware's check of the literal is the only one
(and the right one: a literal cannot change). Hosts of configured URLs, and of the
``http_proxy``/``https_proxy`` the environment names, may resolve to anything.

Limits, honestly: behind a proxy the proxy resolves the target again, so only the
middleware's lookup checks it (a rebinding name could then reach what the proxy reaches);
and a configured host is trusted for the whole crawl process, so a name configured for one
source is checked for another source by the middleware only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from collections.abc import Iterable
from typing import Any, Self
from urllib.parse import urlsplit

from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.resolver import CachingThreadedResolver
from twisted.internet import error as net_error

from spiders.base import ForbiddenAddress, LitwatchSpider

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Origin = tuple[str, str, int]

#: Scrapy setting: hosts the resolver lets resolve to any address (those of configured URLs).
CONFIGURED_HOSTS = "LITWATCH_CONFIGURED_HOSTS"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> Origin | None:
    """(scheme, host, port) of ``url``, the host lower-cased; None when it has no host."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # an invalid port or bracketed host
        return None
    if not parts.hostname:
        return None
    scheme = parts.scheme.lower()
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS.get(scheme, 0)


def refusal(address: Address) -> str | None:
    """Why a connection to ``address`` is refused (None: a public address)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:  # ::ffff:127.0.0.1 reaches 127.0.0.1
            return refusal(embedded)
    for kind in ("loopback", "private", "link_local", "multicast", "unspecified", "reserved"):
        if getattr(address, f"is_{kind}"):
            return f"{kind.replace('_', '-')} address {address}"
    if not address.is_global:  # 100.64.0.0/10 (shared, CGNAT) and other special ranges
        return f"non-public address {address}"
    return None


def literal(host: str) -> Address | None:
    """The address a host written as a standard IP literal stands for (``[::1]`` too)."""
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


async def resolve(host: str, port: int) -> list[Address]:
    """Every address ``host`` resolves to, by the system's resolver (numeric forms too)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found = {literal(str(info[4][0])) for info in infos}
    return [a for a in found if a is not None]


def host_refusal(host: str, addresses: list[Address]) -> str | None:
    """Why ``host``, with these addresses, may not be fetched (None: all are public)."""
    reasons = [r for r in map(refusal, addresses) if r]
    if not reasons:
        return None
    return reasons[0] if literal(host) is not None else f"{host} resolves to {reasons[0]}"


def _proxy_hosts() -> set[str]:
    hosts = set()
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        where = origin(os.environ.get(name, "")) if os.environ.get(name) else None
        if where:
            hosts.add(where[1])
    return hosts


def configured_hosts(urls: Iterable[str]) -> list[str]:
    """Hosts allowed to resolve to any address: those of configured URLs and proxies."""
    hosts = {where[1] for where in map(origin, urls) if where}
    return sorted(hosts | _proxy_hosts())


class PublicAddressMiddleware:
    """Refuse a request that leaves the source's configured origins for a non-public host.

    It also resolves each new host once, before anything else is sent to it: a name that
    does not resolve fails its request at once with Scrapy's DNS error, instead of first
    failing a robots.txt request too (issue 12 B8: one line per source when offline).
    """

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.timeout = crawler.settings.getfloat("DNS_TIMEOUT", 60.0)
        self._origins: set[Origin] | None = None
        self._resolved: dict[tuple[str, int], list[Address]] = {}

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    def origins(self) -> set[Origin]:
        """The origins of the URLs configured for this crawler's source."""
        if self._origins is None:
            spider = self.crawler.spider
            urls = spider.configured_urls() if isinstance(spider, LitwatchSpider) else []
            self._origins = {o for o in map(origin, urls) if o}
        return self._origins

    async def process_request(self, request: Request) -> None:
        """Let a request through, or raise :class:`ForbiddenAddress` saying why not."""
        where = origin(request.url)
        if where is None:
            return
        scheme, host, port = where
        configured = where in self.origins()
        if not configured and scheme not in _DEFAULT_PORTS:
            raise ForbiddenAddress(f"refused: scheme {scheme!r} is not http(s)")
        address = literal(host)
        addresses = [address] if address is not None else await self._addresses(host, port)
        why = None if configured else host_refusal(host, addresses)
        if why:
            raise ForbiddenAddress(f"refused: {why} (outside the source's configured site)")

    async def _addresses(self, host: str, port: int) -> list[Address]:
        """The addresses of ``host`` (looked up once per crawler); DNSLookupError if none."""
        key = (host, port)
        if key not in self._resolved:
            try:
                self._resolved[key] = await asyncio.wait_for(resolve(host, port), self.timeout)
            except (OSError, TimeoutError) as exc:
                raise net_error.DNSLookupError(f"{host}: {exc}") from None
        return self._resolved[key]


class PublicOnlyResolver(CachingThreadedResolver):
    """Scrapy's resolver, refusing non-public answers for hosts nobody configured.

    Checks the address the connection is really made to (closing the gap between the
    middleware's own lookup and the connection's, e.g. DNS rebinding).
    """

    def __init__(self, reactor: Any, cache_size: int, timeout: float, allowed: list[str]):
        super().__init__(reactor, cache_size, timeout)
        self.allowed = {host.lower() for host in allowed}

    @classmethod
    def from_crawler(cls, crawler: Crawler, reactor: Any) -> Self:
        settings = crawler.settings
        size = settings.getint("DNSCACHE_SIZE") if settings.getbool("DNSCACHE_ENABLED") else 0
        allowed = settings.getlist(CONFIGURED_HOSTS)
        return cls(reactor, size, settings.getfloat("DNS_TIMEOUT"), allowed)

    def getHostByName(self, name: str, timeout: Any = ()) -> Any:  # Twisted spelling
        found = super().getHostByName(name, timeout)
        if name.lower() in self.allowed:
            return found
        return found.addCallback(self._check, name)

    @staticmethod
    def _check(ip: str, name: str) -> str:
        address = literal(ip)
        why = refusal(address) if address is not None else f"unreadable address {ip!r}"
        if why:
            raise net_error.DNSLookupError(f"{name}: refused, resolves to {why}")
        return ip
