"""``litwatch web``: serve the subscriber pages (sign-up, unsubscribe, archive, feeds)."""

from __future__ import annotations

import click

from crawler.cli.context import App, fail, pass_app


@click.command()
@click.option("--host", metavar="HOST", help="Address to listen on (default: [web] host).")
@click.option(
    "--port", type=click.IntRange(0, 65535), help="Port to listen on (default: [web] port)."
)
@pass_app
def web(app: App, host: str | None, port: int | None) -> None:
    """Serve the subscriber web pages until stopped (SIGTERM or Ctrl-C).

    Links in e-mails are built from [web] base_url: put a TLS-terminating reverse proxy in
    front and set base_url to its https address.

    \b
    Examples:
      litwatch web
      litwatch web --host 0.0.0.0 --port 8080
    """
    # Imported here, not with the module: every litwatch command loads this one.
    import uvicorn

    from crawler.daemon.web import listen, uvicorn_config
    from digests.web import create_app

    settings = app.settings
    host = host or settings.web.host
    port = settings.web.port if port is None else port
    engine = app.engine()
    try:
        sock = listen(host, port)
    except OSError as exc:
        fail(str(exc.strerror or exc))
    config = uvicorn_config(create_app(settings, engine), host, port, settings.web.trusted_proxies)
    server = uvicorn.Server(config)
    click.echo(f"litwatch: serving on http://{host}:{sock.getsockname()[1]}/", err=True)
    # In the main thread uvicorn installs its own SIGINT/SIGTERM handlers: a graceful stop.
    server.run(sockets=[sock])


COMMANDS = [web]
