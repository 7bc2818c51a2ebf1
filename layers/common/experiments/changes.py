"""Change points in an experiment's history: what they mean, how they are stored, and how they are served.

The detection itself is Apache Otava's (`scripts/regressions.py`, run in `.venv-otava`, never in Lambda). This
module holds only what the API needs too: the verdict of a change (by the metric's direction, the same rule as
the variant comparison), the rows of `ingest.change_points`, replaced per analysed scope in one transaction, and
the read of `GET /experiments/changes`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg

from experiments.k6summary import direction
from experiments.models import ChangePointOut, ChangesReport
from experiments.query import NotFound
from experiments.stats import judge, percent_change

# The scope one analysis replaces: the experiment, or one variant and/or metric of it.
DELETE_SCOPE = """
DELETE FROM ingest.change_points
WHERE name = %(name)s
  AND (%(variant)s::text IS NULL OR variant = %(variant)s)
  AND (%(metric)s::text IS NULL OR metric = %(metric)s)
"""
INSERT = """
INSERT INTO ingest.change_points
    (name, variant, metric, run_index, created_at, runs, mean_before, mean_after, change_pct, p_value, verdict)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""
# The columns in the order of Change's fields.
STORED = """
SELECT variant, metric, run_index, created_at, runs, mean_before, mean_after, change_pct, p_value, verdict
FROM ingest.change_points
WHERE name = %(name)s
ORDER BY created_at, variant, metric
"""
EXPERIMENT_EXISTS = "SELECT EXISTS (SELECT 1 FROM ingest.metric_counts WHERE name = %(name)s)"  # the read model


@dataclass(frozen=True)
class Change:
    """One change point of one (variant, metric) series: the level moved from `before` to `after` at a run."""

    variant: str
    metric: str
    run_index: int  # 0-based position in the series of the first run at the new level
    created_at: datetime  # that run's "createdAt"
    runs: int  # length of the series analysed
    before: float  # mean of the runs since the previous change point
    after: float  # mean of the runs up to the next one
    change_pct: float | None  # None when `before` is 0
    p_value: float
    verdict: str  # better, worse or changed (no direction known)

    def within_last(self, recent: int) -> bool:
        """Whether the first run at the new level is one of the series' last `recent` runs."""
        return self.run_index >= self.runs - recent

    def out(self) -> ChangePointOut:
        """The change as GET /experiments/changes serves it."""
        return ChangePointOut(
            variant=self.variant,
            metric=self.metric,
            createdAt=self.created_at.isoformat(timespec="milliseconds") + "Z",
            runIndex=self.run_index,
            before=self.before,
            after=self.after,
            changePct=self.change_pct,
            pValue=self.p_value,
            verdict=self.verdict,
        )


def make_change(
    variant: str,
    metric: str,
    *,
    run_index: int,
    times: Sequence[datetime],
    before: float,
    after: float,
    p_value: float,
    directions: dict[str, list[str]],
) -> Change:
    """A change point with its percent change and verdict (the metric's direction, as the comparison decides it)."""
    change = percent_change(before, after)
    way = direction(metric, directions.get("higher", ()), directions.get("lower", ()))
    return Change(
        variant=variant,
        metric=metric,
        run_index=run_index,
        created_at=times[run_index],
        runs=len(times),
        before=before,
        after=after,
        change_pct=round(change, 2) if math.isfinite(change) else None,
        p_value=p_value,
        verdict=judge(way, change),
    )


def worse_within(changes: Iterable[Change], recent: int) -> list[Change]:
    """The changes that made a metric worse and start within the last `recent` runs of their series."""
    return [change for change in changes if change.verdict == "worse" and change.within_last(recent)]


def replace_changes(
    connection: psycopg.Connection,
    name: str,
    changes: Sequence[Change],
    *,
    variant: str | None = None,
    metric: str | None = None,
) -> None:
    """Store `changes` as experiment `name`'s change points within the analysed scope, in one transaction."""
    with connection.transaction():
        connection.execute(DELETE_SCOPE, {"name": name, "variant": variant, "metric": metric})
        with connection.cursor() as cur:
            cur.executemany(
                INSERT,
                [
                    (name, c.variant, c.metric, c.run_index, c.created_at, c.runs, c.before, c.after,
                     c.change_pct, c.p_value, c.verdict)
                    for c in changes
                ],
            )  # fmt: skip


def stored_changes(connection: psycopg.Connection, name: str) -> ChangesReport:
    """The change points last stored for experiment `name`, oldest first; NotFound when no such experiment."""
    rows = connection.execute(STORED, {"name": name}).fetchall()
    if not rows and not connection.execute(EXPERIMENT_EXISTS, {"name": name}).fetchone()[0]:
        raise NotFound(f"no experiment named {name!r}")
    return ChangesReport(name=name, changes=[Change(*row).out() for row in rows])
