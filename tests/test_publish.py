"""Publishing to the CRM database: all rows of a run or none, and a backfill never hides a newer run."""

from __future__ import annotations

from datetime import date

import pyarrow as pa
import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import IntegrityError

from core import migrate
from core.crm_schema import SEGMENT_HISTORY, crm_metadata, database_metadata
from jobs import publish


def segments(
    as_of: date, customer_ids: list[int], run_id: str, segment_of: dict[int, str] | None = None, changed_at: date | None = None
) -> pa.Table:
    n = len(customer_ids)
    return pa.table(
        {
            "customer_id": customer_ids,
            "as_of": [as_of] * n,
            "recency_days": [3] * n,
            "frequency": [2] * n,
            "monetary": [10.5] * n,
            "r_score": [5] * n,
            "f_score": [4] * n,
            "m_score": [3] * n,
            "rfm_code": ["543"] * n,
            "segment": [(segment_of or {}).get(c, "Champions") for c in customer_ids],
            "previous_segment": ["Loyal"] * n,
            "changed_at": [changed_at or as_of] * n,
            "cluster_id": [1] * n,
            "run_id": [run_id] * n,
        }
    )


@pytest.fixture()
def crm(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path}/crm.sqlite")
    migrate.upgrade(str(engine.url), None)
    return engine, crm_metadata(None).tables["customer_segments"]


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


def stays(engine) -> list[tuple]:
    table = database_metadata(None).tables[SEGMENT_HISTORY]
    with engine.connect() as connection:
        return [
            tuple(row)
            for row in connection.execute(
                select(table.c.customer_id, table.c.segment, table.c.valid_from, table.c.valid_to).order_by(
                    table.c.customer_id, table.c.valid_from
                )
            )
        ]


def test_segment_stays_are_kept_per_customer_and_a_rerun_or_backfill_records_them_once(crm):
    engine, table = crm
    d1, d2, d0 = date(2026, 11, 25), date(2026, 11, 26), date(2026, 11, 20)
    replace_rows(engine, table, segments(d1, [1, 2, 3], "n1", {1: "Loyal", 2: "At Risk", 3: "Lost"}, changed_at=date(2026, 10, 1)), d1)
    night_two = segments(d2, [1, 2, 4], "n2", {1: "Loyal", 2: "Champions", 4: "New"})
    first_stays = [
        (1, "Loyal", date(2026, 10, 1), None),
        (2, "At Risk", date(2026, 10, 1), d2),
        (2, "Champions", d2, None),
        (3, "Lost", date(2026, 10, 1), d2),
        (4, "New", d2, None),
    ]
    for _ in range(2):  # the night, then its rerun
        replace_rows(engine, table, night_two, d2)
        assert stays(engine) == first_stays
    # A rerun that comes to another segment replaces the stay the first run opened.
    replace_rows(engine, table, segments(d2, [1, 2, 4], "n2b", {1: "Loyal", 2: "Hibernating", 4: "New"}), d2)
    assert stays(engine)[1:3] == [(2, "At Risk", date(2026, 10, 1), d2), (2, "Hibernating", d2, None)]
    # A backfill of an older date leaves the stays (and the published rows) of the newer run.
    before = stays(engine)
    replace_rows(engine, table, segments(d0, [1, 2, 3], "b0", {1: "Lost"}), d0)
    assert stays(engine) == before


def test_segment_summary_history_keeps_every_run_date_once_backfills_included(crm):
    engine, _ = crm
    tables = database_metadata(None).tables
    summary, history = tables["segment_summary"], tables["segment_summary_history"]

    def summary_rows(as_of, customers, run_id):
        return pa.table(
            {
                "segment": ["Champions", "Lost"],
                "customers": customers,
                "customer_share": [0.5, 0.5],
                "revenue": [10.0, 1.0],
                "revenue_share": [0.9, 0.1],
                "mean_recency_days": [3.0, 300.0],
                "mean_frequency": [4.0, 1.0],
                "mean_monetary": [5.0, 1.0],
                "as_of": [as_of] * 2,
                "run_id": [run_id] * 2,
            }
        )

    for as_of, customers, run_id in (
        (date(2026, 11, 25), [5, 5], "n1"),
        (date(2026, 11, 26), [6, 4], "n2"),
        (date(2026, 11, 26), [7, 3], "n2-rerun"),
        (date(2026, 11, 20), [1, 9], "b0"),
    ):
        publish.replace_tables(engine, summary.metadata, {summary: summary_rows(as_of, customers, run_id)}, as_of)
    with engine.connect() as connection:
        kept = connection.execute(
            select(history.c.as_of, history.c.segment, history.c.customers, history.c.run_id).order_by(history.c.as_of, history.c.segment)
        ).all()
        trend = connection.execute(
            text("SELECT as_of, customers_change FROM segment_trend WHERE segment = 'Champions' ORDER BY as_of")
        ).all()
        current = connection.execute(select(summary.c.run_id).distinct()).scalars().all()
    assert [row[:3] for row in kept] == [
        (date(2026, 11, 20), "Champions", 1),
        (date(2026, 11, 20), "Lost", 9),
        (date(2026, 11, 25), "Champions", 5),
        (date(2026, 11, 25), "Lost", 5),
        (date(2026, 11, 26), "Champions", 7),
        (date(2026, 11, 26), "Lost", 3),
    ]
    assert [(str(as_of), change) for as_of, change in trend] == [  # SQLite's view gives text dates
        ("2026-11-20", None),
        ("2026-11-25", 4),
        ("2026-11-26", 2),
    ]
    assert current == ["n2-rerun"]


#: The publisher of the concurrency test: publishes customer_segments and customer_scores together, run
#: after run, each run with its own id and number of customers, until it has published `runs` of them.
PUBLISHER = """
import sys
from datetime import date

import pyarrow as pa
from sqlalchemy import create_engine

from jobs import publish
from core.crm_schema import columns_of, crm_metadata

url, runs = sys.argv[1], int(sys.argv[2])
metadata = crm_metadata("crm")
segments, scores = metadata.tables["crm.customer_segments"], metadata.tables["crm.customer_scores"]
engine = create_engine(url)
day = date(2026, 11, 26)
for run in range(runs):
    run_id, customers = f"run-{run:03d}", list(range(1, 200 + 37 * (run % 7)))
    n = len(customers)
    rows = {column: [None] * n for column in columns_of("customer_segments")}
    rows.update(customer_id=customers, as_of=[day] * n, recency_days=[3] * n, frequency=[2] * n, monetary=[10.5] * n,
                r_score=[5] * n, f_score=[4] * n, m_score=[3] * n, rfm_code=["543"] * n, segment=["Champions"] * n,
                changed_at=[day] * n, run_id=[run_id] * n)
    score_rows = {column: [None] * n for column in columns_of("customer_scores")}
    score_rows.update(customer_id=customers, p_alive=[0.5] * n, as_of=[day] * n, run_id=[run_id] * n)
    publish.replace_tables(engine, metadata, {segments: pa.table(rows), scores: pa.table(score_rows)}, day)
    print(run_id, n, flush=True)
"""


def test_a_reader_never_sees_a_mixed_or_empty_publication_while_runs_are_published(postgres):
    """An analyst's query during publishing sees one whole run in every CRM table: never an empty table,
    never part of a run, never one run in one table and another in the next."""
    import subprocess
    import sys
    import time

    from sqlalchemy import text

    from conftest import REPO

    postgres.create_database("publish_concurrency")
    url = postgres.url("publish_concurrency")
    engine = create_engine(url)
    migrate.upgrade(url, "crm")
    runs = 40
    publisher = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER, url, str(runs)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    # One statement, so one snapshot, as an analyst's query that joins or unions the tables.
    query = text("""
        SELECT (SELECT count(*) FROM crm.customer_segments), (SELECT count(DISTINCT run_id) FROM crm.customer_segments),
               (SELECT min(run_id) FROM crm.customer_segments), (SELECT max(customer_id) FROM crm.customer_segments),
               (SELECT count(*) FROM crm.customer_scores), (SELECT count(DISTINCT run_id) FROM crm.customer_scores),
               (SELECT min(run_id) FROM crm.customer_scores)
    """)
    seen, reads = set(), 0
    try:
        with engine.connect() as connection:
            while publisher.poll() is None:
                segment_rows, segment_runs, segment_run, last_customer, score_rows, score_runs, score_run = connection.execute(query).one()
                connection.rollback()
                reads += 1
                if segment_run is None and score_run is None and not seen:
                    continue  # before the first publication commits
                assert segment_rows > 0 and score_rows > 0, "an empty CRM table was visible"
                assert segment_runs == score_runs == 1, f"rows of {segment_runs} / {score_runs} runs in one table"
                assert segment_run == score_run, f"customer_segments holds {segment_run}, customer_scores {score_run}"
                assert segment_rows == score_rows == last_customer, "part of a run was visible"
                seen.add(segment_run)
                time.sleep(0.01)
        out, err = publisher.communicate(timeout=60)
    finally:
        if publisher.poll() is None:
            publisher.kill()
    assert publisher.returncode == 0, err
    assert out.count("\n") == runs
    # The reader really overlapped the publishing: it saw several runs come and go.
    assert len(seen) >= 5, f"{reads} reads saw only {sorted(seen)}"


def awkward_rows(table, run_date: date, count: int = 3) -> pa.Table:
    """`count` rows for every column of CRM `table`, of the types pyarrow gives the gold tables: text that CSV must
    quote (commas, quotes, a line break, a backslash, CJK), an empty string beside NULL, the extremes of floats,
    decimals at their scale, UTC timestamps with microseconds; NULL in every nullable column of the last row."""
    from datetime import datetime, timezone
    from decimal import Decimal

    from sqlalchemy import BigInteger, Boolean, Date, DateTime, Float, Integer, Numeric, SmallInteger, String

    texts = ['a,"b"\nc\\d', "", "退款 ü"]
    columns = {}
    for column in table.columns:
        kind, last_null = column.type, column.nullable and not column.primary_key
        if isinstance(kind, (BigInteger, Integer, SmallInteger)):  # Integer covers both; kept for clarity
            values, arrow = [index + 1 if column.primary_key else (-2, 7, 3)[index % 3] for index in range(count)], pa.int64()
        elif isinstance(kind, Float):
            values, arrow = [(0.1, 2 / 3, 1e-300)[index % 3] for index in range(count)], pa.float64()
        elif isinstance(kind, Numeric):
            quantum = Decimal(1).scaleb(-(kind.scale or 0))
            values = [(Decimal("12.345"), Decimal("-0.5"), Decimal("0"))[index % 3].quantize(quantum) for index in range(count)]
            arrow = pa.decimal128(kind.precision or 18, kind.scale or 0)
        elif isinstance(kind, DateTime):
            values = [datetime(2026, 11, 26, 23, 59, 58, 123456 + index, tzinfo=timezone.utc) for index in range(count)]
            arrow = pa.timestamp("us", tz="UTC")
        elif isinstance(kind, Date):
            values, arrow = [run_date if column.name == "as_of" else date(2026, 1, 1 + index) for index in range(count)], pa.date32()
        elif isinstance(kind, Boolean):
            values, arrow = [index % 2 == 0 for index in range(count)], pa.bool_()
        elif isinstance(kind, String):
            values = [(f"k{index}" if column.primary_key else texts[index % 3])[: kind.length or None] for index in range(count)]
            arrow = pa.string()
        else:
            raise AssertionError(f"{table.name}.{column.name}: no awkward value for {kind!r}")
        if last_null:
            values[-1] = None
        columns[column.name] = pa.array(values, arrow)
    return pa.table(columns)


def test_every_crm_table_reads_back_from_postgresql_exactly_as_published(postgres):
    """PostgreSQL gets the rows by COPY (CSV): every value of every CRM table comes back as it went in, NULL
    apart from the empty string, timestamps as their UTC time whatever the session's time zone."""
    from datetime import timezone

    postgres.create_database("publish_copy")
    url = postgres.url("publish_copy")
    metadata = crm_metadata("crm")
    run_date = date(2026, 11, 26)
    rows = {table: awkward_rows(table, run_date) for table in metadata.sorted_tables}
    engine = create_engine(url, connect_args={"options": "-c timezone=America/New_York"})
    counts = publish.replace_tables(engine, metadata, rows, run_date)
    assert all(counts[table.name] == 3 for table in rows)
    with engine.connect() as connection:
        for table, data in rows.items():
            back = [dict(row._mapping) for row in connection.execute(select(table))]
            expected = [
                {name: value.astimezone(timezone.utc).replace(tzinfo=None) if hasattr(value, "tzinfo") and value.tzinfo else value
                 for name, value in row.items()}
                for row in data.to_pylist()
            ]  # fmt: skip
            assert sorted(back, key=repr) == sorted(expected, key=repr), table.name


def test_a_publication_to_postgresql_that_fails_midway_leaves_the_previous_rows(postgres, monkeypatch):
    postgres.create_database("publish_copy_fails")
    url = postgres.url("publish_copy_fails")
    engine = create_engine(url)
    table = crm_metadata("crm").tables["crm.customer_segments"]
    replace_rows(engine, table, segments(date(2026, 11, 25), [1, 2, 3], "night-1"), date(2026, 11, 25))
    monkeypatch.setattr(publish, "COPY_BATCH_ROWS", 2)
    # The second COPY repeats a key: the database refuses it after the first one went in.
    with pytest.raises(Exception, match="duplicate key"):
        replace_rows(engine, table, segments(date(2026, 11, 26), [4, 5, 4, 6], "night-2"), date(2026, 11, 26))
    assert published(engine, table) == [(1, "night-1"), (2, "night-1"), (3, "night-1")]
