"""kill -9 in the middle of sending "Updates on papers you were sent", twice, then a rerun.

Week 1 a paper reaches ten subscribers (file outbox). The paper is then retracted. Week 2
has no new paper, only that update: the real ``litwatch digest send`` sends it through the
standalone SMTP server, which answers three messages at once and then takes a while over
each, so a kill lands while a message waits for its answer. Every subscriber must be told
of the retraction exactly once, in one message, and the database must say so.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections import Counter
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from crawler.db.engine import transaction
from crawler.db.events import record, resolve
from crawler.db.models import Delivery, DeliveryEvent, utcnow
from crawler.events import PaperEvent
from tests.conftest import SMTP_PASSWORD, SMTP_USER
from tests.support import serve_in_subprocess
from tests.test_digest_kill import DELAY, SLOW_AFTER, dumped, litwatch_send, wait_until
from tests.test_digest_send import base_sections, db_url_of, paper, store, subscribe, write_config

pytestmark = pytest.mark.slow

READERS = 10
HEADING = "Updates on papers you were sent"


def sent_in(engine: Engine, period: object) -> int:
    with engine.connect() as conn:
        query = select(func.count()).select_from(Delivery)
        query = query.where(Delivery.period == period, Delivery.state == "sent")
        return int(conn.scalar(query) or 0)


def kill_after(
    proc: subprocess.Popen[str], engine: Engine, dump: Path, period: object, n: int
) -> None:
    """SIGKILL ``proc`` while it waits for the answer to message ``n + 1`` of ``period``."""
    try:
        wait_until(lambda: dumped(dump) >= n, 30, f"{n} messages")
        wait_until(lambda: sent_in(engine, period) >= n, 10, f"{n} recorded")
        assert proc.poll() is None, "the send finished before it could be killed"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def retract(engine: Engine, doi: str) -> None:
    notice = PaperEvent(
        type="retracted", source="crossref", target_doi=doi,
        notice_doi="10.5555/retraction.kill", notice_title="Retraction notice",
    )  # fmt: skip
    with transaction(engine) as session:
        assert record(session, resolve(session, [notice]), datetime.now(UTC)) == 1


def test_kill_9_while_sending_updates_tells_everyone_once(engine: Engine, tmp_path: Path) -> None:
    store(engine, [paper(1, "fibromyalgia")], utcnow() - timedelta(days=1))
    emails = [f"reader{i:02d}@example.org" for i in range(READERS)]
    for email in emails:
        subscribe(engine, email)
    week1 = (utcnow() + timedelta(days=1)).date()
    week2 = week1 + timedelta(days=7)
    dump, tls = tmp_path / "dump", tmp_path / "tls"

    first = write_config(tmp_path / "week1.toml", db_url_of(engine), base_sections(tmp_path / "w1"))
    done = litwatch_send(first, week1)
    _out, err = done.communicate(timeout=60)
    assert done.returncode == 0, err
    assert sent_in(engine, week1) == READERS
    retract(engine, "10.5555/lw.1")

    server_args = ["--port", "0", "--dump-dir", str(dump), "--tls-dir", str(tls)]
    server_args += ["--slow-after", str(SLOW_AFTER), "--delay", str(DELAY)]
    server_args += ["--auth", f"{SMTP_USER}:{SMTP_PASSWORD}"]
    with serve_in_subprocess("tests.support.smtpserver", *server_args) as (_, port):
        sections = base_sections(tmp_path / "outbox")
        sections["email"] |= {"backend": "smtp", "on_unknown": "resend_once", "resend_after": "0s"}
        sections["email.smtp"] = {
            "host": "127.0.0.1", "port": port, "starttls": True, "username": SMTP_USER,
            "ca_file": str(tls / "ca.pem"), "timeout": "10s",
        }  # fmt: skip
        config = write_config(tmp_path / "litwatch.toml", db_url_of(engine), sections)
        kill_after(litwatch_send(config, week2), engine, dump, week2, SLOW_AFTER + 1)
        kill_after(litwatch_send(config, week2), engine, dump, week2, SLOW_AFTER + 4)
        last = litwatch_send(config, week2)
        _out, err = last.communicate(timeout=60)
    assert last.returncode == 0, err
    assert "Traceback" not in err

    envelopes = [json.loads(p.read_text()) for p in sorted(dump.glob("*.json"))]
    assert Counter(r for e in envelopes for r in e["rcpt_tos"]) == Counter(emails)
    told: Counter[str] = Counter()
    for path in dump.glob("*.eml"):
        msg = message_from_bytes(path.read_bytes(), policy=policy.default)
        text = msg.get_body(("plain",))
        assert text is not None
        content = text.get_content()
        assert content.count(HEADING) == 1 and "Retracted" in content.split(HEADING, 1)[1]
        assert "Study 1 of widespread pain" in content
        told[str(msg["To"])] += 1
    assert told == Counter(emails)

    with engine.connect() as conn:
        rows = conn.execute(
            select(Delivery.state, func.count(DeliveryEvent.event_id))
            .join(DeliveryEvent, DeliveryEvent.delivery_id == Delivery.id)
            .where(Delivery.period == week2)
            .group_by(Delivery.id, Delivery.state)
        ).all()
    assert sorted(rows) == [("sent", 1)] * READERS

    # Week 3: nothing new and nothing left to tell, so nobody gets mail.
    again = litwatch_send(config, week2 + timedelta(days=7))
    again.communicate(timeout=60)
    assert again.returncode == 0
    assert sent_in(engine, week2 + timedelta(days=7)) == 0
