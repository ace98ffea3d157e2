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
    from digests.outbound import OutboundError, outbound
    from digests.web import create_app

    settings = app.settings
    host = host or settings.web.host
    port = settings.web.port if port is None else port
    engine = app.engine()
    try:  # the sign-up mail it sends: a bad DKIM key or From stops it here, not per mail
        outbound(settings, engine)
    except OutboundError as exc:
        fail(str(exc))
    try:
        sock = listen(host, port)
    except OSError as exc:
        fail(str(exc.strerror or exc))
    config = uvicorn_config(create_app(settings, engine), host, port, settings.web.trusted_proxies)
    server = uvicorn.Server(config)
    click.echo(f"litwatch: serving on http://{host}:{sock.getsockname()[1]}/", err=True)
    # In the main thread uvicorn installs its own SIGINT/SIGTERM handlers: a graceful stop.
    server.run(sockets=[sock])


@click.command("rotate-key")
@click.option(
    "--forget-previous",
    is_flag=True,
    help="Also stop accepting every older key: all links sent so far stop working.",
)
@pass_app
def rotate_key(app: App, forget_previous: bool) -> None:
    """Replace the key that signs the links in e-mails and on the web pages.

    New links are signed with a new key; links signed with the old one keep working until
    they expire (unsubscribe and preferences links: 90 days). Restart `litwatch web` and
    `litwatch run` afterwards. With LITWATCH_SECRET_KEY set, rotate there instead: set the
    new key and put the old one in LITWATCH_SECRET_KEY_PREVIOUS for 90 days.

    \b
    Examples:
      litwatch rotate-key
      litwatch rotate-key --forget-previous   # the key leaked
    """
    from digests.tokens import LINK_MAX_AGE, RotationError, rotate_secret

    try:
        done = rotate_secret(app.engine(), forget_previous=forget_previous)
    except RotationError as exc:
        fail(str(exc))
    days = LINK_MAX_AGE // 86400
    click.echo(
        f"litwatch: new signing key in use; {done.retired} older key(s) still verify links for "
        f"up to {days} days, {done.dropped} dropped. Restart `litwatch web` and `litwatch run`."
    )


COMMANDS = [web, rotate_key]
