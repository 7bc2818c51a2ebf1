-- Change points that `make regressions` (Apache Otava) found in each experiment's history, one row per
-- (experiment, variant, metric, run where the new level starts). Each analysis replaces the rows of the series
-- it looked at, in one transaction; GET /experiments/changes serves them.
CREATE TABLE IF NOT EXISTS ingest.change_points (
    name        TEXT NOT NULL,
    variant     TEXT NOT NULL,
    metric      TEXT NOT NULL,
    run_index   INTEGER NOT NULL CHECK (run_index > 0),   -- 0-based position of the first run at the new level
    created_at  TIMESTAMP(3) NOT NULL,                     -- that run's "createdAt" (UTC, like experiments)
    runs        INTEGER NOT NULL CHECK (runs > run_index), -- how many runs the series had when analysed
    mean_before DOUBLE PRECISION NOT NULL,
    mean_after  DOUBLE PRECISION NOT NULL,
    change_pct  DOUBLE PRECISION,                          -- NULL when the level before was 0
    p_value     DOUBLE PRECISION NOT NULL,
    verdict     TEXT NOT NULL CHECK (verdict IN ('better', 'worse', 'changed')),
    analysed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (name, variant, metric, run_index)
);
