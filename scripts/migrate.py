"""Apply pending migrations to DATABASE_URL (or the embedded PostgreSQL): `python scripts/migrate.py`."""

from __future__ import annotations

import argparse
from pathlib import Path

from devkit.localdb import database_url
from experiments.migrations import DEFAULT_MIGRATIONS_DIR, apply_migrations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=DEFAULT_MIGRATIONS_DIR, help="folder of NNNN_name.sql files")
    args = parser.parse_args()
    applied = apply_migrations(database_url(), args.dir)
    print(f"applied: {', '.join(applied)}" if applied else "up to date: nothing to apply")


if __name__ == "__main__":
    main()
