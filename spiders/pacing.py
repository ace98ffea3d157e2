"""A steady pause between the requests of one API client."""

from __future__ import annotations

from scrapy.settings import BaseSettings


def steady_delay(settings: BaseSettings, delay: float) -> None:
    """Wait ``delay`` seconds between two requests, exactly: Scrapy varies the delay by +-50%
    unless told not to (Scrapy 2.19 renamed the switch; older versions know
    RANDOMIZE_DOWNLOAD_DELAY only), and a limit of one request a second means no less."""
    settings.set("DOWNLOAD_DELAY", delay, priority="spider")
    if "DOWNLOAD_DELAY_JITTER" in settings:
        settings.set("DOWNLOAD_DELAY_JITTER", 0, priority="spider")
    else:
        settings.set("RANDOMIZE_DOWNLOAD_DELAY", False, priority="spider")


#: The Scrapy setting that carries ``[crawl] api_delay`` to the API spiders' ``update_settings``.
API_DELAY_SETTING = "LITWATCH_API_DELAY"
#: ``[crawl] api_delay``'s default: one request a second, with room for timer jitter.
DEFAULT_API_DELAY = 1.05


def api_delay(settings: BaseSettings) -> float:
    """The configured pause between two requests to a scholarly API (``[crawl] api_delay``)."""
    return settings.getfloat(API_DELAY_SETTING, DEFAULT_API_DELAY)
