"""kill -9 in the middle of ``litwatch digest send``, then again, then a run to the end.

The real command runs as a subprocess against the standalone SMTP server (STARTTLS + AUTH),
which answers the first three messages at once and then takes a while over each: a kill
then lands while a message waits for its answer, which the server discards like a real one
whose client went away. Such a kill leaves a claimed delivery whose outcome the sender
cannot know; with ``[email] on_unknown = "resend_once"`` (no delay here) the next run sends
it once more. Every subscriber must end up with exactly one message, and the database must
say so.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import date, timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from sqlalchemy import Engine

from crawler.db.models import utcnow
from tests.conftest import SMTP_PASSWORD, SMTP_USER
from tests.support import REPO_ROOT, serve_in_subprocess
from tests.test_digest_send import (
    base_sections,
    db_url_of,
    deliveries,
    paper,
    store,
    subscribe,
    write_config,
)

SUBSCRIBERS = 10
SLOW_AFTER = 3
DELAY = 0.3  # seconds the server takes over each message after the first SLOW_AFTER


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.02)


def dumped(directory: Path) -> int:
    return len(list(directory.glob("*.eml")))


def litwatch_send(config: Path, period_end: date) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LITWATCH_")}
    env["LITWATCH_SMTP_PASSWORD"] = SMTP_PASSWORD
    command = [sys.executable, "-c", "from crawler.cli import main; main()", "--config"]
    command += [str(config), "digest", "send", "--period-end", period_end.isoformat()]
    return subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def sent_rows(engine: Engine) -> int:
    return sum(d.state == "sent" for d in deliveries(engine))


def kill_after(proc: subprocess.Popen[str], engine: Engine, dump: Path, messages: int) -> None:
    """SIGKILL ``proc`` while it waits for the answer to message ``messages + 1``.

    Waiting until the database records ``messages`` as sent keeps the kill out of the one
    window no client can close (the server kept a message, the sender has not recorded it
    yet); the next answer is then at least DELAY away.
    """
    try:
        wait_until(lambda: dumped(dump) >= messages, 30, f"{messages} messages")
        wait_until(lambda: sent_rows(engine) >= messages, 10, f"{messages} recorded")
        time.sleep(DELAY / 3)
        assert proc.poll() is None, "the send finished before it could be killed"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_kill_9_twice_then_rerun_sends_everyone_exactly_one_message(
    engine: Engine, tmp_path: Path
) -> None:
    store(
        engine, [paper(1, "fibromyalgia"), paper(2, "autoimmunity")], utcnow() - timedelta(days=1)
    )
    emails = [f"reader{i:02d}@example.org" for i in range(SUBSCRIBERS)]
    for email in emails:
        subscribe(engine, email)
    period_end = (utcnow() + timedelta(days=1)).date()
    dump, tls = tmp_path / "dump", tmp_path / "tls"
    server_args = ["--port", "0", "--dump-dir", str(dump), "--tls-dir", str(tls)]
    server_args += ["--slow-after", str(SLOW_AFTER), "--delay", str(DELAY)]
    server_args += ["--auth", f"{SMTP_USER}:{SMTP_PASSWORD}"]

    with serve_in_subprocess("tests.support.smtpserver", *server_args) as (_, port):
        sections = base_sections(tmp_path / "outbox")
        sections["email"]["backend"] = "smtp"
        sections["email"]["on_unknown"] = "resend_once"
        sections["email"]["resend_after"] = "0s"
        sections["email.smtp"] = {
            "host": "127.0.0.1",
            "port": port,
            "starttls": True,
            "username": SMTP_USER,
            "ca_file": str(tls / "ca.pem"),
            "timeout": "10s",
        }
        config = write_config(tmp_path / "litwatch.toml", db_url_of(engine), sections)

        kill_after(litwatch_send(config, period_end), engine, dump, SLOW_AFTER + 1)
        kill_after(litwatch_send(config, period_end), engine, dump, SLOW_AFTER + 4)
        last = litwatch_send(config, period_end)
        out, err = last.communicate(timeout=60)

    assert last.returncode == 0, err
    assert SMTP_PASSWORD not in out + err
    assert "Traceback" not in err

    envelopes = [json.loads(p.read_text()) for p in sorted(dump.glob("*.json"))]
    assert Counter(r for e in envelopes for r in e["rcpt_tos"]) == Counter(emails)
    assert all(e["tls"] and e["login"] == SMTP_USER for e in envelopes)
    message_ids = Counter(
        str(message_from_bytes(p.read_bytes(), policy=policy.default)["Message-ID"])
        for p in dump.glob("*.eml")
    )
    assert max(message_ids.values()) == 1 and len(message_ids) == SUBSCRIBERS

    rows = deliveries(engine)
    assert len(rows) == SUBSCRIBERS
    assert {d.state for d in rows} == {"sent"}
    assert set(message_ids) == {d.message_id for d in rows}
    # An attempt is counted when it is claimed: each kill cost its message one more.
    assert sorted(d.attempts for d in rows) == [1] * (SUBSCRIBERS - 2) + [2, 2]
