"""Named locks shared by every litwatch process using one database.

They keep one crawl per source, one E-utilities client at a time, and one daemon per
database. A lock belongs to the process holding it and the operating system or the database
server frees it when that process dies, so a crash never leaves a stale lock behind:

- PostgreSQL: a session-level advisory lock on a dedicated connection.
- SQLite: ``flock`` on a file in ``<database>.locks/`` next to the database file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # SQLAlchemy is imported when a lock is taken, not with this module
    from sqlalchemy import Engine

#: How often a lock that guards long work (a crawl's sources, the daemon) is checked: at
#: most this long can pass between losing a lock and stopping what it guarded.
CHECK_EVERY = 5.0
#: Seconds between two attempts to take a lost lock back.
REGAIN_POLL = 0.5

#: The backend holding a two-key advisory lock (objsubid 2 marks the two-key form).
_HOLDER_SQL = (
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND classid::bigint = :c AND objid::bigint = :k AND objsubid = 2"
)

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
        #: Set when :meth:`alive` found the lock gone (until :meth:`regain` takes it back).
        self.lost = False
        #: The PostgreSQL backend holding the lock at the last attempt (ours when we got it).
        self._holder: int | None = None

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

        keys = {"c": PG_LOCK_CLASS, "k": pg_key(self.name)}
        conn = self.engine.connect()
        try:
            got, pid = conn.execute(
                text("SELECT pg_try_advisory_lock(:c, :k), pg_backend_pid()"), keys
            ).one()
            # Who holds it: after a cut, our own dead session may hold it a moment longer.
            self._holder = pid if got else conn.execute(text(_HOLDER_SQL), keys).scalar()
            conn.commit()
        except BaseException:
            conn.close()
            raise
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
        (a server restart, a network cut) without telling us; a file lock cannot be lost.

        A lock found dead is forgotten (its connection closed, :attr:`lost` set): the holder
        must stop what the lock guarded or :meth:`regain` it, never carry on.
        """
        if self._conn is None:
            return self._fd is not None
        from sqlalchemy import text

        try:
            self._conn.execute(text("SELECT 1"))
            self._conn.commit()
        except Exception:  # any failure means the session, and so the lock, is gone
            self._drop()
            self.lost = True
            return False
        return True

    def regain(self, wait: float, stop: threading.Event | None = None) -> str:
        """After a loss, take the lock again: "regained", "taken" (another process holds it
        now) or "unreachable" (no connection for ``wait`` seconds; "stopped" when ``stop`` is
        set meanwhile). A database that restarts is back within a few seconds."""
        deadline = time.monotonic() + wait
        ours = self._holder  # the session that held the lock before the cut
        while True:
            try:
                if self._try():
                    self.lost = False
                    return "regained"
                if self._holder != ours or ours is None:
                    return "taken"
                # Our own dead session still holds it (the server has not noticed the cut):
                # end it; only its owner may, and nobody else can be holding this lock.
                self._end_session(ours)
            except Exception:  # connection refused, reset...: the server is not back yet
                self._drop()
            if stop is not None and stop.is_set():
                return "stopped"
            if time.monotonic() >= deadline:
                return "unreachable"
            time.sleep(REGAIN_POLL)

    def _end_session(self, pid: int) -> None:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
            conn.commit()

    def _drop(self) -> None:
        """Forget a dead connection (closing it may fail too: it is dead)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.invalidate()
            with contextlib.suppress(Exception):
                conn.close()

    def release(self) -> None:
        """Give the lock back; never raises for a connection that died meanwhile (the server
        freed the lock with it)."""
        if self._conn is not None:
            from sqlalchemy import text

            # A dead session took the lock with it: nothing to give back then.
            with contextlib.suppress(Exception):
                self._conn.execute(
                    text("SELECT pg_advisory_unlock(:c, :k)"),
                    {"c": PG_LOCK_CLASS, "k": pg_key(self.name)},
                )
                self._conn.commit()
            self._drop()
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


class LockWatch:
    """Checks held locks every ``every`` seconds in a thread and reports each one lost.

    ``on_lost(name)`` is called once per lost lock, from the watching thread. Stop the watch
    before releasing its locks (``stop`` waits for a check in progress).
    """

    def __init__(
        self, locks: list[NamedLock], on_lost: Callable[[str], None], every: float = CHECK_EVERY
    ) -> None:
        self.locks = list(locks)
        self.on_lost = on_lost
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lock-watch", daemon=True)

    def start(self) -> LockWatch:
        if any(lock._conn is not None for lock in self.locks):  # only PostgreSQL locks die
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            for lock in list(self.locks):
                if self._stop.is_set():
                    return
                if not lock.alive():
                    self.locks.remove(lock)
                    self.on_lost(lock.name)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


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
        import tempfile  # only for in-memory databases

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
