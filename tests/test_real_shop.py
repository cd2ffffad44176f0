"""A night on a shop shaped like a real retailer's order log, end to end (`crm run`).

The shop: the generated one written through `conf/mappings/retail.yaml` (no `products.category` and no
`customers.accepts_marketing` column at all), plus what real order logs hold and the generator plants too:
guest orders without a customer, credit notes (a negative total with lines of negative quantity), and an
invoice that repeats a product on several lines. The night must publish, with net monetary values, no
customer made of guest orders, the repeated lines summed, and consent reported as unknown, not as
"unsubscribed".
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

CUSTOMERS = 250
SEED = 11
RUN_DATE = date(2026, 11, 26)
CREDIT_TOTAL = -40.0
NIGHT_TIMEOUT_S = 3600


def add_real_shop_rows(shop: Path) -> dict:
    """Add a credit note for one repeat buyer, a repeated product line in one invoice and two guest orders
    with lines; returns what the test checks them by."""
    with sqlite3.connect(shop) as db:
        # A buyer with several delivered orders, and one of their invoices with a line to repeat.
        customer = db.execute(
            "SELECT customer_id FROM orders WHERE status = 'delivered' AND customer_id IS NOT NULL "
            "AND created_at < '2026-10-01' GROUP BY customer_id HAVING count(*) >= 3 ORDER BY customer_id LIMIT 1"
        ).fetchone()[0]
        order_id, product_id, price, created = db.execute(
            "SELECT o.id, i.product_id, i.unit_price, o.created_at FROM orders o JOIN order_items i ON i.order_id = o.id "
            "WHERE o.customer_id = ? AND o.status = 'delivered' ORDER BY o.id, i.id LIMIT 1",
            (customer,),
        ).fetchone()
        next_order = db.execute("SELECT max(id) + 1 FROM orders").fetchone()[0]
        next_line = db.execute("SELECT max(id) + 1 FROM order_items").fetchone()[0]
        # The credit note: the customer returns 2 units of what they bought, a month later.
        credit_at = "2026-10-15 12:00:00"
        db.execute(
            "INSERT INTO orders (id, customer_id, status, total_amount, currency, coupon_id, created_at, updated_at) "
            "VALUES (?, ?, 'delivered', ?, 'CNY', NULL, ?, ?)",
            (next_order, customer, CREDIT_TOTAL, credit_at, credit_at),
        )
        line = "INSERT INTO order_items (id, order_id, product_id, quantity, unit_price, created_at, updated_at) VALUES "
        db.execute(line + "(?, ?, ?, -2, 20.0, ?, ?)", (next_line, next_order, product_id, credit_at, credit_at))
        # The same product again on another line of the same invoice (3 more units, on purpose).
        db.execute(line + "(?, ?, ?, 3, ?, ?, ?)", (next_line + 1, order_id, product_id, price, created, created))
        # Two guest checkouts of one product, which nobody else need have bought.
        for offset in (1, 2):
            db.execute(
                "INSERT INTO orders (id, customer_id, status, total_amount, currency, coupon_id, created_at, updated_at) "
                "VALUES (?, NULL, 'delivered', 99.0, 'CNY', NULL, '2026-11-20 10:00:00', '2026-11-20 10:00:00')",
                (next_order + offset,),
            )
            db.execute(
                "INSERT INTO order_items (id, order_id, product_id, quantity, unit_price, created_at, updated_at) "
                "VALUES (?, ?, ?, 1, 99.0, '2026-11-20 10:00:00', '2026-11-20 10:00:00')",
                (next_line + 1 + offset, next_order + offset, product_id),
            )
        statuses = "('placed', 'paid', 'shipped', 'delivered')"
        net = db.execute(
            f"SELECT round(sum(total_amount), 2) FROM orders WHERE customer_id = ? AND status IN {statuses} AND created_at < '2026-11-27'",
            (customer,),
        ).fetchone()[0]
        units = db.execute(
            "SELECT sum(quantity) FROM order_items WHERE order_id = ? AND product_id = ?", (order_id, product_id)
        ).fetchone()[0]
        guests = db.execute("SELECT count(*) FROM orders WHERE customer_id IS NULL").fetchone()[0]
        customers = db.execute("SELECT count(*) FROM customers").fetchone()[0]
    return {
        "customer": customer,
        "net": net,
        "order_id": order_id,
        "product_id": product_id,
        "units": units,
        "guests": guests,
        "customers": customers,
    }


@night_started_with_the_session("real_shop_night")
def run_the_real_shop_night(tmp_path_factory) -> dict:
    data = tmp_path_factory.mktemp("real-shop")
    env = {
        "CRM_ENV": "test",
        "CRM_DATA_DIR": str(data),
        "CRM__EXTRACT__MAPPING": "retail",
        "CRM__GENERATOR__EVENTS": "none",
        "CRM__EVENTS__SOURCE": "none",
    }
    run_crm(
        "generate-shop",
        "--customers",
        str(CUSTOMERS),
        "--seed",
        str(SEED),
        "--end-date",
        RUN_DATE.isoformat(),
        "--schema",
        "retail",
        env=env,
    )
    with sqlite3.connect(data / "shop.sqlite") as db:
        columns = {table: {row[1] for row in db.execute(f"PRAGMA table_info({table})")} for table in ("products", "customers")}
    assert "category" not in columns["products"] and "accepts_marketing" not in columns["customers"]
    planted = add_real_shop_rows(data / "shop.sqlite")
    night = run_crm("run", "--date", RUN_DATE.isoformat(), env=env, timeout=NIGHT_TIMEOUT_S)
    return {"data": data, "planted": planted, "stdout": night.stdout}


@pytest.fixture(scope="module")
def real_shop_night(request):
    """The real-shaped shop's night (started with the session: tests/conftest.py)."""
    return session_night(request, "real_shop_night")


def crm(data: Path, sql: str, **params) -> list[dict]:
    with create_engine(f"sqlite:///{data}/crm.sqlite").connect() as connection:
        return [dict(row) for row in connection.execute(text(sql), params).mappings().all()]


def summaries(data: Path) -> dict[str, dict]:
    rows = crm(data, "SELECT stage, summary FROM pipeline_runs WHERE state = 'success' ORDER BY started_at")
    return {row["stage"]: json.loads(row["summary"]) for row in rows if row["summary"]}


def test_the_night_of_a_real_shop_publishes_the_crm_and_the_export(real_shop_night):
    data, planted = real_shop_night["data"], real_shop_night["planted"]
    segments = crm(data, "SELECT customer_id, segment FROM customer_segments")
    assert len(segments) == planted["customers"]  # every customer published, and nobody else
    assert all(row["customer_id"] is not None for row in segments)
    manifest = json.loads((data / "exports" / RUN_DATE.isoformat() / "manifest.json").read_text())
    assert manifest["run_date"] == RUN_DATE.isoformat()
    assert crm(data, "SELECT count(*) AS n FROM recommendations")[0]["n"] > 0


def test_guest_orders_are_kept_and_make_no_customer(real_shop_night, spark):
    from pyspark.sql import functions as F

    from core.lake import Lake

    data, planted = real_shop_night["data"], real_shop_night["planted"]
    lake = Lake(spark, data / "lake")
    assert lake.read("silver", "orders").where(F.col("customer_id").isNull()).count() == planted["guests"]
    quarantined = lake.read("silver", "_quarantine/orders").where(F.col("run_date") == RUN_DATE).groupBy("rule").count().collect()
    assert "null_key" not in {row["rule"] for row in quarantined}
    features = lake.read("gold", "customer_features").where(F.col("as_of") == RUN_DATE)
    assert features.where(F.col("customer_id").isNull()).count() == 0


def test_a_credit_note_is_taken_off_the_customers_monetary_value(real_shop_night):
    data, planted = real_shop_night["data"], real_shop_night["planted"]
    row = crm(data, "SELECT monetary, frequency FROM customer_segments WHERE customer_id = :c", c=planted["customer"])[0]
    assert float(row["monetary"]) == pytest.approx(planted["net"], abs=0.01)
    orders = crm(data, "SELECT count(*) AS n FROM customer_segments WHERE customer_id = :c AND frequency >= 3", c=planted["customer"])
    assert orders[0]["n"] == 1  # the credit note is no order


def test_repeated_lines_of_an_invoice_are_kept_and_summed(real_shop_night, spark):
    from pyspark.sql import functions as F

    from core.lake import Lake

    data, planted = real_shop_night["data"], real_shop_night["planted"]
    lake = Lake(spark, data / "lake")
    lines = lake.read("silver", "order_items").where(
        (F.col("order_id") == planted["order_id"]) & (F.col("product_id") == planted["product_id"])
    )
    assert lines.count() >= 2 and lines.agg(F.sum("quantity")).first()[0] == planted["units"]
    rules = {row["rule"] for row in lake.read("silver", "_quarantine/order_items").select("rule").distinct().collect()}
    assert "duplicate" not in rules


def test_without_categories_and_consent_the_night_says_why_instead_of_failing(real_shop_night):
    data = real_shop_night["data"]
    recommend = summaries(data)["recommend"]
    assert "no product has a category" in recommend["degraded"]["category_propensity"]
    reasons = {row["suppression_reason"] for row in crm(data, "SELECT DISTINCT suppression_reason FROM campaign_audiences")}
    assert "consent_unknown" in reasons and "unsubscribed" not in reasons
    report = (data / "reports" / RUN_DATE.isoformat() / "index.html").read_text()
    assert "consent_unknown" in report and "campaigns.consent_when_missing" in report
