"""Tests for crawler.locks: a NamedLock held by another process, released, and crashed.

SQLite uses a lock file (flock), PostgreSQL a session advisory lock; both must be freed by the
operating system or the server when the holder dies, so a ``kill -9`` leaves nothing stale.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from crawler.db.engine import make_engine
from crawler.locks import NamedLock, lock_path

ROOT = Path(__file__).resolve().parents[1]

# The holder: take the lock, say so, then release when told to (or wait to be killed).
HOLDER = """
import sys
from crawler.db.engine import make_engine
from crawler.locks import NamedLock
lock = NamedLock(make_engine(sys.argv[1]), sys.argv[2])
print("locked" if lock.acquire() else "busy", flush=True)
sys.stdin.readline()
lock.release()
print("released", flush=True)
sys.stdin.readline()
"""


class Holder:
    """A child process holding a NamedLock."""

    def __init__(self, url: str, name: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, url, name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        self.first = self.proc.stdout.readline().strip()

    def release(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "released"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def lock_engine(db_url: str) -> Iterator[Engine]:
    """An engine on each backend; locks need no schema."""
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for holder in started:
        holder.close()


def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def test_second_acquire_fails_while_held_then_succeeds(
    lock_engine: Engine, holders: list[Holder]
) -> None:
    holder = Holder(_url(lock_engine), "crawl:pubmed-fibromyalgia")
    holders.append(holder)
    assert holder.first == "locked"
    mine = NamedLock(lock_engine, "crawl:pubmed-fibromyalgia")
    assert mine.acquire() is False
    assert not mine.held
    # Another name is independent.
    with NamedLock(lock_engine, "crawl:other") as other:
        assert other.acquire() is True
    holder.release()
    assert mine.acquire() is True
    try:
        # Now the roles swap: a new process cannot take it from us.
        second = Holder(_url(lock_engine), "crawl:pubmed-fibromyalgia")
        holders.append(second)
        assert second.first == "busy"
    finally:
        mine.release()
    assert not mine.held


def test_lock_freed_when_holder_is_killed(lock_engine: Engine, holders: list[Holder]) -> None:
    holder = Holder(_url(lock_engine), "daemon")
    holders.append(holder)
    assert holder.first == "locked"
    mine = NamedLock(lock_engine, "daemon")
    assert mine.acquire() is False
    holder.kill()
    # The server notices the dropped connection within moments; wait a little for it.
    assert mine.acquire(blocking=True, timeout=15) is True
    mine.release()


def test_blocking_acquire_times_out(lock_engine: Engine, holders: list[Holder]) -> None:
    holder = Holder(_url(lock_engine), "ncbi")
    holders.append(holder)
    assert holder.first == "locked"
    assert NamedLock(lock_engine, "ncbi").acquire(blocking=True, timeout=0.5) is False


def test_acquire_twice_by_the_holder(lock_engine: Engine) -> None:
    lock = NamedLock(lock_engine, "twice")
    assert lock.acquire()
    try:
        assert lock.acquire() is True  # not "busy because of ourselves"
        assert NamedLock(lock_engine, "twice").acquire() is False
    finally:
        lock.release()
    assert not lock.held


def test_release_is_idempotent(lock_engine: Engine) -> None:
    lock = NamedLock(lock_engine, "x")
    lock.release()
    assert lock.acquire()
    lock.release()
    lock.release()
    again = NamedLock(lock_engine, "x")
    assert again.acquire()
    again.release()


def test_sqlite_lock_file_lives_next_to_database(sqlite_url: str, tmp_path: Path) -> None:
    engine = make_engine(sqlite_url)
    try:
        path = lock_path(engine, "crawl:a/b c")
        assert path.parent == tmp_path / "litwatch-test.db.locks"
        assert path.name == "crawl_a_b_c.lock"
        lock = NamedLock(engine, "crawl:a/b c")
        assert lock.acquire()
        assert path.read_text().strip() == str(os.getpid())
        lock.release()
    finally:
        engine.dispose()


def test_alive_while_held_and_not_after_release(lock_engine: Engine) -> None:
    lock = NamedLock(lock_engine, "alive-check")
    assert lock.acquire()
    assert lock.alive()
    lock.release()
    assert not lock.alive()


def test_postgres_lock_lost_with_its_connection(pg_url: str) -> None:
    """A dropped session frees the advisory lock; the holder must notice (daemon heartbeat)."""
    from sqlalchemy import text

    engine = make_engine(pg_url)
    lock = NamedLock(engine, "lost-connection")
    try:
        assert lock.acquire()
        pid = lock._conn.execute(text("SELECT pg_backend_pid()")).scalar()
        lock._conn.commit()
        with engine.begin() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        assert not lock.alive()
        other = NamedLock(engine, "lost-connection")
        assert other.acquire()  # another daemon could now take over
        other.release()
    finally:
        with contextlib.suppress(Exception):
            lock.release()
        engine.dispose()
