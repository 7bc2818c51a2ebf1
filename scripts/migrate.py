"""Apply pending migrations to DATABASE_URL (or the embedded PostgreSQL): `python scripts/migrate.py`."""

from __future__ import annotations

import argparse
from pathlib import Path

from devkit.localdb import database_url
from experiments.migrations import DEFAULT_MIGRATIONS_DIR, PRISMA_BASELINE_HINT, apply_migrations, table_exists


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=DEFAULT_MIGRATIONS_DIR, help="folder of NNNN_name.sql files")
    args = parser.parse_args()
    url = database_url()
    had_table = table_exists(url, "experiments")
    applied = apply_migrations(url, args.dir)
    print(f"applied: {', '.join(applied)}" if applied else "up to date: nothing to apply")
    if not had_table and table_exists(url, "experiments") and not table_exists(url, "_prisma_migrations"):
        print(PRISMA_BASELINE_HINT)


if __name__ == "__main__":
    main()
