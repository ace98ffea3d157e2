"""Signed tokens for links in e-mails and web pages, with key rotation and link lifetimes.

A link never carries a guessable id: it carries the subscriber's random secret, signed with
the installation's key (itsdangerous with HMAC-SHA256), with a
purpose-specific salt so an unsubscribe token cannot be replayed as a preferences token.
The key comes from LITWATCH_SECRET_KEY, or is generated once and kept in the database.

Lifetimes: every token is time-stamped. Unsubscribe and preferences links work for
:data:`LINK_MAX_AGE` (90 days: a digest kept for a season still unsubscribes in one click);
confirmation links and CSRF fields are shorter (``digests.web``).

Rotation: new tokens are always signed with the current key; retired keys still verify.
With LITWATCH_SECRET_KEY, put the old key(s) in LITWATCH_SECRET_KEY_PREVIOUS (comma
separated) and remove them after :data:`LINK_MAX_AGE`. With the generated key,
``litwatch rotate-key`` retires it in the database, and a retired key is dropped by itself
:data:`LINK_MAX_AGE` after its retirement (every link it signed has expired by then).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import itsdangerous
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode
from itsdangerous.url_safe import URLSafeSerializerMixin
from sqlalchemy import Engine

from crawler.db import SECRET_KEY, meta
from crawler.db.models import Subscriber, utcnow
from crawler.settings import Settings
from digests.compose import Personal

SECRET_ENV = "LITWATCH_SECRET_KEY"  # noqa: S105 - the variable name, not a secret
PREVIOUS_ENV = "LITWATCH_SECRET_KEY_PREVIOUS"
#: The meta row listing retired generated keys: JSON ``[{"key": ..., "retired": iso}]``.
RETIRED_KEYS = "secret_key.retired"

UNSUBSCRIBE = "unsubscribe"
PREFERENCES = "preferences"
CONFIRM = "confirm"

#: Unsubscribe and preferences links expire after this long (seconds).
LINK_MAX_AGE = 90 * 86400


class TokenError(ValueError):
    """A token that is forged, mangled, for another purpose, or expired."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


class RotationError(RuntimeError):
    """The key cannot be rotated here (it comes from the environment)."""


def secret_key(engine: Engine) -> str:
    """The signing key: from the environment, else generated once and stored."""
    from_env = os.environ.get(SECRET_ENV)
    if from_env:
        return from_env
    return meta.generated_secret(engine)


def _env_previous() -> list[str]:
    # Comma separated; a key may hold spaces, so only the commas split.
    return [k.strip() for k in os.environ.get(PREVIOUS_ENV, "").split(",") if k.strip()]


def _retired(engine: Engine) -> list[dict[str, str]]:
    raw = meta.read(engine, RETIRED_KEYS)
    return list(json.loads(raw)) if raw else []


def _in_grace(entry: dict[str, str], now: datetime) -> bool:
    retired = datetime.fromisoformat(entry["retired"])
    return now - retired < timedelta(seconds=LINK_MAX_AGE)


def signing_keys(engine: Engine, now: datetime | None = None) -> list[str]:
    """Every key that verifies, oldest first; the last (current) one signs."""
    now = now or utcnow()
    from_env = os.environ.get(SECRET_ENV)
    if from_env:
        current, stored = from_env, []
    else:
        current = meta.generated_secret(engine)
        stored = [e["key"] for e in _retired(engine) if _in_grace(e, now)]
    previous = [k for k in (*stored, *_env_previous()) if k != current]
    return [*dict.fromkeys(previous), current]


@dataclass(frozen=True)
class Rotation:
    """What :func:`rotate_secret` did."""

    retired: int  # retired keys still verifying links
    dropped: int  # retired keys forgotten (out of their grace, or on request)


def rotate_secret(engine: Engine, *, forget_previous: bool = False) -> Rotation:
    """Replace the generated key; the old one verifies for LINK_MAX_AGE unless forgotten.

    ``forget_previous`` invalidates every link signed so far at once (a leaked key).
    """
    if os.environ.get(SECRET_ENV):
        raise RotationError(
            f"the key comes from {SECRET_ENV}: set a new one there and put the old one in "
            f"{PREVIOUS_ENV} for {LINK_MAX_AGE // 86400} days"
        )
    now = utcnow()
    old = meta.generated_secret(engine)
    known = _retired(engine)
    kept = [] if forget_previous else [e for e in known if _in_grace(e, now)]
    if not forget_previous:
        kept.append({"key": old, "retired": now.isoformat()})
    # Retired list first: a crash between the two writes leaves the old key current, and
    # also listed as retired, which is harmless.
    meta.write(engine, RETIRED_KEYS, json.dumps(kept))
    meta.write(engine, SECRET_KEY, secrets.token_urlsafe(48))
    return Rotation(retired=len(kept), dropped=len(known) + 1 - len(kept))


class Signer:
    """Makes and checks the tokens of one installation.

    ``keys`` is the current key, or every verifying key oldest first with the current last
    (itsdangerous signs with the last and tries each one when verifying).
    """

    def __init__(self, keys: str | Sequence[str]) -> None:
        self._keys = [keys] if isinstance(keys, str) else list(keys)
        #: One serializer per purpose: a digest run signs two links per subscriber.
        self._serializers: dict[str, URLSafeTimedSerializer] = {}

    def _options(self, purpose: str) -> dict[str, Any]:
        return {"salt": f"litwatch-{purpose}"}

    def _serializer(self, purpose: str) -> URLSafeTimedSerializer:
        serializer = self._serializers.get(purpose)
        if serializer is None:
            serializer = self._serializers[purpose] = _Serializer(
                self._keys,
                **self._options(purpose),
                signer_kwargs={"digest_method": hashlib.sha256},
            )
        return serializer

    def _plain(self, purpose: str) -> itsdangerous.Signer:
        return itsdangerous.Signer(
            self._keys, **self._options(purpose), digest_method=hashlib.sha256
        )

    def sign(self, purpose: str, value: Any) -> str:
        return self._serializer(purpose).dumps(value)

    def verify(self, purpose: str, token: str, *, max_age: int | None = None) -> Any:
        """The signed value; TokenError when the token is not valid for ``purpose``."""
        try:
            return self._serializer(purpose).loads(token, max_age=max_age)
        except SignatureExpired:
            raise TokenError("this link has expired", expired=True) from None
        except BadSignature:
            raise TokenError("this link is not valid") from None

    def mark(self, purpose: str, value: str) -> str:
        """``value`` with a signature appended (no time stamp): proof the server made it."""
        return self._plain(purpose).sign(value).decode("ascii")

    def marked(self, purpose: str, signed: str) -> bool:
        """True when ``signed`` came from :meth:`mark` with one of our keys."""
        return self._plain(purpose).validate(signed)


class _Serializer(URLSafeTimedSerializer):
    """itsdangerous's URL-safe serializer, minus the attempt to compress each payload: a
    subscriber's secret is random and never compresses (the attempt was a third of the
    cost of a link). Tokens made either way verify either way (the payload says which)."""

    def dump_payload(self, obj: Any) -> bytes:
        json = super(URLSafeSerializerMixin, self).dump_payload(obj)  # the mixin's parent's
        return base64_encode(json)


def signer_for(engine: Engine) -> Signer:
    """The installation's signer: the current key signs, retired ones still verify."""
    return Signer(signing_keys(engine))


class Links:
    """Per-subscriber URLs built from ``[web] base_url`` with signed tokens."""

    def __init__(self, settings: Settings, signer: Signer) -> None:
        self.base = settings.web.base_url
        self.signer = signer

    def unsubscribe(self, sub: Subscriber) -> str:
        return f"{self.base}/u/{self.signer.sign(UNSUBSCRIBE, sub.token)}"

    def preferences(self, sub: Subscriber) -> str:
        return f"{self.base}/preferences/{self.signer.sign(PREFERENCES, sub.token)}"

    def personal(self, sub: Subscriber) -> Personal:
        return Personal(sub.name, sub.email, self.unsubscribe(sub), self.preferences(sub))
