"""A real HTTP/1.1 fixture server on 127.0.0.1 for spider, feed and benchmark tests.

Tests talk to it over real sockets (no mocks), so Scrapy's downloader, retry and robots.txt
middlewares run exactly as they would against PubMed or a journal site. It offers:

* a route table of static answers, with conditional GET (ETag / Last-Modified -> 304);
* handler routes that build answers from the query (e.g. a fake ESearch / EFetch);
* scripted failures served before a route's normal answer (429 with Retry-After, 503, slow
  answers, dropped connections);
* a request log with helpers to count requests, bytes sent and the peak request rate (NCBI
  allows at most 3 requests per second without an API key).

Unknown paths, including ``/robots.txt``, answer 404: Scrapy's RobotsTxtMiddleware treats a
missing robots.txt as "everything allowed", so crawls are not blocked by accident.

Standalone use (end-to-end tests, benchmarks)::

    python -m tests.support.httpserver --root DIR --port 0

serves the files under DIR and prints ``READY <port>`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import mimetypes
import socket
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, parse_qsl, unquote, urlsplit

from tests.support import wait_for_termination

HOST = "127.0.0.1"
TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Request:
    """One parsed request as seen by the server (and by handler callables)."""

    method: str
    path: str
    query: dict[str, list[str]]
    # Header names are lower-cased: HTTP header names are case-insensitive (RFC 9110 5.1).
    headers: dict[str, str]
    body: bytes = b""
    raw_query: str = ""  # the query string as sent, for exact-query route matching

    def arg(self, name: str, default: str | None = None) -> str | None:
        """Return the first value of query parameter ``name``, or ``default``."""
        values = self.query.get(name)
        return values[0] if values else default

    def header(self, name: str) -> str | None:
        """Return a request header by case-insensitive name."""
        return self.headers.get(name.lower())


@dataclass
class Response:
    """An answer to send; ``drop=True`` closes the connection without any response."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = TEXT
    delay: float = 0.0
    drop: bool = False


@dataclass(frozen=True)
class LoggedRequest:
    """A request log entry; ``status`` is None when the connection was dropped."""

    time: float  # time.monotonic() when the request line and headers had been read
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    status: int | None
    body_bytes: int

    def header(self, name: str) -> str | None:
        """Return a request header by case-insensitive name."""
        return self.headers.get(name.lower())


Handler = Callable[[Request], Response]


def max_in_window(times: Iterable[float], window: float = 1.0) -> int:
    """Return the largest number of ``times`` inside any interval ``(t - window, t]``.

    The interval is half-open so a client pacing requests exactly ``window / 3`` apart counts
    as 3 per window, which is what NCBI's "3 requests per second" allows.
    """
    ordered = sorted(times)
    best = 0
    start = 0
    for end, now in enumerate(ordered):
        while ordered[start] <= now - window:
            start += 1
        best = max(best, end - start + 1)
    return best


def _strip_weak(tag: str) -> str:
    return tag.strip().removeprefix("W/")


def is_not_modified(request: Request, etag: str | None, last_modified: str | None) -> bool:
    """Decide a conditional GET per RFC 9110 13.1: True means answer 304.

    If-None-Match wins when present (If-Modified-Since is then ignored, 13.1.3) and uses weak
    comparison (13.1.2). Unparseable dates are ignored, as the RFC requires.
    """
    if request.method not in ("GET", "HEAD"):
        return False
    if_none_match = request.header("If-None-Match")
    if if_none_match is not None:
        if etag is None:
            return False
        tags = {_strip_weak(tag) for tag in if_none_match.split(",")}
        return "*" in tags or _strip_weak(etag) in tags
    since = request.header("If-Modified-Since")
    if since is None or last_modified is None:
        return False
    try:
        return parsedate_to_datetime(last_modified) <= parsedate_to_datetime(since)
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True)
class StaticAnswer:
    """A fixed answer with optional validators; callable as a route handler."""

    body: bytes
    content_type: str | None = TEXT
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    etag: str | None = None
    last_modified: str | None = None
    delay: float = 0.0

    def __call__(self, request: Request) -> Response:
        """Answer ``request``: 304 without body when its validators match, else the body."""
        validators = {"ETag": self.etag, "Last-Modified": self.last_modified}
        extra = {name: value for name, value in validators.items() if value is not None}
        if is_not_modified(request, self.etag, self.last_modified):
            return Response(304, b"", extra, content_type=None, delay=self.delay)
        headers = {**self.headers, **extra}
        return Response(self.status, self.body, headers, self.content_type, self.delay)


@dataclass
class _Route:
    handler: Handler
    script: deque[Response]


def _query_key(query: str) -> tuple[tuple[str, str], ...]:
    # Sorted so "a=1&b=2" and "b=2&a=1" name the same route.
    return tuple(sorted(parse_qsl(query, keep_blank_values=True)))


def _quote_etag(etag: str | None) -> str | None:
    # An entity tag must be quoted (RFC 9110 8.8.3); accept bare strings for convenience.
    if etag is None or etag.startswith(('"', 'W/"')):
        return etag
    return f'"{etag}"'


class _RequestHandler(BaseHTTPRequestHandler):
    """Turns socket traffic into Request objects and writes Response objects."""

    protocol_version = "HTTP/1.1"  # keep-alive, as Scrapy's HTTP/1.1 downloader expects
    timeout = 10  # an idle keep-alive connection must not pin a thread for ever
    server: _Server

    def do_GET(self) -> None:
        """Serve GET."""
        self._dispatch()

    def do_HEAD(self) -> None:
        """Serve HEAD (headers only)."""
        self._dispatch()

    def do_POST(self) -> None:
        """Serve POST (E-utilities accept long id lists by POST)."""
        self._dispatch()

    def setup(self) -> None:
        """Register the connection so stop() can interrupt it."""
        super().setup()
        self.server.fixture.track(self.connection, add=True)

    def finish(self) -> None:
        """Unregister the connection."""
        self.server.fixture.track(self.connection, add=False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: the request log replaces stderr noise."""

    def _read_request(self) -> Request:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        return Request(
            method=self.command,
            path=unquote(split.path),
            query=parse_qs(split.query, keep_blank_values=True),
            headers=headers,
            body=self.rfile.read(length) if length else b"",
            raw_query=split.query,
        )

    def _dispatch(self) -> None:
        arrived = time.monotonic()
        fixture = self.server.fixture
        request = self._read_request()
        response = fixture.answer(request)
        if response.delay:
            fixture.sleep(response.delay)
        body = b"" if request.method == "HEAD" or response.status == 304 else response.body
        # Log before writing so an entry exists as soon as the client sees the answer.
        fixture.record(_log_entry(arrived, request, response, len(body)))
        if response.drop:
            self.close_connection = True
            return
        self._write(response, body)

    def _write(self, response: Response, body: bytes) -> None:
        self.send_response(response.status)
        if response.content_type and response.status != 304:
            self.send_header("Content-Type", response.content_type)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if response.status != 304:  # a 304 has no body and needs no length (RFC 9110 15.4.5)
            self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(body)


def _log_entry(arrived: float, request: Request, response: Response, sent: int) -> LoggedRequest:
    return LoggedRequest(
        time=arrived,
        method=request.method,
        path=request.path,
        query=request.query,
        headers=request.headers,
        status=None if response.drop else response.status,
        body_bytes=0 if response.drop else sent,
    )


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its fixture and joins its threads on close."""

    daemon_threads = False
    block_on_close = True  # server_close() joins handler threads: no stray threads after stop

    def __init__(self, fixture: LocalHTTPServer, port: int) -> None:
        self.fixture = fixture
        super().__init__((HOST, port), _RequestHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore clients that hang up; report anything else on stderr."""
        if not isinstance(sys.exc_info()[1], OSError):
            traceback.print_exc()


class LocalHTTPServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 with routes, scripted failures and a log.

    Use as a context manager (or via the ``http_server`` pytest fixture)::

        with LocalHTTPServer() as server:
            server.add("/feed.xml", body, content_type="application/rss+xml", etag='"v1"')
            fetch(server.url("/feed.xml"))
            assert server.count("/feed.xml") == 1
    """

    def __init__(self, port: int = 0, root: Path | None = None) -> None:
        """Bind at once (port 0 = ephemeral); ``root`` serves files for unrouted paths."""
        self.root = root.resolve() if root is not None else None
        self.errors: list[str] = []  # tracebacks of handler callables that raised
        self._lock = threading.Lock()
        self._routes: dict[tuple[str, tuple[tuple[str, str], ...] | None], _Route] = {}
        self._log: list[LoggedRequest] = []
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._httpd = _Server(self, port)
        self.host = HOST
        self.port: int = self._httpd.server_address[1]
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Start serving in a background thread."""
        # A short poll interval: shutdown() waits for the serving loop's next poll.
        serve = functools.partial(self._httpd.serve_forever, poll_interval=0.02)
        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, cut open connections and join every thread."""
        self._stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            _shutdown(conn)
        self._httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- routes ----------------------------------------------------------------------------

    def url(self, path: str = "/") -> str:
        """Return the absolute URL of ``path`` (which may carry a query string)."""
        return f"http://{self.host}:{self.port}{path if path.startswith('/') else '/' + path}"

    def add(
        self,
        path: str,
        body: bytes,
        *,
        content_type: str = TEXT,
        status: int = 200,
        headers: dict[str, str] | None = None,
        etag: str | None = None,
        last_modified: str | None = None,
        delay: float = 0.0,
        script: Sequence[Response] = (),
    ) -> None:
        """Serve a fixed answer at ``path``.

        ``path`` without "?" matches any query string; with "?" it matches only that query
        (parameter order ignored). ``script`` answers are served first, one per request, then
        the fixed answer. ``etag`` / ``last_modified`` enable conditional GET (304).
        """
        answer = StaticAnswer(
            body, content_type, status, dict(headers or {}), _quote_etag(etag), last_modified, delay
        )
        self.add_handler(path, answer, script=script)

    def add_handler(self, path: str, handler: Handler, *, script: Sequence[Response] = ()) -> None:
        """Answer ``path`` with ``handler(request)``, after the ``script`` answers (if any)."""
        route_path, _, query = path.partition("?")
        key = (route_path, _query_key(query) if "?" in path else None)
        with self._lock:
            self._routes[key] = _Route(handler, deque(script))

    def answer(self, request: Request) -> Response:
        """Pick the response for ``request`` (called by the request handler threads)."""
        with self._lock:
            route = self._routes.get((request.path, _query_key(request.raw_query)))
            route = route or self._routes.get((request.path, None))
            if route is not None and route.script:
                return route.script.popleft()
        if route is not None:
            return self._call(route.handler, request)
        if self.root is not None:
            return self._file_answer(request)
        return Response(404, b"not found\n")

    def _call(self, handler: Handler, request: Request) -> Response:
        # A bug in a test's handler must show up as a 500 plus a recorded traceback, not as a
        # silent hang of the client.
        try:
            return handler(request)
        except Exception:
            with self._lock:
                self.errors.append(traceback.format_exc())
            return Response(500, b"handler raised\n")

    def _file_answer(self, request: Request) -> Response:
        assert self.root is not None
        candidate = (self.root / request.path.lstrip("/")).resolve()
        # Refuse "../" escapes: only files below root are served.
        if not candidate.is_relative_to(self.root) or not candidate.is_file():
            return Response(404, b"not found\n")
        return file_answer(candidate)(request)

    # -- log -------------------------------------------------------------------------------

    def record(self, entry: LoggedRequest) -> None:
        """Append an entry to the request log (called by the request handler threads)."""
        with self._lock:
            self._log.append(entry)

    @property
    def log(self) -> list[LoggedRequest]:
        """A snapshot of the request log, oldest first."""
        with self._lock:
            return list(self._log)

    def requests_to(self, path: str) -> list[LoggedRequest]:
        """Logged requests whose path (without query) is ``path``."""
        return [entry for entry in self.log if entry.path == path]

    def count(self, path: str | None = None) -> int:
        """Number of requests to ``path``, or to any path when None."""
        return len(self.log) if path is None else len(self.requests_to(path))

    def body_bytes_sent(self) -> int:
        """Total response body bytes sent (headers excluded; 304/HEAD/drops send none)."""
        return sum(entry.body_bytes for entry in self.log)

    def max_requests_per_window(self, window: float = 1.0, path: str | None = None) -> int:
        """Peak number of requests (to ``path``, or all) within any ``window`` seconds."""
        entries = self.log if path is None else self.requests_to(path)
        return max_in_window((entry.time for entry in entries), window)

    def clear_log(self) -> None:
        """Forget logged requests (routes stay)."""
        with self._lock:
            self._log.clear()

    # -- helpers for the request handler ---------------------------------------------------

    def sleep(self, seconds: float) -> None:
        """Sleep for a scripted delay, cut short when the server stops."""
        self._stopping.wait(seconds)

    def track(self, conn: socket.socket, *, add: bool) -> None:
        """Remember (or forget) an open client connection."""
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)


def _shutdown(conn: socket.socket) -> None:
    # OSError: already closed by the client or by the handler thread.
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)


def file_answer(path: Path) -> StaticAnswer:
    """Answer a file with conditional GET: ETag from its content, Last-Modified from mtime."""
    body = path.read_bytes()
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return StaticAnswer(
        body,
        content_type,
        etag=f'"{hashlib.sha256(body).hexdigest()[:32]}"',
        last_modified=formatdate(path.stat().st_mtime, usegmt=True),
    )


def main(argv: list[str] | None = None) -> int:
    """Serve ``--root`` on ``--port`` until SIGTERM/SIGINT; print ``READY <port>`` first."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="directory to serve")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.error(f"--root {args.root} is not a directory")
    with LocalHTTPServer(port=args.port, root=args.root) as server:
        print(f"READY {server.port}", flush=True)
        wait_for_termination()
    return 0


if __name__ == "__main__":
    sys.exit(main())


# --- Another loopback address (appended for issue 12 A2) -----------------------------------


class _BoundServer(_Server):
    """A ``_Server`` bound to another address than 127.0.0.1."""

    def __init__(self, fixture: LocalHTTPServer, port: int, host: str) -> None:
        self.fixture = fixture
        ThreadingHTTPServer.__init__(self, (host, port), _RequestHandler)


class InternalHTTPServer(LocalHTTPServer):
    """A :class:`LocalHTTPServer` on another loopback address: 127.0.0.2 stands for an
    internal host that a crawl must never reach through a feed's links or redirects."""

    def __init__(self, host: str = "127.0.0.2", port: int = 0, root: Path | None = None) -> None:
        super().__init__(port, root)
        self._httpd.server_close()  # bound to 127.0.0.1 by the base class: bind again
        self._httpd = _BoundServer(self, port, host)
        self.host = host
        self.port = self._httpd.server_address[1]


# --- Endless answers (appended for issue 12 A5) ---------------------------------------------

#: Header (never sent) marking a :class:`Response` whose body repeats until the client leaves.
ENDLESS = "X-Litwatch-Endless"


def endless_response(
    content_type: str = "text/html", chunk: bytes = b"<p>" + b"x" * 65533
) -> Response:
    """An answer that never ends: ``chunk`` again and again, no length, until the client
    hangs up (a hostile or broken server; the client's size limit must stop it)."""
    return Response(200, chunk, {ENDLESS: "1"}, content_type)


class _EndlessHandler(_RequestHandler):
    def _write(self, response: Response, body: bytes) -> None:
        if ENDLESS not in response.headers:
            super()._write(response, body)
            return
        self.close_connection = True
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type or TEXT)
        self.send_header("Connection", "close")  # the body ends only when the connection does
        self.end_headers()
        with contextlib.suppress(OSError):  # the client hung up: the answer's end
            while not self.server.fixture._stopping.is_set():
                self.wfile.write(response.body)


class _EndlessServer(_Server):
    def __init__(self, fixture: LocalHTTPServer, port: int) -> None:
        self.fixture = fixture
        ThreadingHTTPServer.__init__(self, (HOST, port), _EndlessHandler)


class EndlessHTTPServer(LocalHTTPServer):
    """A :class:`LocalHTTPServer` that can also stream :func:`endless_response` answers."""

    def __init__(self, port: int = 0, root: Path | None = None) -> None:
        super().__init__(port, root)
        self._httpd.server_close()  # bound with the plain handler by the base class
        self._httpd = _EndlessServer(self, port)
        self.port = self._httpd.server_address[1]
