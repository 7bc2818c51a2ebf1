-- The read model: what the API reads back, indexed for "the last N runs", in schema "ingest" (Prisma never
-- looks there). Kept by statement-level triggers on "experiments", so it changes in the same statement and
-- transaction as the rows, whoever writes them (our API, the Prisma backend, psql). Prisma's schema diff
-- knows nothing of triggers, so they are no drift; its table, columns and indexes are left as they are.
--
-- ingest.run_values   one row per "experiments" row (same id): name, variant, metric, time, value, under one
--                     unique index that serves "the last N values of this metric for this variant" and a metric's
--                     whole series by a range scan, without touching the experiment's other metrics or runs.
-- ingest.metric_counts one row per (name, variant, metric): how many runs (rows) are stored, so counting
--                     never scans them; its keys are the experiment's variants and metrics.
-- ingest.runs         one row per run, i.e. per (name, variant, "createdAt") as compare has always grouped
--                     them: how many rows it holds and the directions its report gave (metadata.directions),
--                     with an index for "the latest run that gave directions".
--
-- The functions are SECURITY DEFINER: a Prisma backend connecting as a role that may not write schema
-- "ingest" still stores its rows; they name every object by schema and search only pg_catalog.

-- The tables get their keys and indexes after the rows already stored are copied in (below): building an
-- index once is several times faster than growing it row by row, and the copy runs while writers wait.
CREATE TABLE ingest.run_values (
    id         TEXT NOT NULL,
    name       TEXT NOT NULL,
    variant    TEXT NOT NULL,
    metric     TEXT NOT NULL,
    created_at TIMESTAMP(3) NOT NULL,
    value      DECIMAL(10,4) NOT NULL
);

CREATE TABLE ingest.metric_counts (
    name    TEXT NOT NULL,
    variant TEXT NOT NULL,
    metric  TEXT NOT NULL,
    runs    BIGINT NOT NULL CHECK (runs > 0)
);

CREATE TABLE ingest.runs (
    name       TEXT NOT NULL,
    variant    TEXT NOT NULL,
    created_at TIMESTAMP(3) NOT NULL,
    rows       BIGINT NOT NULL CHECK (rows > 0),
    directions JSONB
);

-- One function for the three row triggers: an UPDATE is its old rows out, then its new rows in (any column may
-- have changed, even the id). Statements naming a transition table the trigger lacks are never run.
-- Rows out: a run or count that reaches zero is deleted; a run that keeps some rows reads its directions again
-- from the rows left (by the createdAt index: that run's rows only). Rows in: values, then upserts of runs and
-- counts. Every statement that changes runs or counts locks their rows in key order, so concurrent writers of
-- one experiment queue instead of deadlocking.
CREATE OR REPLACE FUNCTION ingest.read_model_rows() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        DELETE FROM ingest.run_values v USING old_rows o
        WHERE (v.name, v.metric, v.variant, v.created_at, v.id) = (o.name, o.metric, o.variant, o."createdAt", o.id);

        WITH gone AS (
            SELECT name, variant, "createdAt" AS created_at, count(*) AS n FROM old_rows
            GROUP BY name, variant, "createdAt"
        ), locked AS (
            SELECT r.name, r.variant, r.created_at, r.rows, g.n FROM ingest.runs r
            JOIN gone g ON (r.name, r.variant, r.created_at) = (g.name, g.variant, g.created_at)
            ORDER BY r.name, r.variant, r.created_at FOR UPDATE OF r
        ), dropped AS (
            DELETE FROM ingest.runs r USING locked l
            WHERE (r.name, r.variant, r.created_at) = (l.name, l.variant, l.created_at) AND l.rows <= l.n
        )
        UPDATE ingest.runs r SET rows = r.rows - l.n FROM locked l
        WHERE (r.name, r.variant, r.created_at) = (l.name, l.variant, l.created_at) AND l.rows > l.n;

        EXECUTE format($sql$
            UPDATE ingest.runs r SET directions = (
                SELECT e.metadata->'directions' FROM %I.%I e
                WHERE e."createdAt" = r.created_at AND e.name = r.name AND e.variant = r.variant
                  AND jsonb_typeof(e.metadata->'directions') = 'object'
                LIMIT 1)
            FROM (SELECT DISTINCT name, variant, "createdAt" FROM old_rows) o
            WHERE (r.name, r.variant, r.created_at) = (o.name, o.variant, o."createdAt")
        $sql$, TG_TABLE_SCHEMA, TG_TABLE_NAME);

        WITH gone AS (
            SELECT name, variant, metric, count(*) AS n FROM old_rows GROUP BY name, variant, metric
        ), locked AS (
            SELECT c.name, c.variant, c.metric, c.runs, g.n FROM ingest.metric_counts c
            JOIN gone g ON (c.name, c.variant, c.metric) = (g.name, g.variant, g.metric)
            ORDER BY c.name, c.variant, c.metric FOR UPDATE OF c
        ), dropped AS (
            DELETE FROM ingest.metric_counts c USING locked l
            WHERE (c.name, c.variant, c.metric) = (l.name, l.variant, l.metric) AND l.runs <= l.n
        )
        UPDATE ingest.metric_counts c SET runs = c.runs - l.n FROM locked l
        WHERE (c.name, c.variant, c.metric) = (l.name, l.variant, l.metric) AND l.runs > l.n;
    END IF;

    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO ingest.run_values (id, name, variant, metric, created_at, value)
        SELECT id, name, variant, metric, "createdAt", value FROM new_rows;

        INSERT INTO ingest.runs AS r (name, variant, created_at, rows, directions)
        SELECT name, variant, "createdAt", count(*),
               (array_agg(metadata->'directions') FILTER (WHERE jsonb_typeof(metadata->'directions') = 'object'))[1]
        FROM new_rows GROUP BY name, variant, "createdAt" ORDER BY name, variant, "createdAt"
        ON CONFLICT (name, variant, created_at) DO UPDATE
        SET rows = r.rows + excluded.rows, directions = coalesce(excluded.directions, r.directions);

        INSERT INTO ingest.metric_counts AS c (name, variant, metric, runs)
        SELECT name, variant, metric, count(*) FROM new_rows
        GROUP BY name, variant, metric ORDER BY name, variant, metric
        ON CONFLICT (name, variant, metric) DO UPDATE SET runs = c.runs + excluded.runs;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION ingest.read_model_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    TRUNCATE ingest.run_values, ingest.metric_counts, ingest.runs;
    RETURN NULL;
END
$$;

-- The triggers, and the model of the rows stored, in one function: the migration calls it once, and it is the
-- repair after anything that bypassed or removed the triggers (a restore with triggers disabled, a table that
-- `prisma migrate reset` dropped and created again): `SELECT ingest.rebuild_read_model();`. Creating the
-- triggers locks "experiments" against writers until the caller commits, so no row is missed or counted twice.
-- It names "experiments" as the caller's search_path finds it, like the migrations do.
CREATE OR REPLACE FUNCTION ingest.rebuild_read_model() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    CREATE OR REPLACE TRIGGER ingest_read_model_insert AFTER INSERT ON "experiments"
        REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION ingest.read_model_rows();
    CREATE OR REPLACE TRIGGER ingest_read_model_update AFTER UPDATE ON "experiments"
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION ingest.read_model_rows();
    CREATE OR REPLACE TRIGGER ingest_read_model_delete AFTER DELETE ON "experiments"
        REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION ingest.read_model_rows();
    CREATE OR REPLACE TRIGGER ingest_read_model_truncate AFTER TRUNCATE ON "experiments"
        FOR EACH STATEMENT EXECUTE FUNCTION ingest.read_model_truncate();

    TRUNCATE ingest.run_values, ingest.metric_counts, ingest.runs;

    INSERT INTO ingest.run_values (id, name, variant, metric, created_at, value)
    SELECT id, name, variant, metric, "createdAt", value FROM "experiments";

    INSERT INTO ingest.runs (name, variant, created_at, rows, directions)
    SELECT name, variant, "createdAt", count(*),
           (array_agg(metadata->'directions') FILTER (WHERE jsonb_typeof(metadata->'directions') = 'object'))[1]
    FROM "experiments" GROUP BY name, variant, "createdAt";

    INSERT INTO ingest.metric_counts (name, variant, metric, runs)
    SELECT name, variant, metric, count(*) FROM "experiments" GROUP BY name, variant, metric;
END
$$;

-- Here the tables have no index yet: the copy is fast, and the indexes are built once, after it.
SET LOCAL maintenance_work_mem = '128MB';
SELECT ingest.rebuild_read_model();

-- Unique over the whole row key (id is unique in "experiments"), so one index serves reads, deletes and
-- integrity: a primary key on id alone would be a second index to grow on every write, at random places.
CREATE UNIQUE INDEX run_values_series_idx
    ON ingest.run_values (name, metric, variant, created_at DESC, id DESC) INCLUDE (value);
ALTER TABLE ingest.metric_counts ADD PRIMARY KEY (name, variant, metric);
CREATE INDEX metric_counts_metric_idx ON ingest.metric_counts (name, metric, variant);
ALTER TABLE ingest.runs ADD PRIMARY KEY (name, variant, created_at);
CREATE INDEX runs_directions_idx ON ingest.runs (name, created_at DESC) WHERE directions IS NOT NULL;
