"""One night on a small SQLite shop with rough rows: a NULL key, a key held by two different rows, a malformed
e-mail, a name that is not UTF-8 and an amount that is not a number. The night goes on; each is quarantined
with a reason naming table, column and value; the customers with a bad field keep their orders and reach the CRM.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from conftest import night_started_with_the_session, run_crm, session_night

pytestmark = pytest.mark.e2e

RUN_DATE = date(2026, 11, 26)
STAMP = "2026-11-20 10:00:00"


def without_key_constraints(connection: sqlite3.Connection, table: str) -> None:
    """Rebuild `table` without its primary key, as a shop whose key column is not declared unique or required."""
    (ddl,) = connection.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
    loose = ddl.replace("id BIGINT NOT NULL", "id BIGINT").replace(", \n\tPRIMARY KEY (id)", "").replace(f"TABLE {table}", "TABLE loose")
    assert "PRIMARY KEY" not in loose, loose
    connection.executescript(f"{loose}; INSERT INTO loose SELECT * FROM {table}; DROP TABLE {table}; ALTER TABLE loose RENAME TO {table};")


def plant_rough_rows(shop: Path) -> dict[str, int]:
    """The rough rows, planted in the generated shop; returns the keys involved."""
    with sqlite3.connect(shop) as connection:
        # The two customers with the most orders (and reviews) get a bad field; a third's order an amount 'abc'.
        busiest = [
            row[0]
            for row in connection.execute(
                "SELECT customer_id FROM orders GROUP BY customer_id ORDER BY count(*) DESC, customer_id LIMIT 3"
            ).fetchall()
        ]
        bad_email, bad_name, other = busiest
        (abc_order,) = connection.execute("SELECT min(id) FROM orders WHERE customer_id = ?", (other,)).fetchone()
        (twice,) = connection.execute("SELECT max(id) + 1 FROM customers").fetchone()
        without_key_constraints(connection, "customers")
        connection.execute("UPDATE customers SET email = 'not-an-email' WHERE id = ?", (bad_email,))
        connection.execute("UPDATE customers SET first_name = CAST(X'4AFF65' AS TEXT) WHERE id = ?", (bad_name,))
        connection.execute("UPDATE orders SET total_amount = 'abc' WHERE id = ?", (abc_order,))
        columns = "id, email, first_name, last_name, language, country, accepts_marketing, created_at, updated_at"
        insert = f"INSERT INTO customers ({columns}) VALUES (?, ?, 'Twin', 'Key', 'en', 'GB', 1, ?, ?)"
        connection.execute(insert, (None, "no.key@example.com", STAMP, STAMP))
        connection.execute(insert, (twice, "first.twin@example.com", STAMP, STAMP))
        connection.execute(insert, (twice, "second.twin@example.com", STAMP, STAMP))
        orders = {
            customer: connection.execute("SELECT count(*) FROM orders WHERE customer_id = ?", (customer,)).fetchone()[0]
            for customer in (bad_email, bad_name)
        }
        reviews = {
            customer: connection.execute("SELECT count(*) FROM reviews WHERE customer_id = ?", (customer,)).fetchone()[0]
            for customer in (bad_email, bad_name)
        }
    return {"bad_email": bad_email, "bad_name": bad_name, "abc_order": abc_order, "twice": twice, "orders": orders, "reviews": reviews}


@night_started_with_the_session("rough_night")
def run_the_rough_night(tmp_path_factory) -> dict:
    data_dir = tmp_path_factory.mktemp("rough")
    env = {"CRM_ENV": "test", "CRM_DATA_DIR": str(data_dir)}
    run_crm("generate-shop", "--customers", "60", "--seed", "11", "--end-date", RUN_DATE.isoformat(), env=env)
    planted = plant_rough_rows(data_dir / "shop.sqlite")
    result = run_crm("run", "--date", RUN_DATE.isoformat(), env=env, timeout=3600)  # fails the test if the night fails
    return {"data_dir": data_dir, "planted": planted, "stdout": result.stdout}


@pytest.fixture(scope="module")
def rough_night(request):
    """The rough shop's night (started with the session: tests/conftest.py)."""
    return session_night(request, "rough_night")


def quarantine(spark, data_dir: Path, table: str) -> list[dict]:
    from core.lake import Lake

    rows = Lake(spark, data_dir / "lake").read("silver", f"_quarantine/{table}").collect()
    return [{key: row[key] for key in ("id", "rule", "column", "reason")} for row in rows]


def test_each_rough_row_is_quarantined_with_a_reason_naming_table_column_and_value(rough_night, spark):
    data_dir, planted = rough_night["data_dir"], rough_night["planted"]
    customers = sorted(quarantine(spark, data_dir, "customers"), key=lambda row: (row["rule"], str(row["id"])))
    twice = planted["twice"]
    twin_reason = (
        f"customers.id = {twice}: 2 different rows with this key in the batch "
        "(every copy quarantined; silver keeps the version it had, if any)"
    )
    assert customers == [
        {"id": twice, "rule": "duplicate_key", "column": None, "reason": twin_reason},
        {"id": twice, "rule": "duplicate_key", "column": None, "reason": twin_reason},
        {
            "id": planted["bad_email"],
            "rule": "invalid_email",
            "column": "email",
            "reason": f"customers.email (id {planted['bad_email']}) = 'not-an-email': not an e-mail address",
        },
        {"id": None, "rule": "null_key", "column": None, "reason": "customers.id is null"},
        {
            "id": planted["bad_name"],
            "rule": "wrong_type",
            "column": "first_name",
            "reason": f"customers.first_name (id {planted['bad_name']}) = b'J\\xffe': not valid UTF-8 text",
        },
    ]
    orders = [row for row in quarantine(spark, data_dir, "orders") if row["id"] == planted["abc_order"]]
    assert orders == [
        {"id": planted["abc_order"], "rule": "wrong_type", "column": None, "reason": "orders.total_amount = 'abc': not a number"}
    ]

    # The bronze gate saw the row without id, recorded it as a warning and let the night go on.
    bronze = json.loads((data_dir / "quality" / RUN_DATE.isoformat() / "bronze.json").read_text())
    assert bronze["passed"] is True
    assert [(w["column"], w["unexpected_count"]) for w in bronze["tables"]["customers"]["warnings"]] == [("id", 1)]


def test_customers_with_a_bad_field_keep_their_orders_and_reach_the_crm(rough_night, spark):
    from pyspark.sql import functions as F

    from core.lake import Lake

    data_dir, planted = rough_night["data_dir"], rough_night["planted"]
    lake = Lake(spark, data_dir / "lake")
    kept = (planted["bad_email"], planted["bad_name"])
    silver = {row["id"]: row for row in lake.read("silver", "customers").where(F.col("id").isin(*kept)).collect()}
    assert silver[planted["bad_email"]]["email"] is None and silver[planted["bad_email"]]["first_name"]
    assert silver[planted["bad_name"]]["first_name"] is None and silver[planted["bad_name"]]["email"]
    for customer in kept:
        assert lake.read("silver", "orders").where(F.col("customer_id") == customer).count() == planted["orders"][customer]
        assert lake.read("silver", "reviews").where(F.col("customer_id") == customer).count() == planted["reviews"][customer]
    assert lake.read("silver", "customers").where(F.col("id") == planted["twice"]).count() == 0  # new and ambiguous: none applied

    with create_engine(f"sqlite:///{data_dir / 'crm.sqlite'}").connect() as connection:
        profile = {
            row["customer_id"]: dict(row)
            for row in connection.execute(
                text(f"SELECT * FROM customer_profile WHERE customer_id IN ({', '.join(str(key) for key in kept)})")
            ).mappings()
        }
    assert sorted(profile) == sorted(kept)
    assert profile[planted["bad_email"]]["email"] is None and profile[planted["bad_name"]]["first_name"] is None
    for customer in kept:
        assert profile[customer]["orders"] > 0 and profile[customer]["reviews"] == planted["reviews"][customer]


def test_the_report_counts_each_rule_per_table_and_field(rough_night):
    import re

    markup = (rough_night["data_dir"] / "reports" / RUN_DATE.isoformat() / "index.html").read_text(encoding="utf-8")
    quality = re.sub(r"<[^>]+>", " ", markup[markup.index('id="quality"') :])
    quality = " ".join(quality.split())
    for counted in (
        "customers duplicate_key whole row 2",
        "customers invalid_email email 1",
        "customers null_key whole row 1",
        "customers wrong_type first_name 1",
        "orders wrong_type whole row 1",
    ):
        assert counted in quality, counted
