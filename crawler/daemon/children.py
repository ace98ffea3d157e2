"""The daemon's crawl subprocesses: started unless the daemon is stopping, waited for with a
timeout, asked to stop with SIGTERM and killed when they ignore it.

Crawls run as ``litwatch crawl ID`` subprocesses because Scrapy's reactor cannot restart
inside one process.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable

log = logging.getLogger("litwatch.daemon")

#: What a crawl's exit status means, for ``litwatch status``.
EXIT_RESULTS = {0: "ok", 1: "failed (see litwatch status)", 2: "configuration error"}


def crawl_command(
    config_path: str | None, source_id: str, log_level: str | None = None
) -> list[str]:
    """The ``litwatch crawl`` command line the daemon runs for one source."""
    return litwatch_command(
        config_path, log_level, "crawl", source_id, "--trigger", "daemon", "--no-progress"
    )


def litwatch_command(config_path: str | None, log_level: str | None, *args: str) -> list[str]:
    """A ``litwatch`` command line with the daemon's configuration and log level."""
    cmd = [sys.executable, "-m", "crawler.cli"]
    if config_path:
        cmd += ["--config", config_path]
    if log_level:
        cmd += ["--log-level", log_level]
    return [*cmd, *args]


class Children:
    """The crawl subprocesses running now; ``stop`` is the daemon's stop flag."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()

    def running(self) -> set[subprocess.Popen[bytes]]:
        with self._lock:
            return set(self._procs)

    def spawn(self, cmd: list[str]) -> subprocess.Popen[bytes] | None:
        """Start a crawl subprocess unless the daemon is stopping.

        The stop check and the registration share a lock with :meth:`stop_all`, so a crawl
        starting during shutdown is either refused or asked to stop: never missed. The child
        gets its own process group: a Ctrl-C in a terminal then reaches only the daemon,
        which forwards one SIGTERM (Scrapy takes a second signal as "kill now"). Its stdout
        (the summary table) is dropped; its log lines go to our stderr. On Linux the child
        also gets SIGTERM when the daemon dies, even by SIGKILL (:func:`die_with_parent`):
        a crawl never outlives its daemon to run beside the next one's.
        """
        with self._lock:
            if self.stop.is_set():
                return None
            proc = subprocess.Popen(
                cmd,
                stdout=subprocess.DEVNULL,
                process_group=0,
                # Runs between fork and exec in a threaded process: it only makes three
                # system calls through a function looked up beforehand (no import, no lock).
                preexec_fn=die_with_parent(),
            )
            self._procs.add(proc)
            return proc

    def wait(self, proc: subprocess.Popen[bytes], timeout: float, grace: float) -> str:
        """Wait for ``proc`` (stopping it after ``timeout`` seconds); return its result."""
        try:
            code = proc.wait(timeout=timeout)
            return EXIT_RESULTS.get(code, f"exit {code}")
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            reap(proc, grace)
            return f"timed out after {int(timeout)}s"
        finally:
            with self._lock:
                self._procs.discard(proc)

    def stop_all(self, grace: float) -> None:
        """SIGTERM every running crawl, then give each ``grace`` seconds before SIGKILL."""
        children = self.running()
        for proc in children:
            if proc.poll() is None:
                log.info("event=crawl.stopping pid=%s", proc.pid)
                proc.send_signal(signal.SIGTERM)
        for proc in children:
            reap(proc, grace)


#: prctl(2) option: the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to send the child SIGTERM when its parent dies.

    The parent, for ``PR_SET_PDEATHSIG``, is the *thread* that started the child: the crawl
    job's thread, which waits for the child, so it lives as long as the crawl. SIGTERM (not
    SIGKILL) lets Scrapy close gracefully and the crawl close its run. A parent that died
    before the call is noticed through ``getppid``. None where prctl does not exist.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up now, not in the child
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the daemon died between fork and prctl
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def reap(proc: subprocess.Popen[bytes], grace: float) -> None:
    """Wait ``grace`` seconds for a signalled child, then kill it."""
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        log.warning("event=crawl.killed pid=%s grace=%s", proc.pid, grace)
        proc.kill()
        proc.wait()
