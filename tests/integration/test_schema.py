"""Our migrations create exactly the Prisma backend's table, and run safely where Prisma already did."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import psycopg
import pytest

from devkit.localdb import scratch_database
from experiments.migrations import apply_migrations
from support import PRISMA_INIT_MIGRATION

pytestmark = pytest.mark.integration

# Every file of db/migrations, in the order they apply.
MIGRATIONS = [
    "0001_experiments",
    "0002_idempotency_scope_and_expiry",
    "0003_runs_read_model",
    "0004_change_points",
    "0005_series_rollup",
]
PRISMA_DDL = PRISMA_INIT_MIGRATION.read_text()

CATALOG = {
    "columns": """
        SELECT column_name, data_type, numeric_precision, numeric_scale, datetime_precision,
               is_nullable, column_default, ordinal_position
        FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'experiments'
        ORDER BY ordinal_position""",
    "indexes": """
        SELECT indexname, indexdef FROM pg_indexes
        WHERE schemaname = 'public' AND tablename = 'experiments' ORDER BY indexname""",
    "constraints": """
        SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint
        WHERE conrelid = 'public.experiments'::regclass ORDER BY conname""",
    "public_tables": """
        SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name""",
}


def catalog(url: str) -> dict[str, list[tuple]]:
    with psycopg.connect(url) as conn:
        return {name: conn.execute(query).fetchall() for name, query in CATALOG.items()}


@pytest.fixture
def new_database(server_url: str) -> Iterator[Callable[[], str]]:
    """Make empty databases on the test server; all dropped at the end."""
    with contextlib.ExitStack() as stack:
        yield lambda: stack.enter_context(scratch_database(server_url, "k6exp_schema", migrate=False))


def test_our_table_equals_the_prisma_table(new_database: Callable[[], str]) -> None:
    prisma, ours = new_database(), new_database()
    with psycopg.connect(prisma, autocommit=True) as conn:
        conn.execute(PRISMA_DDL)
    apply_migrations(ours)

    expected, actual = catalog(prisma), catalog(ours)
    assert actual == expected
    assert [c[0] for c in actual["columns"]] == [
        "id", "name", "description", "variant", "metric", "value", "metadata", "createdAt",
    ]  # fmt: skip
    assert {i[0] for i in actual["indexes"]} == {
        "experiments_pkey", "experiments_name_idx", "experiments_variant_idx",
        "experiments_metric_idx", "experiments_createdAt_idx",
    }  # fmt: skip


def test_our_bookkeeping_stays_out_of_prismas_schema(new_database: Callable[[], str]) -> None:
    url = new_database()
    apply_migrations(url)
    assert catalog(url)["public_tables"] == [("experiments",)]


def test_migrating_a_prisma_database_changes_nothing_of_prismas(new_database: Callable[[], str]) -> None:
    url = new_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(PRISMA_DDL)
        conn.execute(
            """INSERT INTO experiments (id, name, variant, metric, value)
               VALUES ('prisma-row', 'n', 'v', 'p95_ms', 1.5)"""
        )
    before = catalog(url)

    assert apply_migrations(url) == MIGRATIONS
    assert catalog(url) == before
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT id FROM experiments").fetchall() == [("prisma-row",)]


def test_migrations_apply_once(new_database: Callable[[], str]) -> None:
    url = new_database()
    assert apply_migrations(url) == MIGRATIONS
    assert apply_migrations(url) == []
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT version FROM ingest.schema_migrations ORDER BY version").fetchall() == [
            (version,) for version in MIGRATIONS
        ]
