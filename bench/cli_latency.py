"""CLI latency: litwatch commands as whole processes against ``python -c "import click, rich"``.

Each command runs as in production (``python -m crawler.cli ...``, a fresh interpreter) and
is measured by :func:`bench.common.run_measured`: ``--help``, a command's ``--help``, and
``status`` and ``papers list`` (its default limit) on a SQLite database of ``--papers``
papers. The baseline is the same interpreter importing only the CLI's two toolkits, in the
same run; the rounds interleave the commands so that the machine's drift touches all alike.
The figure of merit is the ratio of median CPU seconds (user + sys) to the baseline's. Each
command also runs once under ``-X importtime``: which heavy packages it imported, and its
ten costliest imports (cumulative), i.e. what would have to become lazy.

The database is made once per benchmark run: the schema by the project's own migrations,
then papers, their topics and a sighting each inserted in bulk (sqlite3 executemany).

Example::

    python -m bench.cli_latency --runs 7 --papers 100000
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import (
    REPO_ROOT,
    Measured,
    check,
    clean_env,
    litwatch,
    machine,
    run_measured,
    summarise_runs,
    verdict,
    write_config,
    write_results,
)
from crawler.db.engine import make_engine
from crawler.db.migrate import upgrade
from crawler.db.models import Base
from crawler.settings import load_settings

#: Targets: ``--help`` (the root's and a command's) and the database commands, CPU vs baseline.
TARGETS = {"help": 3.0, "papers_help": 3.0, "status": 6.0, "papers_list": 6.0}
#: Packages a command that does not need them should not import.
HEAVY = ("scrapy", "twisted", "sqlalchemy", "pydantic", "starlette", "uvicorn")
CHUNK = 10_000
ABSTRACT = (
    "Background: chronic widespread pain with fatigue and sleep disturbance is common. "
    "Methods: we studied a cohort with questionnaires, serology and skin biopsies. "
) * 6
LISTS = [json.dumps(v) for v in (["Journal Article"], ["Fibromyalgia"], ["small fiber"])]


def build_database(path: Path, papers: int) -> str:
    """A SQLite database at ``path`` with the real schema and ``papers`` papers; its URL.

    The schema comes from the project's migrations; the rows are inserted with sqlite3's
    executemany, in the formats SQLAlchemy writes (its Core insert converts each value in
    Python: twice the time).
    """
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    sources = [s.id for s in load_settings(None, environ={}).sources] or ["bench"]
    topics = ("fibromyalgia", "autoimmunity")
    newest = datetime.now(UTC).replace(microsecond=0, tzinfo=None)
    statements = {name: _insert_sql(name) for name in ("papers", "paper_topics", "sightings")}
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA synchronous=OFF")
        with conn:
            for start in range(1, papers + 1, CHUNK):
                rows, tags, seen = [], [], []
                for i in range(start, min(start + CHUNK, papers + 1)):
                    first_seen = (newest - timedelta(minutes=5 * i)).isoformat(" ") + ".000000"
                    rows.append(_paper(i, first_seen))
                    tags.append({"paper_id": i, "topic": topics[i % 2]})
                    if i % 3 == 0:
                        tags.append({"paper_id": i, "topic": topics[(i + 1) % 2]})
                    seen.append(
                        {
                            "id": i,
                            "paper_id": i,
                            "source_id": sources[i % len(sources)],
                            "kind": "article",
                            "url": f"https://pubmed.ncbi.nlm.nih.gov/{50_000_000 + i}/",
                            "title": rows[-1]["title"],
                            "seen_at": first_seen,
                        }
                    )
                conn.executemany(statements["papers"], rows)
                conn.executemany(statements["paper_topics"], tags)
                conn.executemany(statements["sightings"], seen)
    finally:
        conn.close()
    return url


def _insert_sql(table: str) -> str:
    """INSERT of every column of ``table`` (as the models, i.e. the migrations, define it)."""
    columns = [c.name for c in Base.metadata.tables[table].columns]
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES (:{', :'.join(columns)})"


def _paper(i: int, first_seen: str) -> dict[str, Any]:
    title = f"Small fiber pathology and autoantibodies in fibromyalgia: cohort study {i}"
    return {
        "id": i,
        "doi": f"10.5555/lwcli.{i}",
        "doi_key": f"10.5555/lwcli.{i}",
        "pmid": str(50_000_000 + i),
        "pmcid": f"PMC{i}" if i % 4 == 0 else None,
        "title": title,
        "title_key": f"small fiber pathology autoantibodies fibromyalgia cohort {i}",
        "abstract": ABSTRACT,
        "journal": "Journal of Benchmark Studies",
        "published": f"{2020 + i % 6}-{1 + i % 12:02d}-{1 + i % 28:02d}",
        "year": 2020 + i % 6,
        "authors": json.dumps([f"Author {i} A", f"Author {i} B", "Writer C"]),
        "publication_types": LISTS[0],
        "mesh": LISTS[1],
        "keywords": LISTS[2],
        "rank": 3,
        "first_seen": first_seen,
        "updated": first_seen,
    }


def commands(config: Path) -> dict[str, list[str]]:
    """Every measured command line, baseline first."""
    cli = [sys.executable, "-m", "crawler.cli"]
    return {
        "baseline": [sys.executable, "-c", "import click, rich"],
        "help": [*cli, "--help"],
        "papers_help": [*cli, "papers", "--help"],
        "status": litwatch(config, "status"),
        "papers_list": litwatch(config, "papers", "list"),
    }


def import_profile(command: list[str]) -> dict[str, Any]:
    """One run under ``-X importtime``: the heavy packages imported (and through which
    modules: the first import chain that reached each), and the top 10 cumulative costs."""
    done = subprocess.run(
        [command[0], "-X", "importtime", *command[1:]],
        cwd=REPO_ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    entries = []  # (cumulative s, self s, depth, module), children before their importer
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)$", line)
        if match:
            entries.append((int(match[2]) / 1e6, int(match[1]) / 1e6, len(match[3]) // 2, match[4]))
    heavy = {}
    for package in HEAVY:
        first = next((i for i, e in enumerate(entries) if e[3].split(".")[0] == package), None)
        if first is not None:
            chain, depth = [entries[first][3]], entries[first][2]
            for _cum, _self, d, name in entries[first + 1 :]:
                if d < depth:
                    chain, depth = [name, *chain], d
            roots = [n.split(".")[0] for n in chain]
            heavy[package] = " > ".join(chain[: roots.index(package) + 1])
    return {
        "returncode": done.returncode,
        "modules": len(entries),
        "import_s": round(sum(e[1] for e in entries), 3),
        "heavy_imported": list(heavy),
        "heavy_via": heavy,
        "top10_cumulative": [
            {"module": n, "cumulative_s": round(c, 3), "self_s": round(s, 3), "depth": d}
            for c, s, d, n in sorted(entries, reverse=True)[:10]
        ],
    }


def sanity(name: str, result: Measured, papers: int) -> dict[str, Any]:
    """What the command printed shows it did the work (the papers were there)."""
    out = result.stdout
    if name == "status" and f": {papers} papers" not in out:
        raise SystemExit(f"status does not report {papers} papers:\n{out[-2000:]}")
    if name == "papers_list":
        match = re.search(r"^(\d+) papers", out, re.MULTILINE)
        if not match or int(match[1]) == 0:
            raise SystemExit(f"papers list listed nothing:\n{out[-2000:]}")
        return {"rows_listed": int(match[1])}
    if name.endswith("help") and "Usage:" not in out:
        raise SystemExit(f"{name} printed no usage:\n{out[-2000:]}")
    return {}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table; write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="measured runs (after a warm-up)")
    parser.add_argument("--papers", type=int, default=100_000, help="papers in the database")
    parser.add_argument("--json", type=Path, default=None, help="default bench/results/")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.papers < 1:
        parser.error("--runs and --papers must be at least 1")
    with tempfile.TemporaryDirectory(prefix="lw-bench-cli-") as tmp:
        db_url = build_database(Path(tmp) / "papers.db", args.papers)
        config = write_config(Path(tmp) / "litwatch.toml", {"database": {"url": db_url}})
        cmds = commands(config)
        runs: dict[str, list[Measured]] = {name: [] for name in cmds}
        extra: dict[str, dict[str, Any]] = {}
        for round_ in range(args.runs + 1):  # round 0 is the warm-up
            for name, command in cmds.items():
                result = check(run_measured(command, env=clean_env()), name)
                extra[name] = sanity(name, result, args.papers)
                if round_:
                    runs[name].append(result)
        profiles = {name: import_profile(cmd) for name, cmd in cmds.items() if name != "baseline"}
    figures = {name: summarise_runs(r) | extra[name] for name, r in runs.items()}
    base = figures["baseline"]["cpu_s"]["median"]
    targets = {}
    print(f"{'command':<13} {'cpu s':>7} {'ratio':>7} {'wall s':>7} {'rss MB':>7}  target")
    for name, fig in figures.items():
        ratio = fig["cpu_s"]["median"] / base if base else float("inf")
        fig["ratio_cpu"] = round(ratio, 2)
        line = f"{name:<13} {fig['cpu_s']['median']:>7.3f} {ratio:>6.1f}x "
        line += f"{fig['wall_s']['median']:>7.3f} {fig['max_rss_mb']['median']:>7.0f}"
        if name in TARGETS:
            key = f"{name}<={TARGETS[name]:g}x"
            targets[key] = verdict(ratio, TARGETS[name], at_most=True)
            line += f"  <= {TARGETS[name]:g}x {targets[key]}"
        print(line)
    for name, prof in profiles.items():
        heavy = ", ".join(prof["heavy_imported"]) or "none"
        print(f"\n{name}: {prof['modules']} modules, {prof['import_s']:.2f}s; heavy: {heavy}")
        if name in ("help", "status"):
            for package, via in prof["heavy_via"].items():
                print(f"  {package:<10} via {via}")
            for entry in prof["top10_cumulative"]:
                indent = "  " * entry["depth"]
                print(f"  {entry['cumulative_s']:>6.3f}s  {indent}{entry['module']}")
    payload = {
        "machine": machine(),
        "papers": args.papers,
        "runs": args.runs,
        "commands": {n: " ".join(c[1:]).replace(str(config), "CONFIG") for n, c in cmds.items()},
        "figures": figures,
        "targets": targets,
        "imports": profiles,
    }
    name, directory = (args.json.stem, args.json.parent) if args.json else ("cli_latency", None)
    path = write_results(name, payload, directory)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
