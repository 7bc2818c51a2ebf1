"""Fixtures for the change-point tests (Otava's venv and the regressions.py runner are in tests/conftest.py)."""

from __future__ import annotations

import psycopg
import pytest


@pytest.fixture
def history_db(db: psycopg.Connection) -> psycopg.Connection:
    """The test database with no runs and no stored change points."""
    db.execute("TRUNCATE ingest.change_points")
    return db
