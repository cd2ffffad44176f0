"""Publishing to the CRM database: all rows of a run or none, and a backfill never hides a newer run."""
from __future__ import annotations

from datetime import date

import pyarrow as pa
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.exc import IntegrityError

from jobs import publish
from jobs.crm_schema import crm_metadata


def segments(as_of: date, customer_ids: list[int], run_id: str) -> pa.Table:
    n = len(customer_ids)
    return pa.table({
        "customer_id": customer_ids, "as_of": [as_of] * n, "recency_days": [3] * n, "frequency": [2] * n,
        "monetary": [10.5] * n, "r_score": [5] * n, "f_score": [4] * n, "m_score": [3] * n,
        "rfm_code": ["543"] * n, "segment": ["Champions"] * n, "previous_segment": ["Loyal"] * n,
        "changed_at": [as_of] * n, "cluster_id": [1] * n, "run_id": [run_id] * n,
    })


@pytest.fixture()
def crm(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path}/crm.sqlite")
    metadata = crm_metadata(None)
    with engine.begin() as connection:
        publish.ensure_tables(connection, metadata)
    return engine, metadata.tables["customer_segments"]


def replace_rows(engine, table, rows: pa.Table, run_date: date) -> int:
    """Publish one table's rows (the other CRM tables stay empty)."""
    return publish.replace_tables(engine, table.metadata, {table: rows}, run_date)[table.name]


def published(engine, table) -> list[tuple]:
    with engine.connect() as connection:
        return connection.execute(select(table.c.customer_id, table.c.run_id).order_by(table.c.customer_id)).all()


def test_a_publication_that_fails_midway_leaves_the_previous_rows(crm, monkeypatch):
    engine, table = crm
    replace_rows(engine, table, segments(date(2026, 11, 25), [1, 2, 3], "night-1"), date(2026, 11, 25))
    monkeypatch.setattr(publish, "INSERT_BATCH_ROWS", 2)
    # The second batch repeats a key: the database refuses it after the first batch went in.
    broken = segments(date(2026, 11, 26), [4, 5, 4, 6], "night-2")
    with pytest.raises(IntegrityError):
        replace_rows(engine, table, broken, date(2026, 11, 26))
    assert published(engine, table) == [(1, "night-1"), (2, "night-1"), (3, "night-1")]


def test_a_publication_replaces_every_row(crm):
    engine, table = crm
    replace_rows(engine, table, segments(date(2026, 11, 25), [1, 2, 3], "night-1"), date(2026, 11, 25))
    assert replace_rows(engine, table, segments(date(2026, 11, 26), [2, 4], "night-2"), date(2026, 11, 26)) == 2
    assert published(engine, table) == [(2, "night-2"), (4, "night-2")]


def test_publishing_an_older_date_leaves_the_newer_publication(crm):
    engine, table = crm
    replace_rows(engine, table, segments(date(2026, 11, 26), [1, 2], "night-26"), date(2026, 11, 26))
    assert replace_rows(engine, table, segments(date(2026, 11, 20), [1], "backfill-20"), date(2026, 11, 20)) == 0
    assert published(engine, table) == [(1, "night-26"), (2, "night-26")]


def test_a_table_left_by_an_older_version_is_recreated_with_the_current_columns(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path}/crm.sqlite")
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE customer_segments (customer_id INTEGER PRIMARY KEY, segment TEXT)")
        connection.exec_driver_sql("INSERT INTO customer_segments VALUES (1, 'Lost')")
    metadata = crm_metadata(None)
    table = metadata.tables["customer_segments"]
    assert replace_rows(engine, table, segments(date(2026, 11, 26), [7, 8], "night-26"), date(2026, 11, 26)) == 2
    assert published(engine, table) == [(7, "night-26"), (8, "night-26")]
