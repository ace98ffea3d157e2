"""``litwatch papers list``: the newest papers, read through :mod:`crawler.db.reader`."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from crawler.db.reader import Reader, in_list, when

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


def newest(
    reader: Reader,
    *,
    since: datetime | None = None,
    topic: str | None = None,
    source: str | None = None,
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
    # Only fixed fragments are joined; every value is a bound parameter.
    filters = " WHERE " + " AND ".join(where) if where else ""
    sql = f"SELECT p.id, p.first_seen, p.doi, p.pmid, p.title FROM papers p{filters}"  # noqa: S608
    sql += " ORDER BY p.first_seen DESC, p.id DESC LIMIT :limit"
    lines = [
        PaperLine(pid, when(seen) or datetime.min.replace(tzinfo=UTC), doi, pmid, title)
        for pid, seen, doi, pmid, title in reader.rows(sql, params)
    ]
    topics = _topics(reader, [line.id for line in lines])
    for line in lines:
        line.topics = topics.get(line.id, [])
    return lines


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
