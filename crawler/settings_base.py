"""The configuration's foundations: error types, durations, the section base class, and the
environment variables that are not configuration keys (secrets, test hooks)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer

CONFIG_ENV = "LITWATCH_CONFIG"
#: Environment variables that are secrets or test hooks, never config keys.
SECRET_ENV = (
    "LITWATCH_SMTP_PASSWORD",
    "NCBI_API_KEY",
    "LITWATCH_SECRET_KEY",
    "LITWATCH_IMAP_PASSWORD",
    "LITWATCH_WEBHOOK_SECRET",
)
RESERVED_ENV = {
    CONFIG_ENV,
    *SECRET_ENV,
    "LITWATCH_SECRET_KEY_PREVIOUS",  # retired link-signing keys (digests/tokens.py)
    "LITWATCH_TEST_DATABASE_URL",
    "LITWATCH_UPDATE_GOLDEN",
    "LITWATCH_CORPUS",
}


class ConfigError(Exception):
    """A configuration problem, already phrased as one line for the operator."""


class LocatedError(ValueError):
    """A cross-field check failure that knows which key is at fault.

    A model validator's errors carry no location of their own; pydantic keeps the raised
    exception in the error's ``ctx``, so :func:`load_settings` can name the key.
    """

    def __init__(self, message: str, loc: tuple[str | int, ...]) -> None:
        super().__init__(message)
        self.loc = loc


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> timedelta:
    """``"30s"``, ``"15m"``, ``"6h"``, ``"1d"``, ``"2w"`` (or a number of seconds) -> timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return timedelta(seconds=float(m.group(1)) * _UNIT_SECONDS[m.group(2)])
    raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 15m, 6h, 1d)")


def _format_duration(td: timedelta) -> str:
    seconds = int(td.total_seconds())
    for unit in ("w", "d", "h", "m"):
        if seconds and seconds % _UNIT_SECONDS[unit] == 0:
            return f"{seconds // _UNIT_SECONDS[unit]}{unit}"
    return f"{seconds}s"


Duration = Annotated[
    timedelta, BeforeValidator(parse_duration), PlainSerializer(_format_duration, return_type=str)
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _scrub(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, dict):
        return {k: _scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, secrets) for v in value]
    if isinstance(value, str):
        value = mask_url(value)
        for secret in secrets:
            value = value.replace(secret, "***")
    return value


def mask_url(url: str) -> str:
    """Hide the password of ``scheme://user:password@host`` and of ``?password=``.

    The password ends at the last "@" (SQLAlchemy accepts a raw "/" or "@" in it).
    """
    url = re.sub(r"(://[^:/@?#\s]*):\S*@(?=[^@\s]*$)", r"\1:***@", url)
    return re.sub(r"([?&]password=)[^&\s]*", r"\1***", url, flags=re.IGNORECASE)
