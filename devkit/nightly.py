"""Generated nightly histories with a planted step, stored through the API's own store path.

For the change-point demo (`scripts/regressions.py --demo`) and its tests: one report a night, each metric
noisy around its level, with a step of `step_pct` percent from night `step_at` on (0-based).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import datetime, timedelta

import psycopg

from experiments.models import ExperimentReport
from experiments.store import save_report

FIRST_NIGHT = datetime(2026, 1, 1, 2, 0, 0)  # 02:00 UTC, a nightly job's hour


def nightly_values(
    level: float, nights: int, *, step_at: int | None = None, step_pct: float = 0.0, noise_pct: float, seed: int
) -> list[float]:
    """`nights` values around `level` (Gaussian noise of `noise_pct` percent), `step_pct` higher from `step_at` on."""
    rng = random.Random(seed)
    values = []
    for night in range(nights):
        mean = level * (1 + step_pct / 100) if step_at is not None and night >= step_at else level
        values.append(round(mean * (1 + rng.gauss(0, noise_pct / 100)), 4))
    return values


def store_nightly(
    connection: psycopg.Connection,
    name: str,
    variant: str,
    series: Mapping[str, list[float]],
    *,
    first_night: datetime = FIRST_NIGHT,
    metadata: dict | None = None,
) -> None:
    """Store one report a night (all metrics of `series` share their nights) as the report API does."""
    nights = len(next(iter(series.values())))
    for night in range(nights):
        report = ExperimentReport.model_validate(
            {
                "name": name,
                "variant": variant,
                "date": (first_night + timedelta(days=night)).isoformat() + "Z",
                "notes": f"nightly run {night + 1}",
                "metricsSummary": {metric: values[night] for metric, values in series.items()},
                "metadata": metadata,
            }
        )
        with connection.transaction():
            save_report(connection, report)
