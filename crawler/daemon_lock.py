"""The one-daemon-per-database lock, shared by the daemon and ``litwatch status``."""

from __future__ import annotations

from sqlalchemy import Engine

from crawler.locks import NamedLock

DAEMON_LOCK = "daemon"


def daemon_running(engine: Engine) -> bool:
    """Whether some process holds the daemon lock right now (a probe, not the heartbeat)."""
    probe = NamedLock(engine, DAEMON_LOCK)
    if probe.acquire():
        probe.release()
        return False
    return True
