"""Apply `db/migrations/NNNN_name.sql` files in order, each exactly once.

Applied versions are recorded in `ingest.schema_migrations` (never in Prisma's `public` schema). A
transaction-level advisory lock serialises concurrent runners (two deploys, a test and a script), so each
file runs once even then.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

# Repository layout; the migrate Lambda passes its own packaged copy instead.
DEFAULT_MIGRATIONS_DIR = Path(__file__).resolve().parents[3] / "db" / "migrations"

_LOCK_ID = 7_412_032_001  # any constant shared by every runner

CREATE_BOOKKEEPING = """
CREATE SCHEMA IF NOT EXISTS ingest;
CREATE TABLE IF NOT EXISTS ingest.schema_migrations (
    version    TEXT PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""
LOCK = "SELECT pg_advisory_xact_lock(%s)"
APPLIED_VERSIONS = "SELECT version FROM ingest.schema_migrations"
RECORD_VERSION = "INSERT INTO ingest.schema_migrations (version) VALUES (%s)"
# Resolved through search_path, as the unqualified names in 0001 and in Prisma's own migrations are.
TABLE_EXISTS = "SELECT to_regclass(%s) IS NOT NULL"

PRISMA_BASELINE_HINT = """\
Created the table "experiments" on a database that Prisma has never migrated (it has no _prisma_migrations).
If the Prisma backend shares this database, baseline it once before its first deploy, or its
`prisma migrate deploy` stops with P3005 (the schema is not empty):
    npx prisma migrate resolve --applied <its first migration, the one that creates experiments>
See the README, "Sharing the database with the Prisma backend"."""


def migration_files(migrations_dir: Path) -> list[Path]:
    """The `NNNN_name.sql` files of a folder, in the order they must run."""
    files = sorted(migrations_dir.glob("[0-9][0-9][0-9][0-9]_*.sql"))
    if not files:
        raise FileNotFoundError(f"no migrations in {migrations_dir}")
    return files


def table_exists(conninfo: str, table: str) -> bool:
    """Whether `table` (unqualified: the first schema of search_path, `public` by default) exists."""
    with psycopg.connect(conninfo, connect_timeout=10) as conn:
        return bool(conn.execute(TABLE_EXISTS, (table,)).fetchone()[0])


def apply_migrations(conninfo: str, migrations_dir: Path = DEFAULT_MIGRATIONS_DIR) -> list[str]:
    """Apply the pending migrations in one transaction and return the versions applied (may be empty)."""
    files = migration_files(migrations_dir)
    with psycopg.connect(conninfo, connect_timeout=10) as conn, conn.transaction():
        conn.execute(LOCK, (_LOCK_ID,))
        conn.execute(CREATE_BOOKKEEPING)
        applied = {row[0] for row in conn.execute(APPLIED_VERSIONS)}
        pending = [path for path in files if path.stem not in applied]
        for path in pending:
            conn.execute(path.read_text(encoding="utf-8"))
            conn.execute(RECORD_VERSION, (path.stem,))
    return [path.stem for path in pending]
