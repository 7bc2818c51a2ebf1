-- The Prisma backend's `Experiment` model, exactly as `prisma migrate` creates it (see DESIGN.md).
-- IF NOT EXISTS makes it a no-op on a database where the Prisma backend already created the table;
-- the DDL is otherwise identical, so Prisma sees no drift.
CREATE TABLE IF NOT EXISTS "experiments" (
    "id" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "description" TEXT,
    "variant" TEXT NOT NULL,
    "metric" TEXT NOT NULL,
    "value" DECIMAL(10,4) NOT NULL,
    "metadata" JSONB,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "experiments_pkey" PRIMARY KEY ("id")
);

CREATE INDEX IF NOT EXISTS "experiments_name_idx" ON "experiments"("name");
CREATE INDEX IF NOT EXISTS "experiments_variant_idx" ON "experiments"("variant");
CREATE INDEX IF NOT EXISTS "experiments_metric_idx" ON "experiments"("metric");
CREATE INDEX IF NOT EXISTS "experiments_createdAt_idx" ON "experiments"("createdAt");

-- Our own bookkeeping lives in schema "ingest", which Prisma never looks at.
-- One row per Idempotency-Key: the hash of the request it came with and the exact JSON body it was answered.
CREATE TABLE IF NOT EXISTS ingest.idempotency_keys (
    key          TEXT PRIMARY KEY,
    request_hash TEXT NOT NULL,
    response     TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
