"""Smoke test of bench/cli_latency.py: one run at a tiny size writes figures for every command.

Never a timed assertion (see tests/test_bench_smoke.py): only that each command was measured,
did its work on the seeded database, and was profiled under ``-X importtime``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.cli_latency import HEAVY, TARGETS, main

pytestmark = pytest.mark.slow
COMMANDS = {"baseline", "help", "papers_help", "status", "papers_list"}


def test_cli_latency_benchmark(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.json"
    assert main(["--runs", "1", "--papers", "200", "--json", str(out)]) == 0
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["benchmark"] == "cli" and data["papers"] == 200 and data["runs"] == 1
    figures = data["figures"]
    assert set(figures) == COMMANDS
    for name, fig in figures.items():
        assert len(fig["cpu_s"]["runs"]) == len(fig["wall_s"]["runs"]) == 1, name
        assert fig["cpu_s"]["median"] > 0 and fig["wall_s"]["median"] > 0, name
        assert fig["ratio_cpu"] > 0, name
    assert figures["baseline"]["ratio_cpu"] == pytest.approx(1.0, abs=0.01)
    assert 0 < figures["papers_list"]["rows_listed"] <= 200
    assert set(data["targets"]) == {f"{k}<={v:g}x" for k, v in TARGETS.items()}
    assert set(data["targets"].values()) <= {"met", "MISSED"}
    assert set(data["imports"]) == COMMANDS - {"baseline"}
    for name, profile in data["imports"].items():
        assert profile["returncode"] == 0, name
        assert set(profile["heavy_imported"]) <= set(HEAVY)
        assert 0 < len(profile["top10_cumulative"]) <= 10
    # status loads the validated settings (the detection must see pydantic) and reads the
    # database through the driver, without SQLAlchemy (crawler/db/reader.py).
    assert "pydantic" in data["imports"]["status"]["heavy_imported"]
    assert "sqlalchemy" not in data["imports"]["status"]["heavy_imported"]
    printed = capsys.readouterr().out
    assert all(name in printed for name in COMMANDS)
