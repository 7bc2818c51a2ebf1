-- CreateSchema
CREATE SCHEMA IF NOT EXISTS "public";

-- CreateTable
CREATE TABLE "experiments" (
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

-- CreateIndex
CREATE INDEX "experiments_name_idx" ON "experiments"("name");

-- CreateIndex
CREATE INDEX "experiments_variant_idx" ON "experiments"("variant");

-- CreateIndex
CREATE INDEX "experiments_metric_idx" ON "experiments"("metric");

-- CreateIndex
CREATE INDEX "experiments_createdAt_idx" ON "experiments"("createdAt");
