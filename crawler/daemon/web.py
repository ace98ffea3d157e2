"""Serve the subscriber web pages with uvicorn in a background thread.

``litwatch run --web`` runs the web side inside the daemon: uvicorn's server runs on its own
asyncio loop in a thread and stops (finishing requests in flight) when the daemon's stop event
is set. The listening socket is opened in the caller's thread, so a port already in use fails
at start-up, where the operator sees it, rather than later in a log.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Sequence

import uvicorn
from sqlalchemy import Engine
from starlette.types import ASGIApp

from crawler.settings import Settings

log = logging.getLogger("litwatch.web")

#: Requests in flight get this long to finish after a stop.
GRACEFUL_SECONDS = 5
_POLL_SECONDS = 0.2


def uvicorn_config(
    app: ASGIApp, host: str, port: int, trusted_proxies: Sequence[str] = ("127.0.0.1",)
) -> uvicorn.Config:
    """The uvicorn configuration shared by ``litwatch web`` and the daemon thread.

    ``trusted_proxies`` is ``[web] trusted_proxies``: only a peer in it may say, through
    X-Forwarded-For, which client it forwards (the sign-up rate limit counts per client);
    anyone else is counted as the peer it is.
    """
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # keep litwatch's logging set-up
        access_log=False,
        lifespan="off",
        server_header=False,
        proxy_headers=True,
        forwarded_allow_ips=list(trusted_proxies),
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
    )


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket (port 0 picks a free one); OSError with a clear message."""
    try:
        return socket.create_server((host, port), reuse_port=False, backlog=128)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None


def serve_in_thread(
    app: ASGIApp,
    sock: socket.socket,
    stop: threading.Event,
    trusted_proxies: Sequence[str] = ("127.0.0.1",),
) -> threading.Thread:
    """Serve ``app`` on ``sock`` in a new thread until ``stop`` is set; return the thread."""
    host, port = sock.getsockname()[:2]
    server = uvicorn.Server(uvicorn_config(app, host, port, trusted_proxies))

    async def run() -> None:
        async def watch() -> None:
            while not stop.is_set() and not server.should_exit:
                await asyncio.sleep(_POLL_SECONDS)
            server.should_exit = True

        watcher = asyncio.create_task(watch())
        try:
            await server.serve(sockets=[sock])
        finally:
            watcher.cancel()
            sock.close()

    def target() -> None:
        # uvicorn leaves signal handling to the main thread when it runs in another one.
        asyncio.run(run())
        log.info("event=web.stopped host=%s port=%s", host, port)

    thread = threading.Thread(target=target, name="litwatch-web", daemon=True)
    thread.start()
    log.info("event=web.started host=%s port=%s", host, port)
    return thread


def start_web_thread(settings: Settings, engine: Engine, stop: threading.Event) -> threading.Thread:
    """Serve the subscriber pages on ``[web] host``/``port`` until ``stop`` is set."""
    from digests.web import create_app

    sock = listen(settings.web.host, settings.web.port)
    try:
        app = create_app(settings, engine)
    except BaseException:
        sock.close()
        raise
    return serve_in_thread(app, sock, stop, settings.web.trusted_proxies)
