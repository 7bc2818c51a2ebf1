"""The list query's composition and its cursor, without a database."""

from __future__ import annotations

from datetime import datetime

import pytest
from psycopg import sql

from experiments.query import InvalidCursor, ListFilters, decode_cursor, encode_cursor, list_query


def text(query: sql.Composed) -> str:
    """The query as PostgreSQL would receive it (identifiers and constants only; values stay parameters)."""
    return query.as_string(None)


def test_without_filters_the_query_has_no_where_and_asks_one_row_more() -> None:
    query, params = list_query(ListFilters(), limit=10)
    assert "WHERE" not in text(query)
    assert params == {"limit": 11}


def test_each_filter_adds_its_condition_and_only_its_parameter() -> None:
    moment = datetime(2025, 11, 1, 12)
    query, params = list_query(ListFilters(name="a", metric="p95_ms", created_to=moment), limit=5)
    assert text(query).count(" AND ") == 2
    assert "name = %(name)s" in text(query) and "metric = %(metric)s" in text(query)
    assert '"createdAt" < %(created_to)s' in text(query)
    assert params == {"name": "a", "metric": "p95_ms", "created_to": moment, "limit": 6}


def test_values_never_enter_the_sql_text() -> None:
    query, _ = list_query(ListFilters(name="x'; DROP TABLE experiments;--"), limit=1)
    assert "DROP" not in text(query)


def test_the_cursor_round_trips_and_bounds_the_page() -> None:
    moment = datetime(2025, 11, 1, 12, 0, 0, 123000)
    cursor = encode_cursor(moment, "id-7")
    assert decode_cursor(cursor) == (moment, "id-7")
    query, params = list_query(ListFilters(), limit=3, cursor=cursor)
    assert (params["cursor_at"], params["cursor_id"]) == (moment, "id-7")
    assert "%(cursor_at)s" in text(query)


@pytest.mark.parametrize("cursor", ["", "!!!", "bm90IGpzb24", encode_cursor(datetime(2025, 1, 1), "x")[:-3]])
def test_a_cursor_not_handed_out_is_invalid(cursor: str) -> None:
    with pytest.raises(InvalidCursor):
        decode_cursor(cursor)
