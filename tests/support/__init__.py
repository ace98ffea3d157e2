"""Reusable test infrastructure: real local servers (no mocks) and helpers to run them.

* :mod:`tests.support.httpserver` - HTTP/1.1 fixture server (routes, 304s, scripted failures).
* :mod:`tests.support.smtpserver` - aiosmtpd SMTP server (STARTTLS, AUTH, failure modes).

Both bind 127.0.0.1 on an ephemeral port, run in-process for unit tests, and run as
``python -m tests.support.<module>`` for end-to-end tests; :func:`serve_in_subprocess` starts
such a process and waits for its ``READY <port>`` line.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def wait_for_termination() -> None:
    """Block the main thread until SIGTERM or SIGINT arrives.

    Used by the standalone servers so ``kill -TERM`` ends them cleanly (exit status 0) after
    their ``with`` blocks have closed the listening sockets.
    """
    stop = threading.Event()

    def _handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
    # Short waits rather than one long one: a signal handler only runs between bytecodes of
    # the main thread, and this keeps the reaction time bounded whatever the platform does.
    while not stop.wait(0.1):
        pass


def _read_ready_line(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """Read stdout until a ``READY <port>`` line; return the port.

    Reads the raw pipe with os.read so select() sees every byte (a buffered reader could hide
    a line that arrived in the same chunk as an earlier one).
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    pending = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if not selector.select(left):
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError(f"server exited with status {proc.wait()} before READY")
            pending += chunk
            for line in pending.split(b"\n")[:-1]:
                if line.startswith(b"READY "):
                    return int(line.split()[1])
    raise TimeoutError(f"no READY line within {timeout} s")


@contextmanager
def serve_in_subprocess(
    module: str, *args: str, timeout: float = 15.0
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Run ``python -m module *args`` from the repository root; yield (process, port).

    On exit the process gets SIGTERM and is reaped (killed if it ignores SIGTERM for 10 s),
    so no stray server outlives the test.
    """
    command = [sys.executable, "-m", module, *args]
    with subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE) as proc:
        try:
            yield proc, _read_ready_line(proc, timeout)
        finally:
            _terminate(proc)


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
