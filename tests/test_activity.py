"""Browsing activity per customer as of a date: windows, visits, conversion, categories, browse abandonment."""

from __future__ import annotations

from datetime import date, datetime

from features.activity import ACTIVITY_COLUMNS, activity_counts, customer_activity

AS_OF = date(2026, 11, 26)
EVENTS_SCHEMA = (
    "event_id string, customer_id long, visit_id string, event_type string, product_id long, category string, occurred_at timestamp"
)


def events(spark, rows):
    return spark.createDataFrame(rows, EVENTS_SCHEMA)


def test_the_activity_of_one_customer_as_of_a_date(spark):
    rows = [
        # 2 days before: one visit viewing shoes 7 twice and carting it; it was not bought since
        ("e1", 1, "s1#1", "view", 7, "shoes", datetime(2026, 11, 24, 10)),
        ("e2", 1, "s1#1", "view", 7, "shoes", datetime(2026, 11, 24, 10, 1)),
        ("e3", 1, "s1#1", "add_to_cart", 7, "shoes", datetime(2026, 11, 24, 10, 2)),
        ("e4", 1, "s1#1", "search", None, None, datetime(2026, 11, 24, 10, 3)),
        # 10 days before: a book viewed, then bought the next day (converted, not abandoned)
        ("e5", 1, "s2#1", "view", 9, "books", datetime(2026, 11, 16, 9)),
        # 40 days before: a visit of the previous 30 days
        ("e6", 1, "s3#1", "view", 11, "books", datetime(2026, 10, 17, 9)),
        # after as_of: not known yet
        ("e7", 1, "s4#1", "view", 12, "toys", datetime(2026, 11, 27, 0, 0, 1)),
        # an anonymous event (never logged in) counts for nobody
        ("e8", None, "s5#1", "view", 7, "shoes", datetime(2026, 11, 25)),
    ]
    customers = spark.createDataFrame([(1,), (2,)], "customer_id long")
    bought = spark.createDataFrame(
        [(1, 9, 1, datetime(2026, 11, 17, 12))], "customer_id long, product_id long, quantity int, created_at timestamp"
    )
    result = {row["customer_id"]: row.asDict() for row in customer_activity(events(spark, rows), customers, bought, AS_OF, 7, 3).collect()}
    assert result[1] == {
        "as_of": AS_OF,
        "customer_id": 1,
        "views_7d": 2,
        "views_30d": 3,
        "visits_7d": 1,
        "visits_30d": 2,
        "visits_previous_30d": 1,
        "searches_30d": 1,
        "cart_adds_30d": 1,
        "last_visit_at": datetime(2026, 11, 24, 10, 3),
        "days_since_last_visit": 2,
        "view_to_purchase_30d": 0.5,  # shoes 7 and book 9 viewed; the book bought
        "top_categories": "shoes, books",  # 2 views of shoes, 1 of books (the 40-day-old view is outside)
        "browse_abandoned_products": 1,
        "browse_abandoned_product_ids": "7",
        "cart_abandoned_products": 1,
    }
    # A customer without events: counts 0, times and ratios null.
    assert result[2]["views_30d"] == 0 and result[2]["last_visit_at"] is None and result[2]["top_categories"] is None
    assert [name for name in result[2]][2:] == [name for name, _, _ in ACTIVITY_COLUMNS]


def test_without_events_every_customer_has_zero_counts(spark):
    customers = spark.createDataFrame([(1,)], "customer_id long")
    bought = spark.createDataFrame([], "customer_id long, product_id long, quantity int, created_at timestamp")
    [row] = customer_activity(None, customers, bought, AS_OF, 7, 3).collect()
    assert row["views_30d"] == 0 and row["browse_abandoned_products"] == 0 and row["days_since_last_visit"] is None
    [counts] = activity_counts(None, customers, AS_OF).collect()
    assert counts.asDict() == {
        "customer_id": 1,
        "views_30d": 0,
        "visits_30d": 0,
        "visits_previous_30d": 0,
        "cart_adds_30d": 0,
        "days_since_last_visit": None,
    }
