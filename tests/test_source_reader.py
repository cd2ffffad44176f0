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


def test_text_that_is_not_utf8_is_nulled_and_named_and_the_read_goes_on(tmp_path):
    path = tmp_path / "shop.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE customers (id INTEGER, first_name TEXT)")
        connection.execute("INSERT INTO customers VALUES (1, 'Zoë'), (2, CAST(X'4AFF65' AS TEXT)), (3, X'416E6E'), (4, X'FE')")
    schema = pa.schema([("id", pa.int64()), ("first_name", pa.string())])
    query = "SELECT id, first_name FROM customers ORDER BY id"
    table = pa.Table.from_batches(read_batches(f"sqlite:///{path}", query, schema, "customers", fetch_rows=10))
    assert table["first_name"].to_pylist() == ["Zoë", None, "Ann", None]  # a BLOB of UTF-8 bytes is text
    assert table["_unreadable"].to_pylist() == [
        None,
        "customers.first_name = b'J\\xffe': not valid UTF-8 text",
        None,
        "customers.first_name = b'\\xfe': not valid UTF-8 text",
    ]


def test_an_amount_that_is_not_a_number_is_named_never_read_as_zero(tmp_path):
    from sqlalchemy import Numeric

    from jobs.extract import _as_read

    url = shop(tmp_path, [(1, 12.345, 1, "2026-11-26"), (2, "abc", 0, "2026-11-26"), (3, "12.5x", 0, "2026-11-26")])
    query = f"SELECT id, {_as_read(url, 'total_amount', Numeric(12, 2))}, paid, created_at FROM orders ORDER BY id"
    table = pa.Table.from_batches(read_batches(url, query, SCHEMA, "orders", fetch_rows=10))
    assert [None if value is None else str(value) for value in table["total_amount"].to_pylist()] == ["12.35", None, None]
    assert table["_unreadable"].to_pylist() == [
        None,
        "orders.total_amount = 'abc': not a number",
        "orders.total_amount = '12.5x': not a number",
    ]
