"""Shared benchmark plumbing: measured child processes, medians, machine facts, JSON results.

Every benchmark runs litwatch as it is run in production (``python -m crawler.cli ...`` in a
child process) and measures that child with :func:`run_measured`: wall time, CPU time (user +
sys of the child and every process it waited for) and peak resident memory. The baselines run
in the benchmark's own process and are measured with :func:`measure_self`. Local servers run
as threads of the benchmark process, so their CPU is never charged to either side.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from tests.support.config import write_toml

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"
#: Where the CI (and the developers) keep a PostgreSQL server for tests and benchmarks.
PG_ENV = "LITWATCH_TEST_DATABASE_URL"
T = TypeVar("T")


@dataclass
class Measured:
    """One measured run: seconds of wall and CPU time, peak RSS in MB, and the outcome."""

    wall: float
    user: float
    sys: float
    max_rss_mb: float
    returncode: int = 0
    stdout: str = ""
    stderr: str = ""

    @property
    def cpu(self) -> float:
        """User + system CPU seconds."""
        return self.user + self.sys

    def figures(self) -> dict[str, float]:
        """The numbers only (no output), rounded for the JSON file."""
        return {
            "wall_s": round(self.wall, 3),
            "cpu_s": round(self.cpu, 3),
            "user_s": round(self.user, 3),
            "sys_s": round(self.sys, 3),
            "max_rss_mb": round(self.max_rss_mb, 1),
        }


def _rss_mb(ru_maxrss: int) -> float:
    # Linux reports ru_maxrss in KiB, macOS in bytes.
    return ru_maxrss / (1024 * 1024) if sys.platform == "darwin" else ru_maxrss / 1024


# Runs one command and reports its resource usage as JSON into the file named first. A fresh
# interpreter, so that its child starts from a small process (see run_measured).
_LAUNCHER = """
import json, os, resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.call(sys.argv[2:])
wall = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as fh:
    json.dump({"wall": wall, "user": usage.ru_utime, "sys": usage.ru_stime,
               "maxrss": usage.ru_maxrss, "code": code}, fh)
"""


def run_measured(
    command: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 3600
) -> Measured:
    """Run ``command`` from the repository root; measure it and everything it spawned.

    The command runs under a small launcher process that reads
    ``getrusage(RUSAGE_CHILDREN)`` once its only child has ended: CPU and peak RSS of that
    child and its own children. Not measured from here directly, because Linux charges the
    memory peak of the process that forked (this one, holding tens of thousands of
    articles) to a child's ``ru_maxrss`` at ``exec``; the launcher is small when it forks.
    """
    with tempfile.TemporaryDirectory(prefix="lw-measure-") as tmp:
        report = Path(tmp) / "usage.json"
        out_path, err_path = Path(tmp) / "stdout", Path(tmp) / "stderr"
        launcher = [sys.executable, "-c", _LAUNCHER, str(report), *command]
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            subprocess.run(
                launcher,
                cwd=REPO_ROOT,
                env=env,
                stdout=out,
                stderr=err,
                timeout=timeout,
                check=True,
            )
        usage = json.loads(report.read_text(encoding="utf-8"))
        return Measured(
            wall=usage["wall"],
            user=usage["user"],
            sys=usage["sys"],
            max_rss_mb=_rss_mb(usage["maxrss"]),
            returncode=usage["code"],
            stdout=out_path.read_text(encoding="utf-8", errors="replace"),
            stderr=err_path.read_text(encoding="utf-8", errors="replace"),
        )


def measure_self(work: Callable[[], T]) -> tuple[T, Measured]:
    """Run ``work()`` in this process; its wall and CPU time (this process's peak RSS).

    Only meaningful while nothing else in this process is busy (the local servers are idle
    between a crawl and its baseline).
    """
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    value = work()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    return value, Measured(
        wall=wall,
        user=after.ru_utime - before.ru_utime,
        sys=after.ru_stime - before.ru_stime,
        max_rss_mb=_rss_mb(after.ru_maxrss),
    )


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Median, min and max of several runs (the median is the figure to quote)."""
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "runs": [round(v, 3) for v in values],
    }


def summarise_runs(runs: Sequence[Measured]) -> dict[str, Any]:
    """Per-figure summaries (wall, CPU, peak RSS) over several measured runs."""
    return {
        "wall_s": summary([r.wall for r in runs]),
        "cpu_s": summary([r.cpu for r in runs]),
        "max_rss_mb": summary([r.max_rss_mb for r in runs]),
    }


def check(result: Measured, what: str) -> Measured:
    """Stop the benchmark when a litwatch command failed: its figures would mean nothing."""
    if result.returncode != 0:
        raise SystemExit(
            f"{what} exited with status {result.returncode}\n"
            f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for litwatch commands: none of the caller's litwatch settings or keys."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("LITWATCH_") and k != "NCBI_API_KEY"
    }
    return {**env, **(extra or {})}


def litwatch(config: Path, *args: str) -> list[str]:
    """The command line of ``litwatch --config CONFIG ARGS`` with this interpreter."""
    return [sys.executable, "-m", "crawler.cli", "--config", str(config), *args]


def write_config(
    path: Path, tables: dict[str, dict[str, Any]], sources: Sequence[dict[str, Any]] = ()
) -> Path:
    """Write a litwatch TOML config: ``tables`` ({"database": {...}, ...}) then ``sources``."""
    return write_toml(path, tables, sources)


@contextmanager
def scratch_database(kind: str, workdir: Path, label: str) -> Iterator[str]:
    """An empty database URL: a new SQLite file, or a new PostgreSQL database dropped after.

    PostgreSQL needs ``LITWATCH_TEST_DATABASE_URL`` (any database on a server where that user
    may CREATE DATABASE); the benchmark makes its own database beside it rather than emptying
    the one named, which may hold someone's data.
    """
    if kind == "sqlite":
        yield f"sqlite:///{workdir / f'{label}.db'}"
        return
    base = os.environ.get(PG_ENV)
    if not base:
        raise SystemExit(f"--database postgresql needs {PG_ENV} (a PostgreSQL URL)")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(base).set(drivername="postgresql+psycopg")
    name = f"lw_bench_{os.getpid()}_{label}".lower().replace("-", "_")
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _memory_total() -> str:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            kib = int(fh.readline().split()[1])
    except (OSError, ValueError, IndexError):
        return "unknown"
    return f"{kib / 1024 / 1024:.1f} GiB"


def _postgres_version(url: str | None) -> str | None:
    if not url:
        return None
    from sqlalchemy import text

    from crawler.db.engine import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return str(conn.scalar(text("SHOW server_version")))
    except Exception as exc:  # a benchmark on SQLite must not fail over an absent server
        return f"unreachable ({type(exc).__name__})"
    finally:
        engine.dispose()


def machine(database_url: str | None = None) -> dict[str, Any]:
    """The facts that make two result files comparable (or not)."""
    import lxml.etree
    import scrapy
    import sqlalchemy

    return {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory": _memory_total(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "lxml": ".".join(map(str, lxml.etree.LXML_VERSION)),
        "libxml2": ".".join(map(str, lxml.etree.LIBXML_VERSION)),
        "sqlite": sqlite3.sqlite_version,
        "sqlalchemy": sqlalchemy.__version__,
        "scrapy": scrapy.__version__,
        "postgresql": _postgres_version(database_url),
    }


def write_results(name: str, payload: dict[str, Any], directory: Path | None = None) -> Path:
    """Write ``payload`` (plus date and machine) as ``<directory>/<name>.json``; return the path."""
    directory = directory or RESULTS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    document = {"benchmark": name, "date": datetime.now(UTC).isoformat(timespec="seconds")}
    document |= payload
    path.write_text(json.dumps(document, indent=2, default=_json_default) + "\n", encoding="utf-8")
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, Measured):
        return value.figures()
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(type(value).__name__)


def verdict(value: float, limit: float, *, at_most: bool = False) -> str:
    """ "met" or "MISSED" for a target (``value >= limit``, or ``<=`` with ``at_most``)."""
    ok = value <= limit if at_most else value >= limit
    return "met" if ok else "MISSED"
