"""The query compare ran over `experiments` before the read model (db/migrations/0003_runs_read_model.sql).

Kept for the tests that check the read model answers as it did, and for the benchmark that shows what it cost:
it ranks every row of the experiment.
"""

RECENT_RUNS_OVER_EXPERIMENTS = """
SELECT metric, variant, value, runs
FROM (
    SELECT metric, variant, value, "createdAt", id,
           row_number() OVER (PARTITION BY metric, variant ORDER BY "createdAt" DESC, id DESC) AS recency,
           count(*) OVER (PARTITION BY metric, variant) AS runs
    FROM experiments
    WHERE name = %(name)s
) AS ranked
WHERE recency <= %(runs)s
ORDER BY metric, variant, recency
"""
