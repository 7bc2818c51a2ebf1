"""An experiment's history: every run of each (variant, metric), oldest first, and the directions its runs declared.

`read_history` is the one place that knows where runs are read from: the read model in schema `ingest`
(db/migrations/0003_runs_read_model.sql), kept by triggers on `experiments`. Each series is one range of the
`ingest.run_values` index, so the history costs what it returns; the directions are the comparison's
(`experiments.query.latest_directions`). Change-point detection (`scripts/regressions.py`) reads through it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import psycopg

from experiments.query import latest_directions

# One row per run of each series (a report writes one row per metric, all with the report's "createdAt").
# Oldest first, in the order of the read model's index (name, metric, variant, created_at, id), read backwards;
# the id orders rows of equal time the same way on every read.
HISTORY = """
SELECT variant, metric, created_at, value
FROM ingest.run_values
WHERE name = %(name)s
  AND (%(variant)s::text IS NULL OR variant = %(variant)s)
  AND (%(metric)s::text IS NULL OR metric = %(metric)s)
ORDER BY metric, variant, created_at, id
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
    """Every series of experiment `name` (optionally one variant and/or one metric), sorted by metric and variant."""
    series: dict[tuple[str, str], Series] = {}
    params = {"name": name, "variant": variant, "metric": metric}
    for row_variant, row_metric, created_at, value in connection.execute(HISTORY, params):
        one = series.setdefault((row_variant, row_metric), Series(row_variant, row_metric))
        one.times.append(created_at)
        one.values.append(float(Decimal(value)))
    higher, lower = latest_directions(connection, name) if series else ((), ())
    directions = {"higher": list(higher), "lower": list(lower)}
    return History(name=name, series=list(series.values()), directions=directions)
