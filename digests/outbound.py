"""What every digest of one send shares: From, List-Id, the DKIM signer, the envelope senders.

Built once, before anything is planned or claimed (:func:`outbound`): a From that is not one
address, a List-Id that is not one, a DKIM key file that is missing or unusable, or a VERP
prefix or domain that would not make an address stop the run with one line
(:class:`OutboundError`), rather than fail each message on its way out.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from crawler.settings import Settings
from digests.backends import Backend, dkim_signer, make_backend
from digests.dkim_sign import DkimError, DkimSigner
from digests.mail import MailConfigError, check_sender, list_id_header, sender_domain
from digests.tokens import secret_key
from digests.verp import MIN_SECRET, verp_address


class OutboundError(ValueError):
    """The mail configuration cannot be used: nothing is planned or sent (one line)."""


@dataclass(frozen=True)
class Outbound:
    """The shared parts of a run's messages; see the module docstring."""

    settings: Settings
    #: The whole List-Id value (RFC 2919), e.g. ``litwatch <litwatch.example.org>``.
    list_id: str
    signer: DkimSigner | None
    #: The VERP key (the installation's secret key) when ``[email.bounces] verp`` is on.
    verp_secret: bytes | None = None

    def envelope_from(self, subscriber_id: int) -> str:
        """The MAIL FROM of this subscriber's digest: their VERP address when VERP is on,
        else "" (the From's address)."""
        if self.verp_secret is None:
            return ""
        return _verp(self.settings, self.verp_secret, subscriber_id)

    def backend(self) -> Backend:
        """The configured backend, signing with :attr:`signer`."""
        return make_backend(self.settings.email, self.settings.smtp_password, self.signer)


def outbound(settings: Settings, engine: Engine | None) -> Outbound:
    """Check and build the shared parts; OutboundError (one line) when they cannot be used.

    ``engine`` None (a dry run): VERP is checked with a stand-in key and none is read.
    """
    email = settings.email
    try:
        check_sender(email.from_)
        list_id = list_id_header(email.list_id, email.list_name, email.from_)
        signer = dkim_signer(email)
    except (MailConfigError, DkimError) as exc:
        raise OutboundError(str(exc)) from None
    shared = Outbound(settings, list_id, signer)
    if not email.bounces.verp:
        return shared
    trial = Outbound(settings, list_id, signer, b"x" * MIN_SECRET)
    try:
        trial.envelope_from(0)
    except ValueError as exc:
        raise OutboundError(f"[email.bounces] verp: {exc}") from None
    if engine is None:
        return trial
    return Outbound(settings, list_id, signer, secret_key(engine).encode())


def envelope_sender(settings: Settings, engine: Engine, subscriber_id: int) -> str:
    """The MAIL FROM of any other mail to this subscriber (sign-up mail): their VERP address
    when ``[email.bounces] verp`` is on, else "" (the From's address). ValueError when the
    VERP settings cannot make an address (``litwatch web`` checks them as it starts)."""
    if not settings.email.bounces.verp:
        return ""
    return _verp(settings, secret_key(engine).encode(), subscriber_id)


def _verp(settings: Settings, secret: bytes, subscriber_id: int) -> str:
    bounces = settings.email.bounces
    domain = bounces.verp_domain or sender_domain(settings.email.from_)
    return verp_address(secret, subscriber_id, bounces.verp_prefix, domain)
