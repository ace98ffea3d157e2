"""``litwatch status``'s deliverability figures on SQLite and PostgreSQL: digests sent, bounces
and complaints received in the last 30 days, their rates, the warning and ``--check``.

Rows are written with plain SQL, as sending and bounce processing leave them.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, text

from tests.test_cli_foundation import clean_env, run, url_of, write_config  # noqa: F401

NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=45)  # outside the 30-day window


def _sent(engine: Engine, n: int, when: datetime, first: int = 0) -> None:
    """``n`` subscribers with one digest each, sent at ``when``."""
    with engine.begin() as conn:
        for i in range(first, first + n):
            email = f"reader{i}@example.org"
            sub = conn.execute(
                text(
                    "INSERT INTO subscribers (email, email_key, topics, format, timezone, token, "
                    "status, created_at, updates) VALUES (:e, :e, '[]', 'html', 'UTC', :e, "
                    "'active', :now, true) RETURNING id"
                ),
                {"e": email, "now": when},
            ).scalar_one()
            conn.execute(
                text(
                    "INSERT INTO deliveries (subscriber_id, period, cutoff, state, attempts, "
                    "message_id, paper_count, created_at, sent_at) VALUES (:s, :p, :now, 'sent', "
                    "1, :m, 1, :now, :now)"
                ),
                {"s": sub, "p": date(2026, 1, 5) + timedelta(days=i), "now": when,
                 "m": f"<{email}>"},
            )  # fmt: skip


def _returned(engine: Engine, kind: str, n: int, when: datetime, tag: str = "") -> None:
    with engine.begin() as conn:
        for i in range(n):
            conn.execute(
                text(
                    "INSERT INTO bounces (message_key, recipient, kind, action, source, "
                    "received_at) VALUES (:k, :r, :kind, 'counted', 'maildir', :at)"
                ),
                {"k": f"mid:<{kind}{tag}{i}@mx>", "r": f"r{i}@example.org", "kind": kind,
                 "at": when},
            )  # fmt: skip


def _config(engine: Engine, tmp_path: Path, extra: str = "") -> Path:
    return write_config(tmp_path, url_of(engine), extra)


def test_no_mail_sent_shows_zero_rates_and_no_warning(engine: Engine, tmp_path: Path) -> None:
    config = _config(engine, tmp_path)
    result = run(config, "status")
    assert result.exit_code == 0, result.output
    assert "Deliverability (last 30 days): 0 sent, 0 bounces (-), 0 complaints (-)" in (
        result.stdout
    )
    d = json.loads(run(config, "status", "--json").stdout)["deliverability"]
    assert (d["sent"], d["bounces"], d["complaints"], d["warnings"]) == (0, 0, 0, [])
    assert d["bounce_percent"] is None and d["max_bounce_percent"] == 2.0
    assert run(config, "status", "--check").exit_code == 0


def test_rates_count_the_last_30_days_only(engine: Engine, tmp_path: Path) -> None:
    _sent(engine, 200, NOW - timedelta(days=2))
    _sent(engine, 300, OLD, first=200)  # sent long ago: not counted
    _returned(engine, "hard", 2, NOW - timedelta(days=1))
    _returned(engine, "soft", 1, NOW - timedelta(days=29))
    _returned(engine, "hard", 9, OLD, tag="old")  # long ago: not counted
    _returned(engine, "auto_reply", 5, NOW)  # never a bounce
    _returned(engine, "not_bounce", 5, NOW)
    config = _config(engine, tmp_path)
    result = run(config, "status")
    assert result.exit_code == 0, result.output
    [line] = [ln for ln in result.stdout.splitlines() if ln.startswith("Deliverability")]
    assert line == "Deliverability (last 30 days): 200 sent, 3 bounces (1.5%), 0 complaints (0.00%)"
    assert "Warning" not in result.stdout
    d = json.loads(run(config, "status", "--json").stdout)["deliverability"]
    assert d | {"since": None} == {
        "days": 30, "since": None, "sent": 200, "bounces": 3, "hard_bounces": 2,
        "soft_bounces": 1, "complaints": 0, "bounce_percent": 1.5, "complaint_percent": 0.0,
        "max_bounce_percent": 2.0, "max_complaint_percent": 0.1, "warnings": [],
    }  # fmt: skip
    assert run(config, "status", "--check").exit_code == 0


def test_rates_above_the_thresholds_warn_and_fail_the_check(engine: Engine, tmp_path: Path) -> None:
    _sent(engine, 400, NOW - timedelta(days=3))
    _returned(engine, "hard", 10, NOW - timedelta(days=1))  # 2.5%
    _returned(engine, "complaint", 1, NOW - timedelta(hours=1))  # 0.25%
    config = _config(engine, tmp_path)
    result = run(config, "status")
    assert result.exit_code == 0, result.output
    text_out = " ".join(result.stdout.split())  # rich may wrap long lines
    assert "400 sent, 10 bounces (2.5%), 1 complaints (0.25%)" in text_out
    assert "Warning: deliverability: bounce rate 2.50% over the last 30 days is above 2%" in (
        text_out
    )
    assert "complaint rate 0.25% over the last 30 days is above 0.1%" in text_out
    check = run(config, "status", "--check")
    assert check.exit_code == 1
    assert check.stdout.splitlines() == [
        "deliverability: bounce rate 2.50% over the last 30 days is above 2% "
        "(10 of 400 digests sent)",
        "deliverability: complaint rate 0.25% over the last 30 days is above 0.1% "
        "(1 of 400 digests sent)",
    ]
    data = json.loads(run(config, "status", "--json").stdout)
    assert len(data["deliverability"]["warnings"]) == 2


def test_thresholds_are_configurable(engine: Engine, tmp_path: Path) -> None:
    _sent(engine, 100, NOW - timedelta(days=3))
    _returned(engine, "hard", 3, NOW - timedelta(days=1))  # 3%
    _returned(engine, "complaint", 1, NOW - timedelta(days=1))  # 1%
    config = _config(engine, tmp_path, "\n[status]\nmax_bounce_percent = 5\n"
                     "max_complaint_percent = 1.0\n")  # fmt: skip
    check = run(config, "status", "--check")
    assert check.exit_code == 0, check.output
    assert check.stdout.startswith("OK: ")
    strict = _config(engine, tmp_path, "\n[status]\nmax_complaint_percent = 0.5\n")
    lines = run(strict, "status", "--check").stdout.splitlines()
    assert [ln.split(" rate")[0] for ln in lines] == [
        "deliverability: bounce", "deliverability: complaint"
    ]  # fmt: skip
