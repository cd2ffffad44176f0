"""Purchase histories for BG/NBD and the churn label: per day, net of cancellations and returns, point in time."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from test_features import PURCHASE_STATUSES, silver_frames

from features.purchases import purchase_history, with_future_purchases

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
