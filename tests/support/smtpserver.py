"""A real SMTP server (aiosmtpd) on 127.0.0.1 for e-mail delivery and end-to-end tests.

It stores every accepted message, can require STARTTLS and AUTH (LOGIN/PLAIN) with one
username/password, and offers failure modes that can be switched at runtime:

* refuse a recipient permanently (550) or temporarily (451) at RCPT;
* fail every message temporarily at end of DATA (451, or 421 which also closes the channel
  as RFC 5321 4.2.2 describes);
* after N accepted messages, delay each DATA answer by S seconds (lets a test kill -9 a
  sender in the middle of a run: a client that disconnects before the answer has its
  message discarded, as a real server would);
* after N accepted messages, drop the connection at end of DATA without answering (the
  sender cannot know whether the message went through), every time or a given number of times.

``connections`` counts the TCP connections clients opened (a sender that should reuse one
connection for many messages can be checked with it).

Standalone use (end-to-end tests, benchmarks)::

    python -m tests.support.smtpserver --port 0 --slow-after 5 --delay 2 --dump-dir DIR

prints ``READY <port>`` once it accepts connections and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import hmac
import ipaddress
import json
import logging
import ssl
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support import wait_for_termination

HOST = "127.0.0.1"
# A fixed banner name: aiosmtpd otherwise calls socket.getfqdn(), which can stall on DNS.
BANNER_HOSTNAME = "litwatch-test-smtp.invalid"


class _HideLoginDataNotice(logging.Filter):
    """Drop one aiosmtpd log line that is about aiosmtpd itself.

    aiosmtpd 1.4 sets its own deprecated ``Session.login_data`` after every successful AUTH
    and logs a warning for it, which would clutter every failing test's captured log.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record but that notice."""
        return "login_data is deprecated" not in record.getMessage()


logging.getLogger("mail.log").addFilter(_HideLoginDataNotice())


# -- TLS certificate made at test time -------------------------------------------------------


@dataclass(frozen=True)
class LocalCertificate:
    """A throwaway CA and a server certificate for 127.0.0.1 / localhost, as PEM files."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        """Server-side context presenting the certificate."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        """Client-side context that verifies the server against the throwaway CA only."""
        return ssl.create_default_context(cafile=str(self.ca_file))


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: str, issuer: str, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))  # tolerate small clock differences
        .not_valid_after(now + timedelta(days=2))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _ca_certificate(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    # A separate CA (rather than one self-signed leaf) also passes OpenSSL's strict X.509
    # checks, which Python 3.13+ enables in create_default_context().
    return (
        _builder("litwatch test CA", "litwatch test CA", key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .sign(key, hashes.SHA256())
    )


def _leaf_certificate(
    key: ec.EllipticCurvePrivateKey, ca_key: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    names = [x509.IPAddress(ipaddress.ip_address(HOST)), x509.DNSName("localhost")]
    authority = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    return (
        _builder("localhost", "litwatch test CA", key)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(authority, critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def make_certificate(directory: Path) -> LocalCertificate:
    """Write a fresh CA and a server certificate for 127.0.0.1 into ``directory``."""
    ca_key = ec.generate_private_key(ec.SECP256R1())  # EC: generated in milliseconds
    key = ec.generate_private_key(ec.SECP256R1())
    cert = LocalCertificate(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    pem = serialization.Encoding.PEM
    cert.ca_file.write_bytes(_ca_certificate(ca_key).public_bytes(pem))
    cert.cert_file.write_bytes(_leaf_certificate(key, ca_key).public_bytes(pem))
    private = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    cert.key_file.write_bytes(private)
    return cert


# -- received messages and failure settings ---------------------------------------------------


@dataclass(frozen=True)
class ReceivedMessage:
    """One accepted message: envelope, raw bytes as received, and the parsed message.

    ``message`` is parsed from the wire bytes, so its bodies keep CRLF line ends.
    """

    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes
    message: EmailMessage
    login: str | None  # AUTH user name, None when the session did not authenticate
    tls: bool  # True when the message came over STARTTLS


@dataclass
class Failures:
    """Runtime failure settings; change them through LocalSMTPServer's methods."""

    refused: dict[str, str]  # lower-cased address -> full SMTP reply
    fail_all: str | None = None  # SMTP reply for every DATA, or None
    slow_after: int | None = None
    delay: float = 0.0
    drop_after: int | None = None
    drop_times: int | None = None  # drops left (None: every time)


@dataclass(frozen=True)
class _DataPlan:
    reply: str | None = None  # a failure reply instead of accepting
    drop: bool = False
    delay: float = 0.0


def _login_of(session: Session) -> str | None:
    data = session.auth_data
    return data.login.decode("utf-8", "replace") if isinstance(data, LoginPassword) else None


class _Handler:
    """aiosmtpd hook object; every decision is delegated to the LocalSMTPServer."""

    def __init__(self, owner: LocalSMTPServer) -> None:
        self._owner = owner

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        """Accept or refuse one recipient (aiosmtpd leaves appending it to us)."""
        refusal = self._owner.refusal_for(address)
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Apply the failure plan, then store the message."""
        plan = self._owner.plan_data()
        if plan.drop:
            assert isinstance(server.transport, asyncio.Transport)
            server.transport.abort()
            # Park until connection_lost() cancels this task: no reply must reach the client.
            await asyncio.get_running_loop().create_future()
        if plan.reply is not None:
            if plan.reply.startswith("421"):
                # 421 means "closing the transmission channel": close after the reply is sent.
                asyncio.get_running_loop().call_soon(_close, server)
            return plan.reply
        if plan.delay:
            await asyncio.sleep(plan.delay)
        number = self._owner.store(_received(session, envelope))
        return f"250 2.0.0 OK queued as {number}"


def _close(server: SMTP) -> None:
    if server.transport is not None:
        server.transport.close()


def _received(session: Session, envelope: Envelope) -> ReceivedMessage:
    raw = envelope.original_content or b""
    return ReceivedMessage(
        mail_from=envelope.mail_from or "",
        rcpt_tos=tuple(envelope.rcpt_tos),
        raw=raw,
        message=email.message_from_bytes(raw, policy=email.policy.default),
        login=_login_of(session),
        tls=session.ssl is not None,
    )


class _EphemeralController(Controller):
    """Controller that supports port 0.

    aiosmtpd's Controller.start() checks readiness by connecting to ``self.port``; with port 0
    that would dial port 0 and fail. The listening socket exists by then, so read the real
    port from it first.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connections = 0

    def factory(self) -> SMTP:
        """One SMTP protocol object per accepted connection: count them."""
        self.connections += 1
        return super().factory()

    def _trigger_server(self) -> None:
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


# -- the server --------------------------------------------------------------------------------


class LocalSMTPServer:
    """An aiosmtpd server on 127.0.0.1 storing messages, with optional STARTTLS + AUTH.

    ``certificate`` enables STARTTLS and requires it before MAIL; ``auth=(user, password)``
    requires AUTH LOGIN/PLAIN with exactly those credentials (only after STARTTLS when a
    certificate is given). ``dump_dir`` also writes each message to disk: ``NNNNNN.json``
    (envelope) then ``NNNNNN.eml`` (raw bytes), each renamed into place atomically.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        certificate: LocalCertificate | None = None,
        auth: tuple[str, str] | None = None,
        dump_dir: Path | None = None,
        smtputf8: bool = True,
    ) -> None:
        """Configure the server; call start() (or use ``with``) to listen.

        ``smtputf8=False`` stops advertising SMTPUTF8 (RFC 6531), as older servers do.
        """
        self.host = HOST
        self.port = port
        self.certificate = certificate
        self.auth = auth
        self.dump_dir = dump_dir
        self.smtputf8 = smtputf8
        self.failures = Failures(refused={})
        self._messages: list[ReceivedMessage] = []
        self._changed = threading.Condition()
        self._connections_before = 0
        self._controller = _EphemeralController(
            _Handler(self), hostname=HOST, port=port, **self._smtp_options()
        )

    def _smtp_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "server_hostname": BANNER_HOSTNAME,
            "enable_SMTPUTF8": self.smtputf8,
        }
        if self.certificate is not None:
            options["tls_context"] = self.certificate.server_context()
            options["require_starttls"] = True
        if self.auth is not None:
            options["authenticator"] = self._authenticate
            options["auth_required"] = True
            # Without TLS, allow AUTH in clear: a plain test server with credentials.
            options["auth_require_tls"] = self.certificate is not None
        return options

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert self.auth is not None
        if mechanism not in ("LOGIN", "PLAIN") or not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, password = (value.encode() for value in self.auth)
        ok = hmac.compare_digest(data.login, user) & hmac.compare_digest(data.password, password)
        # handled=False lets aiosmtpd send the standard 535 reply on failure.
        return AuthResult(success=ok, handled=False, auth_data=data)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        """Listen in a background thread; ``port`` holds the real port afterwards."""
        self._controller.start()
        self.port = self._controller.port
        # start() itself connects once to check readiness; that one is not a client's.
        self._connections_before = self._controller.connections
        return self

    def stop(self) -> None:
        """Stop listening and cancel open sessions."""
        self._controller.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def client_context(self) -> ssl.SSLContext | None:
        """An SSLContext for smtplib.starttls() that trusts this server (None without TLS)."""
        return self.certificate.client_context() if self.certificate else None

    @property
    def connections(self) -> int:
        """How many connections clients opened since start()."""
        return self._controller.connections - self._connections_before

    # -- received messages -------------------------------------------------------------------

    @property
    def messages(self) -> list[ReceivedMessage]:
        """A snapshot of the accepted messages, oldest first."""
        with self._changed:
            return list(self._messages)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedMessage]:
        """Wait until at least ``count`` messages arrived; raise TimeoutError otherwise."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._messages) >= count, timeout):
                have = len(self._messages)
                raise TimeoutError(f"{have} of {count} messages within {timeout} s")
            return list(self._messages)

    def store(self, message: ReceivedMessage) -> int:
        """Record an accepted message (called on the server thread); return its number."""
        with self._changed:
            self._messages.append(message)
            number = len(self._messages)
            self._changed.notify_all()
        if self.dump_dir is not None:
            _dump(self.dump_dir, number, message)
        return number

    # -- failure modes (thread-safe; take effect on the next command) ------------------------

    def refuse_recipient(self, address: str, *, permanent: bool = True) -> None:
        """Refuse ``address`` at RCPT with 550 (permanent) or 451 (temporary)."""
        reply = (
            f"550 5.1.1 <{address}>: mailbox unavailable"
            if permanent
            else f"451 4.2.0 <{address}>: mailbox busy, try again later"
        )
        with self._changed:
            self.failures.refused[address.lower()] = reply

    def fail_all(self, code: int | None = 451) -> None:
        """Answer every DATA with a temporary failure (421 or 451); None switches it off."""
        if code not in (None, 421, 451):
            raise ValueError("fail_all takes 421, 451 or None")
        text = {421: "4.3.0 service not available, closing channel", 451: "4.3.0 try later"}
        with self._changed:
            self.failures.fail_all = None if code is None else f"{code} {text[code]}"

    def slow_after(self, count: int | None, delay: float) -> None:
        """Delay each DATA answer by ``delay`` s once ``count`` messages were accepted."""
        with self._changed:
            self.failures.slow_after, self.failures.delay = count, delay

    def drop_after(self, count: int | None, *, times: int | None = None) -> None:
        """Drop the connection at end of DATA once ``count`` messages were accepted.

        ``times`` limits how many DATA commands are dropped (None: every one from then on).
        """
        with self._changed:
            self.failures.drop_after, self.failures.drop_times = count, times

    def reset_failures(self) -> None:
        """Switch every failure mode off."""
        with self._changed:
            self.failures = Failures(refused={})

    def refusal_for(self, address: str) -> str | None:
        """The RCPT refusal reply for ``address``, if any (called on the server thread)."""
        with self._changed:
            return self.failures.refused.get(address.lower())

    def plan_data(self) -> _DataPlan:
        """Decide how to answer the next DATA (called on the server thread)."""
        with self._changed:
            rules, accepted = self.failures, len(self._messages)
            if rules.fail_all is not None:
                return _DataPlan(reply=rules.fail_all)
            if _reached(rules.drop_after, accepted) and rules.drop_times != 0:
                if rules.drop_times is not None:
                    rules.drop_times -= 1
                return _DataPlan(drop=True)
            return _DataPlan(delay=rules.delay if _reached(rules.slow_after, accepted) else 0.0)


def _reached(threshold: int | None, accepted: int) -> bool:
    return threshold is not None and accepted >= threshold


def _write_atomically(path: Path, data: bytes) -> None:
    # Readers poll the directory: rename so they never see a half-written file.
    partial = path.with_name(path.name + ".part")
    partial.write_bytes(data)
    partial.replace(path)


def _dump(directory: Path, number: int, message: ReceivedMessage) -> None:
    envelope: dict[str, object] = {
        "mail_from": message.mail_from,
        "rcpt_tos": list(message.rcpt_tos),
        "login": message.login,
        "tls": message.tls,
    }
    _write_atomically(directory / f"{number:06d}.json", json.dumps(envelope).encode())
    _write_atomically(directory / f"{number:06d}.eml", message.raw)


# -- command line ------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Run the litwatch test SMTP server.")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--dump-dir", type=Path, help="write each message to this directory")
    parser.add_argument("--slow-after", type=int, help="delay DATA after this many messages")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds for --slow-after")
    parser.add_argument("--drop-after", type=int, help="drop connections after N messages")
    parser.add_argument("--auth", metavar="USER:PASSWORD", help="require AUTH")
    parser.add_argument("--tls-dir", type=Path, help="require STARTTLS; writes ca.pem here")
    return parser


def _configure(args: argparse.Namespace) -> LocalSMTPServer:
    certificate = make_certificate(args.tls_dir) if args.tls_dir else None
    auth = None
    if args.auth:
        user, _, password = args.auth.partition(":")
        auth = (user, password)
    server = LocalSMTPServer(
        port=args.port, certificate=certificate, auth=auth, dump_dir=args.dump_dir
    )
    server.slow_after(args.slow_after, args.delay)
    server.drop_after(args.drop_after)
    return server


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; print ``READY <port>`` once listening."""
    args = _parser().parse_args(argv)
    for directory in (args.dump_dir, args.tls_dir):
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
    with _configure(args) as server:
        print(f"READY {server.port}", flush=True)
        wait_for_termination()
    return 0


if __name__ == "__main__":
    sys.exit(main())
