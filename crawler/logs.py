"""Logging: one line per event, ``key=value`` fields, to stderr."""

from __future__ import annotations

import logging
import sys
import time

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class KeyValueFormatter(logging.Formatter):
    """``ts=... level=info logger=litwatch.crawl msg="..."`` (UTC timestamps)."""

    converter = time.gmtime  # type: ignore[assignment]

    def format(self, record: logging.LogRecord) -> str:
        ts = self.formatTime(record, "%Y-%m-%dT%H:%M:%SZ")
        message = record.getMessage().replace("\n", " ")
        line = f"ts={ts} level={record.levelname.lower()} logger={record.name} {message}"
        if record.exc_info:
            line += " exc=" + repr(self.formatException(record.exc_info).splitlines()[-1])
        return line


class _LibraryFilter(logging.Filter):
    """Let Scrapy's and Twisted's chatter through only at ``level`` and above.

    Scrapy re-levels its own loggers when a crawler starts, so the threshold is kept on our
    handler rather than on their loggers.
    """

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".", 1)[0] in _LIBRARIES:
            return record.levelno >= self.level
        return True


_LIBRARIES = {
    "scrapy", "twisted", "py", "filelock", "asyncio", "apscheduler", "alembic", "protego",
    "tzlocal", "uvicorn", "httpx", "httpcore", "multipart", "python_multipart", "sqlalchemy",
    "psycopg", "urllib3", "aiosmtpd", "mail",
}  # fmt: skip


def setup_logging(level: str = "info", *, scrapy_level: str = "warning") -> None:
    """Configure the root logger once for a litwatch process."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_litwatch", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    handler._litwatch = True  # type: ignore[attr-defined]
    handler.addFilter(_LibraryFilter(_LEVELS.get(scrapy_level, logging.WARNING)))
    root.addHandler(handler)
    root.setLevel(_LEVELS.get(level, logging.INFO))
