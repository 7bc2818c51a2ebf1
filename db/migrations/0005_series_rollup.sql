-- The series rollup: each series' lowest and highest run per time bucket, at a few fixed bucket widths, so a
-- downsampled chart read costs what it returns (the buckets it draws), not every run of the series.
--
-- ingest.series_levels   the bucket widths in seconds (1 hour, 6 hours, 1 day, 1 week): the one list the
--                        triggers and the read (experiments.series) share. Each width costs one bucket
--                        upsert per stored row, so there are few.
-- ingest.series_buckets  one row per (name, metric, variant, width, bucket) that holds runs, where bucket is
--                        floor(seconds since 1970 / width) of the runs' "createdAt" (UTC, as stored): how many
--                        values it holds, its lowest (the earliest of equals) and its highest (the same).
--
-- Kept by statement-level triggers on ingest.run_values (migration 0003), which its own triggers keep in the
-- same statement as "experiments": so the rollup follows whoever writes the rows, and the repair
-- `SELECT ingest.rebuild_read_model()` rebuilds it too (it truncates and refills run_values). Rows in: one
-- upsert per bucket and width (LEAST/GREATEST). Rows out: the buckets they were in are read again from
-- run_values, one index range of one bucket each. Every statement locks bucket rows in key order, and a
-- write reaches them before ingest.runs and ingest.metric_counts (the run_values statements come first in
-- 0003's function), so concurrent writers queue instead of deadlocking. SECURITY DEFINER and a search_path
-- of pg_catalog, as in 0003.

CREATE TABLE ingest.series_levels (
    width INTEGER PRIMARY KEY CHECK (width > 0)
);
INSERT INTO ingest.series_levels (width) VALUES (3600), (21600), (86400), (604800);

CREATE TABLE ingest.series_buckets (
    name      TEXT NOT NULL,
    metric    TEXT NOT NULL,
    variant   TEXT NOT NULL,
    width     INTEGER NOT NULL,
    bucket    BIGINT NOT NULL,
    runs      BIGINT NOT NULL CHECK (runs > 0),
    min_value DECIMAL(10,4) NOT NULL,
    min_at    TIMESTAMP(3) NOT NULL,
    max_value DECIMAL(10,4) NOT NULL,
    max_at    TIMESTAMP(3) NOT NULL
);

-- The bucket of a time at a width, and the first instant of a bucket (for the index range that reads it).
-- No SET clause, so the planner inlines them (one with a SET costs a call per row: twice the write), and
-- every function they call is named by schema instead.
CREATE OR REPLACE FUNCTION ingest.series_bucket(at TIMESTAMP, width INTEGER) RETURNS BIGINT
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN pg_catalog.floor(pg_catalog.date_part('epoch', at) / width)::bigint;

CREATE OR REPLACE FUNCTION ingest.series_bucket_start(bucket BIGINT, width INTEGER) RETURNS TIMESTAMP
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN TIMESTAMP '1970-01-01' + pg_catalog.make_interval(secs => bucket * width);

-- Rows in (INSERT): one upsert per bucket and width, in key order. Rows out (DELETE) or changed (an UPDATE,
-- which only direct SQL on run_values makes: 0003's function deletes and inserts): lock the buckets they were
-- or are in (key order), then read each again from run_values, one index range of one bucket; a bucket left
-- empty is deleted. The read is a statement after the lock, so it sees what any writer that held it wrote.
CREATE OR REPLACE FUNCTION ingest.series_rollup_rows() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    touched ingest.series_buckets[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO ingest.series_buckets AS b
            (name, metric, variant, width, bucket, runs, min_value, min_at, max_value, max_at)
        SELECT n.name, n.metric, n.variant, l.width, ingest.series_bucket(n.created_at, l.width), count(*),
               (array_agg(n.value ORDER BY n.value, n.created_at))[1],
               (array_agg(n.created_at ORDER BY n.value, n.created_at))[1],
               (array_agg(n.value ORDER BY n.value DESC, n.created_at))[1],
               (array_agg(n.created_at ORDER BY n.value DESC, n.created_at))[1]
        FROM new_rows n CROSS JOIN ingest.series_levels l
        GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT (name, metric, variant, width, bucket) DO UPDATE SET
            runs = b.runs + excluded.runs,
            min_value = CASE WHEN (excluded.min_value, excluded.min_at) < (b.min_value, b.min_at)
                             THEN excluded.min_value ELSE b.min_value END,
            min_at = CASE WHEN (excluded.min_value, excluded.min_at) < (b.min_value, b.min_at)
                          THEN excluded.min_at ELSE b.min_at END,
            max_value = CASE WHEN excluded.max_value > b.max_value
                               OR (excluded.max_value = b.max_value AND excluded.max_at < b.max_at)
                             THEN excluded.max_value ELSE b.max_value END,
            max_at = CASE WHEN excluded.max_value > b.max_value
                            OR (excluded.max_value = b.max_value AND excluded.max_at < b.max_at)
                          THEN excluded.max_at ELSE b.max_at END;
        RETURN NULL;
    END IF;

    IF TG_OP = 'DELETE' THEN
        SELECT array_agg(ROW(t.name, t.metric, t.variant, t.width, t.bucket, 1, 0, 'epoch', 0, 'epoch')::ingest.series_buckets)
        INTO touched FROM (
            SELECT DISTINCT o.name, o.metric, o.variant, l.width, ingest.series_bucket(o.created_at, l.width) AS bucket
            FROM old_rows o CROSS JOIN ingest.series_levels l
        ) t;
    ELSE
        SELECT array_agg(ROW(t.name, t.metric, t.variant, t.width, t.bucket, 1, 0, 'epoch', 0, 'epoch')::ingest.series_buckets)
        INTO touched FROM (
            SELECT DISTINCT r.name, r.metric, r.variant, l.width, ingest.series_bucket(r.created_at, l.width) AS bucket
            FROM (SELECT name, metric, variant, created_at FROM old_rows
                  UNION SELECT name, metric, variant, created_at FROM new_rows) r
            CROSS JOIN ingest.series_levels l
        ) t;
    END IF;

    PERFORM 1 FROM ingest.series_buckets b JOIN unnest(touched) t
        ON (b.name, b.metric, b.variant, b.width, b.bucket) = (t.name, t.metric, t.variant, t.width, t.bucket)
    ORDER BY b.name, b.metric, b.variant, b.width, b.bucket FOR UPDATE OF b;

    WITH fresh AS (
        SELECT t.name, t.metric, t.variant, t.width, t.bucket, a.*
        FROM unnest(touched) t CROSS JOIN LATERAL (
            SELECT count(*) AS runs,
                   (array_agg(v.value ORDER BY v.value, v.created_at))[1] AS min_value,
                   (array_agg(v.created_at ORDER BY v.value, v.created_at))[1] AS min_at,
                   (array_agg(v.value ORDER BY v.value DESC, v.created_at))[1] AS max_value,
                   (array_agg(v.created_at ORDER BY v.value DESC, v.created_at))[1] AS max_at
            FROM ingest.run_values v
            WHERE v.name = t.name AND v.metric = t.metric AND v.variant = t.variant
              AND v.created_at >= ingest.series_bucket_start(t.bucket, t.width)
              AND v.created_at < ingest.series_bucket_start(t.bucket + 1, t.width)
        ) a
    ), emptied AS (
        DELETE FROM ingest.series_buckets b USING fresh f
        WHERE (b.name, b.metric, b.variant, b.width, b.bucket) = (f.name, f.metric, f.variant, f.width, f.bucket)
          AND f.runs = 0
    )
    INSERT INTO ingest.series_buckets AS b
        (name, metric, variant, width, bucket, runs, min_value, min_at, max_value, max_at)
    SELECT * FROM fresh WHERE runs > 0 ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (name, metric, variant, width, bucket) DO UPDATE SET
        runs = excluded.runs, min_value = excluded.min_value, min_at = excluded.min_at,
        max_value = excluded.max_value, max_at = excluded.max_at;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION ingest.series_rollup_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    TRUNCATE ingest.series_buckets;
    RETURN NULL;
END
$$;

-- The triggers first: creating them locks run_values (so "experiments") against writers until the migration
-- commits, so the copy below misses no row and counts none twice.
CREATE TRIGGER series_rollup_insert AFTER INSERT ON ingest.run_values
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION ingest.series_rollup_rows();
CREATE TRIGGER series_rollup_update AFTER UPDATE ON ingest.run_values
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION ingest.series_rollup_rows();
CREATE TRIGGER series_rollup_delete AFTER DELETE ON ingest.run_values
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION ingest.series_rollup_rows();
CREATE TRIGGER series_rollup_truncate AFTER TRUNCATE ON ingest.run_values
    FOR EACH STATEMENT EXECUTE FUNCTION ingest.series_rollup_truncate();

-- The rollup of the values already stored, before its key exists (one index build instead of a growing one).
SET LOCAL maintenance_work_mem = '128MB';
INSERT INTO ingest.series_buckets (name, metric, variant, width, bucket, runs, min_value, min_at, max_value, max_at)
SELECT v.name, v.metric, v.variant, l.width, ingest.series_bucket(v.created_at, l.width), count(*),
       (array_agg(v.value ORDER BY v.value, v.created_at))[1],
       (array_agg(v.created_at ORDER BY v.value, v.created_at))[1],
       (array_agg(v.value ORDER BY v.value DESC, v.created_at))[1],
       (array_agg(v.created_at ORDER BY v.value DESC, v.created_at))[1]
FROM ingest.run_values v CROSS JOIN ingest.series_levels l
GROUP BY 1, 2, 3, 4, 5;

ALTER TABLE ingest.series_buckets ADD PRIMARY KEY (name, metric, variant, width, bucket);
