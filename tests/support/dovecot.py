"""A private Dovecot IMAP server for one test: Debian's ``dovecot-imapd`` binaries, its own
configuration, run directory and Maildir in a fresh temporary folder, listening with implicit
TLS (a certificate of :func:`tests.support.smtpserver.make_certificate`) on a free loopback
port. The system's Dovecot, if any, is neither used nor touched.

Dovecot runs its login processes as an unprivileged user: the user running the tests, or,
under root, ``nobody`` (then the folder is made traversable and the mail home is nobody's).
One mail user, :data:`IMAP_USER`, logs in with :data:`IMAP_PASSWORD` (a static passdb).
"""

from __future__ import annotations

import contextlib
import grp
import imaplib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.smtpserver import LocalCertificate, make_certificate

IMAP_USER = "bounces"
IMAP_PASSWORD = "dovecot-test-password-15"

CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
auth_mechanisms = plain
first_valid_uid = 1
first_valid_gid = 1
default_login_user = {user}
default_internal_user = {user}
default_internal_group = {group}
passdb {{
  driver = static
  args = password={password}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/mail/%u
}}
mail_location = maildir:~/Maildir
service imap-login {{
  chroot =
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
"""


def dovecot_binary() -> str | None:
    """Dovecot's master binary, or None when it is not installed."""
    return shutil.which("dovecot") or next(
        (p for p in ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot") if os.access(p, os.X_OK)),
        None,
    )


@dataclass
class Dovecot:
    """A running private instance (see the module docstring)."""

    port: int
    certificate: LocalCertificate
    root: Path

    def connect(self) -> imaplib.IMAP4_SSL:
        conn = imaplib.IMAP4_SSL(
            "127.0.0.1", self.port, ssl_context=self.certificate.client_context()
        )
        conn.login(IMAP_USER, IMAP_PASSWORD)
        return conn

    def append(self, messages: list[bytes], folder: str = "INBOX") -> None:
        conn = self.connect()
        try:
            for raw in messages:
                status, detail = conn.append(folder, None, None, raw)
                assert status == "OK", detail
        finally:
            conn.logout()

    def flags(self, folder: str = "INBOX") -> dict[str, str]:
        """Each message's Message-ID and its flags (read without setting \\Seen)."""
        conn = self.connect()
        try:
            conn.select(folder, readonly=True)
            _, data = conn.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
            found = {}
            for part in data:
                if isinstance(part, tuple):
                    head, body = part
                    flags = head.decode().split("FLAGS (", 1)[1].split(")", 1)[0]
                    found[body.decode().split(":", 1)[1].strip()] = flags
            return found
        finally:
            conn.logout()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(proc: subprocess.Popen[bytes], port: int, root: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            said = [p.read_text(errors="replace") for p in (root / "stderr", root / "dovecot.log")
                    if p.exists()]  # fmt: skip
            raise RuntimeError(f"dovecot ended at start: {' '.join(said).strip()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"dovecot did not listen on {port}")


@contextlib.contextmanager
def private_dovecot(binary: str) -> Iterator[Dovecot]:
    """Start a private Dovecot (``binary``); stop it and remove its folder afterwards."""
    # A short path of its own (unix sockets live under it), traversable by the login user.
    root = Path(tempfile.mkdtemp(prefix="litwatch-dovecot-"))
    try:
        if os.geteuid() == 0:
            user, group = "nobody", grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_name
            root.chmod(0o755)
        else:
            user, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
        entry = pwd.getpwnam(user)
        (root / "mail").mkdir()
        os.chown(root / "mail", entry.pw_uid, entry.pw_gid)
        (root / "tls").mkdir()
        certificate = make_certificate(root / "tls")
        port = _free_port()
        config = root / "dovecot.conf"
        config.write_text(CONFIG.format(
            root=root, cert=certificate.cert_file, key=certificate.key_file, user=user,
            group=group, password=IMAP_PASSWORD, uid=entry.pw_uid, gid=entry.pw_gid, port=port,
        ))  # fmt: skip
        with (root / "stderr").open("wb") as stderr:
            proc = subprocess.Popen(
                [binary, "-F", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=stderr
            )
        try:
            _wait_listening(proc, port, root)
            yield Dovecot(port, certificate, root)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=20)
    finally:
        shutil.rmtree(root, ignore_errors=True)
