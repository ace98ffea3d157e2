"""The Scrapy settings of a crawl, from litwatch's validated configuration.

One place for the user agent, throttling, retries, robots.txt, size limits and the pipelines;
a spider kind adds what only it needs through ``LitwatchSpider.process_settings``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from crawler.ingest.addresses import CONFIGURED_HOSTS, configured_hosts
from crawler.settings import Settings
from spiders.base import LitwatchSpider

#: Where Scrapy's spider loader finds a spider class by its ``name`` (the source kind).
SPIDER_MODULES = ["spiders"]

#: Scrapy components a crawl never needs, with the reason, left out of Scrapy's defaults.
UNUSED_DOWNLOADER_MIDDLEWARES = {
    # Cookies are off (COOKIES_ENABLED); its module imports tldextract and requests (40 ms).
    "scrapy.downloadermiddlewares.cookies.CookiesMiddleware",
}
UNUSED_EXTENSIONS = {
    # Off (TELNETCONSOLE_ENABLED).
    "scrapy.extensions.telnet.TelnetConsole",
    # Scrapy >= 2.19: an HTTP server inside the crawl that runs Python code sent to it (its
    # token in a file under the user's home directory). No crawl needs that door open, and its
    # module imports aiohttp (0.1 s per crawl).
    "scrapy.extensions.remote_control.RemoteControl",
}


def _without(components: Mapping[str, int], unused: set[str]) -> dict[str, int]:
    return {name: order for name, order in components.items() if name not in unused}


def scrapy_settings(config: Settings, kinds: Iterable[type[LitwatchSpider]] = ()) -> dict[str, Any]:
    """The Scrapy settings of a crawl running spiders of the classes ``kinds``."""
    from scrapy.settings import default_settings

    crawl = config.crawl
    configured = [config.pubmed.base_url]
    configured += [u for s in config.sources for u in (s.url, s.base_url) if u]
    settings: dict[str, Any] = {
        "BOT_NAME": "litwatch",
        "SPIDER_MODULES": SPIDER_MODULES,
        "USER_AGENT": crawl.full_user_agent,
        "ROBOTSTXT_OBEY": crawl.obey_robots,
        "AUTOTHROTTLE_ENABLED": crawl.autothrottle,
        "AUTOTHROTTLE_START_DELAY": max(crawl.download_delay, 1.0),
        "AUTOTHROTTLE_TARGET_CONCURRENCY": 1.0,
        "DOWNLOAD_DELAY": crawl.download_delay,
        "CONCURRENT_REQUESTS_PER_DOMAIN": 2,
        "DOWNLOAD_TIMEOUT": crawl.timeout.total_seconds(),
        # E-utilities answers (an EFetch page of up to 10,000 records); feed and story
        # spiders read far less (LitwatchSpider.size_limit_setting, story requests' meta).
        "DOWNLOAD_MAXSIZE": 64 * 1024 * 1024,
        "LITWATCH_FEED_MAXSIZE": crawl.max_feed_bytes,
        # SSRF guard (crawler/ingest/addresses.py): hosts of configured URLs may resolve to
        # any address; any other host only to public ones, checked on the address connected.
        "TWISTED_DNS_RESOLVER": "crawler.ingest.addresses.PublicOnlyResolver",
        CONFIGURED_HOSTS: configured_hosts(configured),
        "RETRY_TIMES": crawl.retries,
        "LITWATCH_BACKOFF_BASE": crawl.backoff_base,
        "DOWNLOADER_MIDDLEWARES": {
            "scrapy.downloadermiddlewares.retry.RetryMiddleware": None,
            "crawler.ingest.middleware.BackoffRetryMiddleware": 550,
            # Before robots.txt (100): a refused host is not even asked for its robots.txt.
            "crawler.ingest.addresses.PublicAddressMiddleware": 60,
        },
        # Components litwatch never uses, left out of Scrapy's defaults rather than disabled:
        # Scrapy imports every listed component, a disabled one too, and these import a lot.
        "DOWNLOADER_MIDDLEWARES_BASE": _without(
            default_settings.DOWNLOADER_MIDDLEWARES_BASE, UNUSED_DOWNLOADER_MIDDLEWARES
        ),
        "EXTENSIONS_BASE": _without(default_settings.EXTENSIONS_BASE, UNUSED_EXTENSIONS),
        "REMOTE_CONTROL_ENABLED": False,
        "ITEM_PIPELINES": {
            "crawler.ingest.pipelines.ClassifyPipeline": 100,
            "crawler.ingest.pipelines.StorePipeline": 800,
        },
        "COOKIES_ENABLED": False,
        "TELNETCONSOLE_ENABLED": False,
        "LOG_LEVEL": "WARNING",
        "LOG_FORMATTER": "crawler.ingest.pipelines.QuietItemLogFormatter",
        "LOG_ENABLED": True,
        "LOG_INSTALL_ROOT_HANDLER": False,  # our key=value handler (crawler.logs) stays in charge
        "LOG_VERSIONS": [],  # an INFO record nobody sees (Scrapy logs at WARNING), not free
        # A hint for spider authors (a generator callback returning a value, which Scrapy
        # drops; none of ours does): Scrapy reads and parses the callback's source again for
        # every response, its cache being keyed by the bound method, new with each request.
        "WARN_ON_GENERATOR_RETURN_VALUE": False,
    }
    for cls in kinds:
        settings.update(cls.process_settings(config))
    return settings
