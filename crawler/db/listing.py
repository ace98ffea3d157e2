"""``litwatch papers list``: the newest papers, read through :mod:`crawler.db.reader`."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from crawler.db.reader import Reader, in_list, when
from crawler.events import CURRENT, GRAVITY, status_of

#: Ids per IN list: well under SQLite's and PostgreSQL's limits on bound parameters.
_CHUNK = 500


@dataclass
class PaperLine:
    """One row of the listing."""

    id: int
    first_seen: datetime
    doi: str | None
    pmid: str | None
    title: str | None
    topics: list[str] = field(default_factory=list)
    status: str = "current"


def newest(
    reader: Reader,
    *,
    since: datetime | None = None,
    topic: str | None = None,
    source: str | None = None,
    status: str | None = None,
    limit: int = 50,
) -> list[PaperLine]:
    """The ``limit`` papers first seen last, first seen at or after ``since``, tagged
    ``topic``, seen at ``source`` (every filter optional), with their topics by name."""
    where: list[str] = []
    params: dict[str, Any] = {"limit": limit}
    if since is not None:
        where.append("p.first_seen >= :since")
        params["since"] = _stored(reader, since)
    if topic:
        where.append(
            "EXISTS (SELECT 1 FROM paper_topics t WHERE t.paper_id = p.id AND t.topic = :topic)"
        )
        params["topic"] = topic
    if source:
        where.append(
            "EXISTS (SELECT 1 FROM sightings s WHERE s.paper_id = p.id AND s.source_id = :source)"
        )
        params["source"] = source
    if status:
        where.append(_status_filter(status, params))
    # Only fixed fragments are joined; every value is a bound parameter.
    filters = " WHERE " + " AND ".join(where) if where else ""
    sql = f"SELECT p.id, p.first_seen, p.doi, p.pmid, p.title FROM papers p{filters}"  # noqa: S608
    sql += " ORDER BY p.first_seen DESC, p.id DESC LIMIT :limit"
    lines = [
        PaperLine(pid, when(seen) or datetime.min.replace(tzinfo=UTC), doi, pmid, title)
        for pid, seen, doi, pmid, title in reader.rows(sql, params)
    ]
    topics = _topics(reader, [line.id for line in lines])
    statuses = _statuses(reader, [line.id for line in lines])
    for line in lines:
        line.topics = topics.get(line.id, [])
        line.status = statuses.get(line.id, CURRENT)
    return lines


def _status_filter(status: str, params: dict[str, Any]) -> str:
    """Papers whose gravest standing event is ``status`` (``current``: none that counts)."""
    graver = list(GRAVITY[: GRAVITY.index(status)]) if status != CURRENT else []
    counted = [s for s in GRAVITY if s != CURRENT]
    standing = "SELECT 1 FROM paper_events e WHERE e.paper_id = p.id AND e.withdrawn_at IS NULL"
    if status == CURRENT:
        ids, more = in_list("st", counted)
        params.update(more)
        return f"NOT EXISTS ({standing} AND e.type IN {ids})"
    params["status"] = status
    clause = f"EXISTS ({standing} AND e.type = :status)"
    if graver:
        ids, more = in_list("gr", graver)
        params.update(more)
        clause += f" AND NOT EXISTS ({standing} AND e.type IN {ids})"
    return clause


def _statuses(reader: Reader, ids: list[int]) -> dict[int, str]:
    found: dict[int, list[str]] = defaultdict(list)
    for start in range(0, len(ids), _CHUNK):
        ids_sql, params = in_list("id", ids[start : start + _CHUNK])
        sql = (
            "SELECT paper_id, type FROM paper_events"  # noqa: S608 - bound parameters only
            f" WHERE withdrawn_at IS NULL AND paper_id IN {ids_sql}"
        )
        for pid, kind in reader.rows(sql, params):
            found[pid].append(kind)
    return {pid: status_of(kinds) for pid, kinds in found.items()}


def _topics(reader: Reader, ids: list[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = defaultdict(list)
    for start in range(0, len(ids), _CHUNK):
        ids_sql, params = in_list("id", ids[start : start + _CHUNK])
        sql = f"SELECT paper_id, topic FROM paper_topics WHERE paper_id IN {ids_sql} ORDER BY topic"  # noqa: S608
        for pid, name in reader.rows(sql, params):
            out[pid].append(name)
    return out


def _stored(reader: Reader, moment: datetime) -> Any:
    """``moment`` as the database stores UTC timestamps (SQLite: SQLAlchemy's text form)."""
    naive = moment.astimezone(UTC).replace(tzinfo=None)
    return naive.strftime("%Y-%m-%d %H:%M:%S.%f") if reader.dialect == "sqlite" else naive
