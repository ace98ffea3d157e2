"""A small threaded TCP proxy on 127.0.0.1 whose connections a test can cut.

Used to stand for a database server that restarts or a network that drops: ``sever()`` closes
every connection passing through (both ends see the connection reset), ``refuse()`` closes new
connections at once (the server is down), ``accept()`` lets them through again.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from types import TracebackType


class TcpProxy:
    """Forward ``127.0.0.1:<port>`` to ``target`` (host, port) until :meth:`close`."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._refusing = False
        self._closed = False
        #: Connections accepted so far (a reconnect shows up here).
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, name="tcpproxy", daemon=True)
        self._thread.start()

    def url_for(self, url: str) -> str:
        """``url`` (a database URL naming the target) rewritten to go through the proxy."""
        host, port = self.target
        return url.replace(f"@{host}:{port}/", f"@127.0.0.1:{self.port}/")

    def _serve(self) -> None:
        while not self._closed:
            try:
                client, _addr = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                self.accepted += 1
                if self._refusing:
                    _hard_close(client)
                    continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _hard_close(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._pairs.append((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    def sever(self) -> int:
        """Cut every open connection; return how many were cut."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for client, upstream in pairs:
            _hard_close(client)
            _hard_close(upstream)
        return len(pairs)

    def refuse(self) -> None:
        """From now on, close each new connection as soon as it arrives."""
        with self._lock:
            self._refusing = True

    def accept(self) -> None:
        """Let new connections through again."""
        with self._lock:
            self._refusing = False

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.sever()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy bytes one way until either side closes."""
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    for sock in (src, dst):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _hard_close(sock: socket.socket) -> None:
    """Cut a connection: both ends see it end at once.

    ``shutdown`` comes first: a bare ``close`` while a pump thread sits in ``recv`` on the
    socket would not reach the kernel until that call returns, and the peer would see nothing.
    """
    for step in (
        lambda: sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)),
        lambda: sock.shutdown(socket.SHUT_RDWR),
        sock.close,
    ):
        with contextlib.suppress(OSError):
            step()
