"""kill -9 in the middle of ``litwatch bounces process``, twice, then a run to the end.

The real command reads a Maildir of 600 returned messages (hard and soft bounces, abuse
reports, auto-replies, interleaved) as a subprocess and is killed with SIGKILL once the
database has recorded a part of them. Each message is processed in one transaction, keyed by
its Message-ID, so whatever a kill interrupts is rolled back and done again by the next run,
and what was committed is never counted again: every message must end up recorded exactly
once and every decision (suspend, unsubscribe) taken exactly once. SQLite and PostgreSQL.
"""

from __future__ import annotations

import mailbox
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from crawler.db.engine import transaction
from crawler.db.models import BounceRow, Subscriber
from tests.support import REPO_ROOT
from tests.support.config import write_toml
from tests.support.returned_mail import arf, auto_reply, dsn

HARD, SOFT, COMPLAINTS, REPLIES = 300, 50, 50, 100
SOFT_EACH = 3  # [email.bounces] soft_limit: the third soft bounce suspends
MESSAGES = HARD + SOFT * SOFT_EACH + COMPLAINTS + REPLIES


def _address(group: str, i: int) -> str:
    return f"{group}{i:03d}@example.org"


def _setup(engine: Engine, folder: Path) -> None:
    now = datetime.now(UTC)
    groups = {"hard": HARD, "soft": SOFT, "complaint": COMPLAINTS, "reply": REPLIES}
    with transaction(engine) as session:
        for group, n in groups.items():
            for i in range(n):
                email = _address(group, i)
                session.add(Subscriber(email=email, email_key=email, token=email,
                                       topics=["fibromyalgia"], status="active",
                                       created_at=now))  # fmt: skip
    messages = [dsn(_address("hard", i), f"h{i}") for i in range(HARD)]
    messages += [
        dsn(_address("soft", i), f"s{i}-{n}", soft=True)
        for i in range(SOFT)
        for n in range(SOFT_EACH)
    ]
    messages += [arf(_address("complaint", i), f"c{i}") for i in range(COMPLAINTS)]
    messages += [auto_reply(_address("reply", i), f"r{i}") for i in range(REPLIES)]
    random.Random(15).shuffle(messages)
    box = mailbox.Maildir(folder, create=True)
    for raw in messages:
        box.add(raw)


def _recorded(engine: Engine) -> int:
    with transaction(engine) as session:
        return int(session.scalar(select(func.count()).select_from(BounceRow)) or 0)


def _process(config: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LITWATCH_")}
    return subprocess.Popen(
        [sys.executable, "-m", "crawler.cli", "--config", str(config), "bounces", "process"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _kill_at(proc: subprocess.Popen[str], engine: Engine, rows: int) -> int:
    """SIGKILL ``proc`` once ``rows`` messages are recorded; how many were, after the kill."""
    deadline = time.monotonic() + 120
    try:
        while _recorded(engine) < rows:
            assert proc.poll() is None, f"ended before {rows} rows: {proc.communicate()}"
            assert time.monotonic() < deadline, f"{rows} rows not recorded in time"
            time.sleep(0.01)
        assert proc.poll() is None, "the run finished before it could be killed"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return _recorded(engine)


@pytest.mark.slow
def test_kill_9_twice_then_rerun_counts_every_bounce_once(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "bounces"
    _setup(engine, folder)
    config = write_toml(
        tmp_path / "litwatch.toml",
        {"database": {"url": engine.url.render_as_string(hide_password=False)},
         "email": {"outbox_dir": str(tmp_path / "outbox")},
         "email.bounces": {"maildir": str(folder), "soft_limit": SOFT_EACH}},
    )  # fmt: skip
    first = _kill_at(_process(config), engine, MESSAGES // 4)
    second = _kill_at(_process(config), engine, MESSAGES // 2)
    assert MESSAGES // 4 <= first <= second < MESSAGES
    last = _process(config)
    out, err = last.communicate(timeout=300)
    assert last.returncode == 0, err
    assert "Traceback" not in err
    print(f"killed at {first} and {second} of {MESSAGES} recorded; last run: {out.strip()}")
    assert f"maildir: {MESSAGES} messages ({second} already processed)" in out

    with transaction(engine) as session:
        rows = session.execute(
            select(BounceRow.message_key, BounceRow.recipient, BounceRow.kind, BounceRow.action)
        ).all()
        subs = {s.email: s for s in session.scalars(select(Subscriber))}
    assert len(rows) == MESSAGES
    assert len({r.message_key for r in rows}) == MESSAGES  # every message once
    assert Counter(r.kind for r in rows) == {
        "hard": HARD, "soft": SOFT * SOFT_EACH, "complaint": COMPLAINTS, "auto_reply": REPLIES,
    }  # fmt: skip
    assert Counter(r.action for r in rows) == {
        "suspended": HARD + SOFT, "unsubscribed": COMPLAINTS, "ignored": REPLIES,
        "counted": SOFT * (SOFT_EACH - 1),
    }  # fmt: skip
    decisions = Counter(r.recipient for r in rows if r.action in ("suspended", "unsubscribed"))
    assert set(decisions.values()) == {1}  # each decision once
    for i in range(HARD):
        sub = subs[_address("hard", i)]
        assert (sub.status, sub.suspended_reason) == ("suspended", "hard bounce 5.1.1")
    for i in range(SOFT):
        sub = subs[_address("soft", i)]
        assert (sub.status, sub.suspended_reason) == ("suspended", "3 soft bounces within 30 days")
    assert all(subs[_address("complaint", i)].status == "unsubscribed" for i in range(COMPLAINTS))
    assert all(subs[_address("reply", i)].status == "active" for i in range(REPLIES))
    assert len(list(folder.glob("*/*"))) == MESSAGES  # the mailbox itself is left alone
