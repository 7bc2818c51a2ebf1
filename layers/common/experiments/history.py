"""An experiment's history: every run of each (variant, metric), oldest first, and the directions its runs declared.

`read_history` is the one place that knows where runs are read from (today the `experiments` table; a read model
can take its place without its callers noticing). Change-point detection (`scripts/regressions.py`) reads through
it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg

# One row per run of each series (a report writes one row per metric, all with the report's "createdAt" and
# metadata). Oldest first; the id orders rows of equal time the same way on every read.
HISTORY = """
SELECT variant, metric, "createdAt", value, metadata->'directions'
FROM experiments
WHERE name = %(name)s
  AND (%(variant)s::text IS NULL OR variant = %(variant)s)
  AND (%(metric)s::text IS NULL OR metric = %(metric)s)
ORDER BY variant, metric, "createdAt", id
"""


@dataclass
class Series:
    """One variant's values of one metric, a value per run, oldest first."""

    variant: str
    metric: str
    times: list[datetime] = field(default_factory=list)  # each run's "createdAt" (UTC, naive like the column)
    values: list[float] = field(default_factory=list)


@dataclass
class History:
    name: str
    series: list[Series]
    # The globs of the latest run that said which way its metrics should go (the reporter's
    # --higher-is-better / --lower-is-better, kept in metadata.directions): {"higher": [...], "lower": [...]}.
    directions: dict[str, list[str]]


def read_history(
    connection: psycopg.Connection, name: str, *, variant: str | None = None, metric: str | None = None
) -> History:
    """Every series of experiment `name` (optionally one variant and/or one metric), sorted by variant and metric."""
    series: dict[tuple[str, str], Series] = {}
    directions: dict[str, list[str]] = {}
    latest_with_directions: datetime | None = None
    params = {"name": name, "variant": variant, "metric": metric}
    for row_variant, row_metric, created_at, value, globs in connection.execute(HISTORY, params):
        one = series.setdefault((row_variant, row_metric), Series(row_variant, row_metric))
        one.times.append(created_at)
        one.values.append(float(Decimal(value)))
        if isinstance(globs, dict) and (latest_with_directions is None or created_at >= latest_with_directions):
            latest_with_directions, directions = created_at, _globs(globs)
    return History(name=name, series=list(series.values()), directions=directions)


def _globs(raw: dict[str, Any]) -> dict[str, list[str]]:
    return {way: [str(glob) for glob in raw.get(way) or ()] for way in ("higher", "lower")}
