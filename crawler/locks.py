"""Named locks shared by every litwatch process using one database.

They keep one crawl per source, one E-utilities client at a time, and one daemon per
database. A lock belongs to the process holding it and the operating system or the database
server frees it when that process dies, so a crash never leaves a stale lock behind:

- PostgreSQL: a session-level advisory lock on a dedicated connection.
- SQLite: ``flock`` on a file in ``<database>.locks/`` next to the database file.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
import zlib
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # SQLAlchemy is imported when a lock is taken, not with this module
    from sqlalchemy import Engine

#: First key of litwatch's two-key PostgreSQL advisory locks ("litw").
PG_LOCK_CLASS = 0x6C697477 & 0x7FFFFFFF

# Every lock name litwatch takes, in one place.
#: One daemon per database (shared by the daemon and ``litwatch status``).
DAEMON_LOCK = "daemon"
#: One digest sender at a time.
SEND_LOCK = "digest-send"
#: One lifecycle watch at a time.
WATCH_LOCK = "lifecycle-watch"


def crawl_lock(source_id: str) -> str:
    """One crawl per source."""
    return f"crawl:{source_id}"


def host_lock(host: str) -> str:
    """One client at a time for a host whose rate limit is per client (NCBI E-utilities)."""
    return f"host:{host}"


class NamedLock:
    """A process-owned, crash-safe lock called ``name`` in the scope of one database."""

    def __init__(self, engine: Engine, name: str) -> None:
        self.engine = engine
        self.name = name
        self._conn: Any = None
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None or self._fd is not None

    def acquire(self, *, blocking: bool = False, timeout: float | None = None) -> bool:
        """Take the lock; return False when another process holds it (and we do not wait).

        Taking a lock this object already holds succeeds at once: a second attempt would
        open another connection or file and find the lock taken, by ourselves.
        """
        if self.held:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._try():
                return True
            if not blocking or (deadline is not None and time.monotonic() >= deadline):
                return False
            time.sleep(0.2)

    def _try(self) -> bool:
        if self.engine.dialect.name == "postgresql":
            return self._try_pg()
        return self._try_file()

    def _try_pg(self) -> bool:
        from sqlalchemy import text

        conn = self.engine.connect()
        got = conn.execute(
            text("SELECT pg_try_advisory_lock(:c, :k)"),
            {"c": PG_LOCK_CLASS, "k": pg_key(self.name)},
        ).scalar()
        conn.commit()
        if got:
            self._conn = conn
            return True
        conn.close()
        return False

    def _try_file(self) -> bool:
        path = lock_path(self.engine, self.name)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def alive(self) -> bool:
        """Whether the lock is still held. A PostgreSQL advisory lock dies with its connection
        (a server restart, a network cut) without telling us; a file lock cannot be lost."""
        if self._conn is None:
            return self._fd is not None
        from sqlalchemy import text

        try:
            self._conn.execute(text("SELECT 1"))
            self._conn.commit()
        except Exception:  # any failure means the session, and so the lock, is gone
            return False
        return True

    def release(self) -> None:
        if self._conn is not None:
            from sqlalchemy import text

            try:
                self._conn.execute(
                    text("SELECT pg_advisory_unlock(:c, :k)"),
                    {"c": PG_LOCK_CLASS, "k": pg_key(self.name)},
                )
                self._conn.commit()
            finally:
                self._conn.close()
                self._conn = None
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> NamedLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def pg_key(name: str) -> int:
    """The second key of the advisory lock called ``name``."""
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def file_lock_free(path: Path) -> bool:
    """Whether nobody holds the file lock at ``path`` (a probe: taken and given back)."""
    if not path.exists():
        return True
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing gives the lock back
    return True


def lock_path(where: Engine | str | None, name: str) -> Path:
    """Where the SQLite lock file for ``name`` lives (next to the database file; ``where`` is
    the engine or the database file's path)."""
    database = where if where is None or isinstance(where, str) else where.url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        folder = Path(database).expanduser().resolve().parent / (Path(database).name + ".locks")
    else:
        folder = Path(tempfile.gettempdir()) / f"litwatch-{os.getuid()}-memory.locks"
    folder.mkdir(parents=True, exist_ok=True)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
    return folder / f"{safe}.lock"


def daemon_running(engine: Engine) -> bool:
    """Whether some process holds the daemon lock right now (a probe, not the heartbeat)."""
    probe = NamedLock(engine, DAEMON_LOCK)
    if probe.acquire():
        probe.release()
        return False
    return True
