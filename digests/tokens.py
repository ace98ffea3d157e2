"""Signed tokens for links in e-mails and web pages.

A link never carries a guessable id: it carries the subscriber's random secret, signed with
the installation's key (itsdangerous with HMAC-SHA256), with a
purpose-specific salt so an unsubscribe token cannot be replayed as a preferences token.
The key comes from LITWATCH_SECRET_KEY, or is generated once and kept in the database.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import Engine

from crawler.db import meta
from crawler.db.models import Subscriber
from crawler.settings import Settings
from digests.compose import Personal

SECRET_ENV = "LITWATCH_SECRET_KEY"  # noqa: S105 - the variable name, not a secret

UNSUBSCRIBE = "unsubscribe"
PREFERENCES = "preferences"
CONFIRM = "confirm"


class TokenError(ValueError):
    """A token that is forged, mangled, for another purpose, or expired."""


def secret_key(engine: Engine) -> str:
    """The signing key: from the environment, else generated once and stored."""
    from_env = os.environ.get(SECRET_ENV)
    if from_env:
        return from_env
    return meta.generated_secret(engine)


class Signer:
    """Makes and checks the tokens of one installation."""

    def __init__(self, key: str) -> None:
        self._key = key

    def _serializer(self, purpose: str) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(
            self._key, salt=f"litwatch-{purpose}", signer_kwargs={"digest_method": hashlib.sha256}
        )

    def sign(self, purpose: str, value: Any) -> str:
        return self._serializer(purpose).dumps(value)

    def verify(self, purpose: str, token: str, *, max_age: int | None = None) -> Any:
        """The signed value; TokenError when the token is not valid for ``purpose``."""
        try:
            return self._serializer(purpose).loads(token, max_age=max_age)
        except SignatureExpired:
            raise TokenError("this link has expired") from None
        except BadSignature:
            raise TokenError("this link is not valid") from None


def signer_for(engine: Engine) -> Signer:
    return Signer(secret_key(engine))


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
