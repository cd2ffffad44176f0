"""Shop rows as Arrow batches: typed as asked, in bounded batches, a value that does not fit named."""

from __future__ import annotations

import sqlite3

import pyarrow as pa

from core.source_reader import _plain_uri, read_batches

SCHEMA = pa.schema([("id", pa.int64()), ("total_amount", pa.decimal128(12, 2)), ("paid", pa.bool_()), ("created_at", pa.string())])


def shop(tmp_path, rows) -> str:
    path = tmp_path / "shop.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE orders (id INTEGER, total_amount NUMERIC, paid BOOLEAN, created_at DATETIME)")
        connection.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)", rows)
    return f"sqlite:///{path}"


QUERY = "SELECT id, CAST(ROUND(total_amount, 2) AS TEXT), paid, created_at FROM orders ORDER BY id"


def test_sqlite_rows_come_typed_in_batches_of_the_fetch_size(tmp_path):
    url = shop(tmp_path, [(i, 10.5 + i, i % 2, f"2026-11-2{i % 10} 10:00:00") for i in range(1, 8)] + [(8, None, None, None)])
    batches = list(read_batches(url, QUERY, SCHEMA, "orders", fetch_rows=3))
    assert [batch.num_rows for batch in batches] == [3, 3, 2]
    table = pa.Table.from_batches(batches)
    assert table.schema == SCHEMA
    assert str(table["total_amount"][0].as_py()) == "11.50" and table["paid"][0].as_py() is True
    assert table["total_amount"][7].as_py() is None and table["created_at"][7].as_py() is None


def test_a_value_that_does_not_fit_is_nulled_and_named_for_quarantine(tmp_path):
    url = shop(tmp_path, [(1, 12.5, 1, "2026-11-26"), ("seven", 3.0, 0, "2026-11-26")])
    table = pa.Table.from_batches(read_batches(url, QUERY, SCHEMA, "orders", fetch_rows=10))
    assert table["id"].to_pylist() == [1, None]
    assert table["_unreadable"].to_pylist() == [None, "orders.id = 'seven': expected int64"]
    assert table.select(SCHEMA.names).schema == SCHEMA


def test_driver_uris_keep_libpq_options_and_drop_the_python_drivers():
    assert (
        _plain_uri("postgresql+psycopg2://crm:p%40ss@db:5432/shop?sslmode=require", "postgresql", keep_options=True)
        == "postgresql://crm:p%40ss@db:5432/shop?sslmode=require"
    )
    assert _plain_uri("mysql+pymysql://crm:pw@db:3306/shop?charset=utf8mb4", "mysql") == "mysql://crm:pw@db:3306/shop"
