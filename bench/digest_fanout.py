"""Digest fan-out: ``litwatch digest send`` to N subscribers against a bare smtplib loop.

N subscribers (a third on each of the 2 topics, a third on both) and 40 new papers (20 per
topic, text from NLM's 177-article sample) are put in an empty SQLite database; ``litwatch
digest send`` then plans, renders, sends and records every digest over SMTP to a lean
aiosmtpd server on 127.0.0.1 that only counts what it accepts (so that the server is not
what both sides wait for). The baseline sends the same number of pre-rendered messages (the
project's own, written by its file backend beforehand) over one smtplib connection to the
same server. The figure of merit is the ratio of messages per second (litwatch / bare), on
wall time: nothing sleeps on either side. Peak memory must not grow with N.

``--dkim``: ``[email.dkim]`` is set (a fresh 2048-bit RSA key) and the bare loop DKIM-signs
each message before sending it, with the same signer (dkimpy, relaxed/relaxed, rsa-sha256).

Example::

    python -m bench.digest_fanout --subscribers 5000 10000 --runs 3
    python -m bench.digest_fanout --subscribers 5000 --runs 3 --dkim
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import secrets
import smtplib
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, insert, select

from bench.common import (
    Measured,
    check,
    clean_env,
    litwatch,
    machine,
    measure_self,
    run_measured,
    summarise_runs,
    summary,
    verdict,
    write_config,
    write_results,
)
from crawler.db.engine import make_engine
from crawler.db.migrate import upgrade
from crawler.db.models import Delivery, Subscriber, utcnow
from crawler.db.store import upsert
from crawler.items import Paper
from spiders.pubmed_xml import iter_efetch
from tests.support import serve_in_subprocess
from tests.support.corpus import CORPUS

SAMPLE = CORPUS / "pubmed" / "pubmedsample18n0001_177articles.xml.gz"
TOPIC_SETS = (["fibromyalgia"], ["autoimmunity"], ["fibromyalgia", "autoimmunity"])
PAPERS = 40
SENDER = "litwatch <digest@bench.example.org>"
#: Targets of issue 15 (at N = 5,000; issue 7 asked for 0.5), with or without DKIM.
RATIO_TARGET = 0.7
MEMORY_GROWTH_LIMIT = 1.2
DKIM_DOMAIN, DKIM_SELECTOR = "bench.example.org", "bench"


def dkim_key(tmp: Path) -> Path:
    """A fresh 2048-bit RSA key (PEM) for ``--dkim``."""
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (path := tmp / "dkim.private").write_bytes(
        key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    )
    return path


def dkim_section(key_file: Path | None) -> dict[str, dict[str, Any]]:
    if key_file is None:
        return {}
    section = {"domain": DKIM_DOMAIN, "selector": DKIM_SELECTOR, "key_file": str(key_file)}
    return {"email.dkim": section}


# --------------------------------------------------------------------------- the SMTP sink


def serve_sink() -> None:
    """Run the counting SMTP server until SIGTERM; print ``READY <port>`` first.

    Its ``XSTATS`` command answers ``250 <messages> <bytes>`` accepted so far.
    """
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import SMTP, Envelope, Session

    from tests.support import wait_for_termination

    totals = {"messages": 0, "bytes": 0}

    class Counting:
        async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
            totals["messages"] += 1
            totals["bytes"] += len(envelope.original_content or b"")
            return "250 OK"

    class StatsSMTP(SMTP):
        async def smtp_XSTATS(self, arg: str) -> None:
            await self.push(f"250 {totals['messages']} {totals['bytes']}")

    class Sink(Controller):
        def factory(self) -> SMTP:
            return StatsSMTP(self.handler, hostname="bench-sink.invalid")

        def _trigger_server(self) -> None:
            # Port 0: read the real port before aiosmtpd dials it to check readiness.
            assert isinstance(self.server, asyncio.Server)
            self.port = self.server.sockets[0].getsockname()[1]
            super()._trigger_server()

    sink = Sink(Counting(), hostname="127.0.0.1", port=0, data_size_limit=0)
    sink.start()
    try:
        print(f"READY {sink.port}", flush=True)
        wait_for_termination()
    finally:
        sink.stop()


@contextmanager
def running_sink() -> Iterator[int]:
    """The counting SMTP server in its own process (its CPU is nobody's); yield its port."""
    with serve_in_subprocess("bench.digest_fanout", "--serve-smtp") as (_proc, port):
        yield port


def sink_stats(port: int) -> tuple[int, int]:
    """(messages, bytes) the sink accepted so far."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        code, reply = client.docmd("XSTATS")
    if code != 250:
        raise SystemExit(f"the SMTP sink answered XSTATS with {code}")
    messages, size = reply.split()
    return int(messages), int(size)


# --------------------------------------------------------------------------- the data


def sample_papers() -> list[Paper]:
    """40 papers from the sample, 20 per topic, with fresh DOIs."""
    if not SAMPLE.is_file():
        raise SystemExit(f"corpus file {SAMPLE} not found (set LITWATCH_CORPUS)")
    with gzip.open(SAMPLE, "rb") as fh:
        papers = [p for p in iter_efetch(fh, "bench-papers") if p.title and p.abstract]
    chosen = papers[:PAPERS]
    for number, paper in enumerate(chosen):
        paper.doi = f"10.5555/lwdigest.{number}"
        paper.pmid = paper.pmcid = None
        paper.topics = [TOPIC_SETS[number % 2][0]]
    return chosen


def seed(db_url: str, subscribers: int) -> None:
    """An empty database with the papers (first seen an hour ago) and the subscribers."""
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        upsert(engine, sample_papers(), now=utcnow() - timedelta(hours=1))
        _add_subscribers(engine, subscribers)
    finally:
        engine.dispose()


def _add_subscribers(engine: Engine, count: int) -> None:
    # Rows as digests.subscribers.add makes them, in bulk: validating 10,000 addresses one by
    # one is not what is measured here.
    now = utcnow()
    rows = [
        {
            "email": f"reader{i}@bench.example.org",
            "email_key": f"reader{i}@bench.example.org",
            "name": f"Reader {i}",
            "topics": TOPIC_SETS[i % 3],
            "format": "html",
            "timezone": "UTC",
            "token": secrets.token_urlsafe(24),
            "status": "active",
            "created_at": now,
            "confirmed_at": now,
        }
        for i in range(count)
    ]
    with engine.begin() as conn:
        for start in range(0, count, 1000):
            conn.execute(insert(Subscriber), rows[start : start + 1000])


def _config(
    path: Path,
    db_url: str,
    email: dict[str, Any],
    smtp: dict[str, Any],
    key_file: Path | None = None,
) -> Path:
    return write_config(
        path,
        {
            "database": {"url": db_url},
            "web": {"base_url": "https://digest.bench.example.org"},
            "email": {"from": SENDER, **email},
            "email.smtp": smtp,
            **dkim_section(key_file),
        },
    )


def prerendered(tmp: Path) -> list[bytes]:
    """The project's own messages for one subscriber per topic set (file backend)."""
    db_url = f"sqlite:///{tmp / 'prerender.db'}"
    seed(db_url, len(TOPIC_SETS))
    outbox = tmp / "outbox"
    config = _config(
        tmp / "prerender.toml", db_url, {"backend": "file", "outbox_dir": str(outbox)}, {}
    )
    check(run_measured(litwatch(config, "digest", "send"), env=clean_env()), "prerender")
    # On the wire every line ends in CRLF (RFC 5321 2.3.8); the .eml files use LF, and
    # smtplib sends bytes as they are.
    messages = [
        p.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        for p in sorted(outbox.glob("*.eml"))
    ]
    if len(messages) != len(TOPIC_SETS):
        raise SystemExit(f"expected {len(TOPIC_SETS)} pre-rendered messages, got {len(messages)}")
    return messages


# --------------------------------------------------------------------------- the runs


def bare_smtplib(port: int, messages: list[bytes], count: int, key_file: Path | None) -> int:
    """The baseline: ``count`` pre-rendered messages over one connection; returns how many.

    With ``key_file``, each message is DKIM-signed just before it is sent.
    """
    sign = None
    if key_file is not None:
        from digests.dkim_sign import DkimSigner

        sign = DkimSigner(DKIM_DOMAIN, DKIM_SELECTOR, key_file.read_bytes()).sign
    sent = 0
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        for i in range(count):
            message = messages[i % len(messages)]
            client.sendmail(
                "digest@bench.example.org",
                [f"reader{i}@bench.example.org"],
                sign(message) if sign is not None else message,
            )
            sent += 1
    return sent


def _sent(db_url: str) -> int:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            query = select(func.count()).select_from(Delivery).where(Delivery.state == "sent")
            return int(conn.scalar(query) or 0)
    finally:
        engine.dispose()


def one_run(
    port: int, messages: list[bytes], subscribers: int, label: str, key_file: Path | None = None
) -> dict[str, Any]:
    """``digest send`` and the bare loop, each checked against the sink's count."""
    with tempfile.TemporaryDirectory(prefix="lw-bench-") as tmp:
        db_url = f"sqlite:///{Path(tmp) / f'{label}.db'}"
        seed(db_url, subscribers)
        smtp = {"host": "127.0.0.1", "port": port, "starttls": False}
        config = _config(Path(tmp) / "litwatch.toml", db_url, {"backend": "smtp"}, smtp, key_file)
        before, before_bytes = sink_stats(port)
        project = check(run_measured(litwatch(config, "digest", "send"), env=clean_env()), "send")
        middle, middle_bytes = sink_stats(port)
        sent_rows = _sent(db_url)
    sent, bare = measure_self(lambda: bare_smtplib(port, messages, subscribers, key_file))
    after, after_bytes = sink_stats(port)
    if not (middle - before == sent_rows == subscribers == after - middle == sent):
        raise SystemExit(
            f"expected {subscribers} messages each: sink got {middle - before} then "
            f"{after - middle}, {sent_rows} deliveries recorded, bare loop sent {sent}"
        )
    return {
        "project": project,
        "bare": bare,
        "project_bytes": middle_bytes - before_bytes,
        "bare_bytes": after_bytes - middle_bytes,
    }


def size_report(subscribers: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians and the ratio for one N."""
    project: list[Measured] = [r["project"] for r in runs]
    bare: list[Measured] = [r["bare"] for r in runs]
    ratios = [b.wall / p.wall for b, p in zip(bare, project, strict=True)]
    cpu_ratios = [b.cpu / p.cpu for b, p in zip(bare, project, strict=True)]
    return {
        "subscribers": subscribers,
        "digest_send": summarise_runs(project),
        "digest_send_messages_per_s": summary([subscribers / m.wall for m in project]),
        "bare_smtplib": summarise_runs(bare),
        "bare_smtplib_messages_per_s": summary([subscribers / m.wall for m in bare]),
        "ratio": summary(ratios),
        "ratio_cpu": summary(cpu_ratios),
        "bytes_per_message": {
            "digest_send": round(runs[0]["project_bytes"] / subscribers),
            "bare_smtplib": round(runs[0]["bare_bytes"] / subscribers),
        },
        "runs": [
            {k: (v.figures() if isinstance(v, Measured) else v) for k, v in r.items()} for r in runs
        ],
        "targets": {f"ratio>={RATIO_TARGET}": verdict(statistics_median(ratios), RATIO_TARGET)},
    }


def statistics_median(values: list[float]) -> float:
    """The median (a name that reads well next to the targets)."""
    return float(summary(values)["median"])


def memory_growth(reports: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Peak RSS of the largest N over the smallest (flat: at most 1.2x)."""
    if len(reports) < 2:
        return None
    small, large = reports[0], reports[-1]
    growth = (
        large["digest_send"]["max_rss_mb"]["median"] / small["digest_send"]["max_rss_mb"]["median"]
    )
    return {
        "subscribers": [small["subscribers"], large["subscribers"]],
        "peak_rss_mb": [
            small["digest_send"]["max_rss_mb"]["median"],
            large["digest_send"]["max_rss_mb"]["median"],
        ],
        "growth": round(growth, 3),
        "limit": MEMORY_GROWTH_LIMIT,
        "target": verdict(growth, MEMORY_GROWTH_LIMIT, at_most=True),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with --serve-smtp, the counting SMTP server)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, nargs="+", default=[5_000], metavar="N")
    parser.add_argument("--runs", type=int, default=3, help="runs per N (medians are quoted)")
    parser.add_argument("--results-dir", type=Path, default=None, help="default bench/results")
    parser.add_argument("--dkim", action="store_true", help="DKIM-sign on both sides")
    parser.add_argument("--serve-smtp", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_smtp:
        serve_sink()
        return 0
    reports = []
    with tempfile.TemporaryDirectory(prefix="lw-bench-") as tmp, running_sink() as port:
        messages = prerendered(Path(tmp))
        key_file = dkim_key(Path(tmp)) if args.dkim else None
        for n in sorted(args.subscribers):
            runs = [one_run(port, messages, n, f"n{n}_r{i}", key_file) for i in range(args.runs)]
            reports.append(size_report(n, runs))
            r = reports[-1]
            print(
                f"N={n}: digest send wall {r['digest_send']['wall_s']['median']:.2f}s cpu "
                f"{r['digest_send']['cpu_s']['median']:.2f}s "
                f"({r['digest_send_messages_per_s']['median']:.0f} msg/s), peak RSS "
                f"{r['digest_send']['max_rss_mb']['median']:.0f} MB | bare smtplib wall "
                f"{r['bare_smtplib']['wall_s']['median']:.2f}s "
                f"({r['bare_smtplib_messages_per_s']['median']:.0f} msg/s) | ratio "
                f"{r['ratio']['median']:.3f} | {r['targets']}",
                flush=True,
            )
    growth = memory_growth(reports)
    if growth:
        print(f"memory: {growth}")
    path = write_results(
        "digest_fanout_dkim" if args.dkim else "digest_fanout",
        {"machine": machine(), "dkim": args.dkim, "sizes": reports, "memory_growth": growth},
        args.results_dir,
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
