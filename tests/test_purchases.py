"""Purchase histories for BG/NBD and the churn label: per day, net of cancellations and returns, point in time."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from test_features import PURCHASE_STATUSES, silver_frames

from features.purchases import (
    HISTORY_COLUMNS,
    future_purchase_days,
    orders_known_by,
    purchase_history,
    purchase_history_of,
    with_future_purchases,
)

AS_OF = date(2026, 6, 30)


def order(id_: int, customer: int, status: str, amount: str, created: datetime, updated: datetime | None = None) -> dict:
    return {
        "id": id_,
        "customer_id": customer,
        "status": status,
        "total_amount": Decimal(amount),
        "created_at": created,
        "updated_at": updated or created,
    }


ORDERS = [
    # Customer 1: first purchase day with two orders (one purchase day of 30 + 20), a returned order, two
    # repeat days, and an order cancelled only after as_of (a purchase at as_of).
    order(1, 1, "delivered", "30.00", datetime(2026, 3, 1, 9)),
    order(2, 1, "delivered", "20.00", datetime(2026, 3, 1, 17)),
    order(3, 1, "returned", "99.00", datetime(2026, 4, 1), datetime(2026, 4, 10)),
    order(4, 1, "delivered", "40.00", datetime(2026, 5, 1)),
    order(5, 1, "cancelled", "60.00", datetime(2026, 6, 10), datetime(2026, 7, 3)),
    # After as_of: not in the history; a purchase in the horizon for customer 1.
    order(6, 1, "paid", "10.00", datetime(2026, 7, 15)),
    # Customer 2: one purchase; in the horizon only an order cancelled within it.
    order(7, 2, "shipped", "25.00", datetime(2026, 6, 30, 23, 59)),
    order(8, 2, "cancelled", "25.00", datetime(2026, 7, 2), datetime(2026, 7, 5)),
    # Customer 3: only a cancellation before as_of: no history.
    order(9, 3, "cancelled", "80.00", datetime(2026, 2, 1), datetime(2026, 2, 2)),
]


def test_the_history_counts_repeat_purchase_days_in_days_from_order_totals(spark):
    silver = silver_frames(spark, {"orders": ORDERS})
    rows = {row["customer_id"]: row.asDict() for row in purchase_history(silver["orders"], AS_OF, PURCHASE_STATUSES).collect()}
    assert rows == {
        1: {
            "customer_id": 1,
            "repeat_purchase_days": 2,
            "purchase_span_days": 101.0,
            "days_since_first_purchase": 121.0,
            "mean_repeat_order_value": 50.0,
        },
        2: {
            "customer_id": 2,
            "repeat_purchase_days": 0,
            "purchase_span_days": 0.0,
            "days_since_first_purchase": 0.0,
            "mean_repeat_order_value": 0.0,
        },
    }


def test_the_label_counts_purchase_days_in_the_horizon_as_known_at_its_end(spark):
    silver = silver_frames(spark, {"orders": ORDERS})
    customers = spark.createDataFrame([(1,), (2,), (3,)], "customer_id long")
    rows = with_future_purchases(customers, silver["orders"], AS_OF, 30, PURCHASE_STATUSES).orderBy("customer_id")
    assert [tuple(row) for row in rows.collect()] == [(1, 1, False), (2, 0, True), (3, 0, True)]


def shop_orders(seed: int, customers: int = 400, days: int = 400) -> list[dict]:
    """Orders of a shop over `days` days from 2025-06-01: several a day, cancellations and returns settled
    days later (some after the as_of dates below), credit notes, guest orders, amounts in cents that no
    binary fraction holds."""
    rng = np.random.default_rng(seed)
    start = datetime(2025, 6, 1)
    rows = []
    for number in range(1, 2000):
        created = start + timedelta(days=int(rng.integers(0, days)), minutes=int(rng.integers(0, 24 * 60)))
        status = str(rng.choice(["delivered", "paid", "placed", "cancelled", "returned"], p=[0.5, 0.15, 0.1, 0.15, 0.1]))
        amount = f"{rng.integers(-3000, 25000) / 100:.2f}" if rng.random() < 0.05 else f"{rng.integers(1, 25000) / 100:.2f}"
        customer = None if rng.random() < 0.03 else int(rng.integers(1, customers + 1))
        rows.append(order(number, customer, status, amount, created, created + timedelta(days=int(rng.integers(0, 40)))))
    return rows


@pytest.mark.parametrize("monetary_value", ["net", "gross"])
def test_the_pandas_history_and_windows_equal_the_spark_ones_to_the_bit(spark, monetary_value):
    """`jobs.predict` and `jobs.offers` read the orders once and derive every history in pandas: the figures
    must be the ones `purchase_history` and `with_future_purchases` give, exactly, at any as_of and window."""
    rows = shop_orders(seed=22)
    silver = silver_frames(spark, {"orders": rows})
    run_date = date(2026, 6, 30)
    orders = orders_known_by(silver["orders"], run_date).toPandas()
    assert len(orders) == sum(row["created_at"] < datetime(2026, 7, 1) for row in rows)
    for as_of, horizon_days in ((date(2025, 9, 14), 90), (date(2026, 4, 1), 90), (run_date - timedelta(days=30), 30)):
        expected = (
            with_future_purchases(
                purchase_history(silver["orders"], as_of, PURCHASE_STATUSES, monetary_value),
                silver["orders"],
                as_of,
                horizon_days,
                PURCHASE_STATUSES,
            )
            .toPandas()
            .set_index("customer_id")
            .sort_index()
        )
        history = purchase_history_of(orders, as_of, PURCHASE_STATUSES, monetary_value)
        window = future_purchase_days(orders, as_of, horizon_days, PURCHASE_STATUSES).reindex(history.index, fill_value=0)
        assert 0 < (window > 0).sum() < len(history) and 0 < (history["repeat_purchase_days"] > 0).sum() < len(history)
        pd.testing.assert_frame_equal(history, expected[list(HISTORY_COLUMNS[1:])], check_exact=True)
        pd.testing.assert_series_equal(window, expected["purchases_in_horizon"], check_exact=True)
