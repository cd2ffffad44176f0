"""Customer features: point in time (nothing after as_of leaks in), their meaning, and the registry."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.feature_schema import FEATURES, markdown
from core.rundate import end_of
from core.shop_schema import metadata as shop_metadata
from core.types import canonical_schema
from features.customer import INPUT_TABLES, customer_features

PURCHASE_STATUSES = ["placed", "paid", "shipped", "delivered"]
START = datetime(2026, 1, 1)
CATEGORIES = {1: "books", 2: "garden", 3: "toys"}


def silver_frames(spark, rows: dict[str, list[dict]]) -> dict:
    """Silver DataFrames with the canonical schema; missing columns are null."""
    frames = {}
    for name in INPUT_TABLES:
        schema = canonical_schema(shop_metadata.tables[name])
        records = [tuple(row.get(field.name) for field in schema.fields) for row in rows.get(name, [])]
        frames[name] = spark.createDataFrame(records, schema)
    return frames


#: Every generated history is shifted in time so that its `as_of_day` falls on this day.
AS_OF = (START + timedelta(days=60)).date()
#: Ids of the i-th history in one example start at i * ID_STRIDE, so the histories never share a row.
ID_STRIDE = 1000


# ---- generated shop histories -------------------------------------------------------------------------------
# Each row is created at some moment and may reach its final state later (an order is cancelled, a cart
# abandoned, an inquiry resolved). The shop as it is today holds the final state; the shop as it was at
# as_of holds the rows created by then, each in the state it had then.

order_events = st.fixed_dictionaries(
    {
        "customer": st.integers(1, 3),
        "day": st.integers(0, 50),
        "hour": st.integers(0, 23),
        "final": st.sampled_from(["placed", "paid", "shipped", "delivered", "cancelled", "returned"]),
        "settles_after_days": st.integers(0, 20),
        "amount": st.integers(1, 50_000),
        "coupon": st.booleans(),
        "lines": st.lists(st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 9_000)), min_size=1, max_size=3),
    }
)
cart_events = st.fixed_dictionaries(
    {
        "customer": st.integers(1, 3),
        "day": st.integers(0, 50),
        "final": st.sampled_from(["open", "abandoned", "converted"]),
        "settles_after_days": st.integers(0, 20),
        "lines": st.lists(st.tuples(st.integers(1, 3), st.integers(1, 3)), min_size=1, max_size=2),
    }
)
review_events = st.fixed_dictionaries({"customer": st.integers(1, 3), "day": st.integers(0, 50), "rating": st.integers(1, 5)})
inquiry_events = st.fixed_dictionaries(
    {"customer": st.integers(1, 3), "day": st.integers(0, 50), "resolved_after_days": st.none() | st.integers(0, 15)}
)
histories = st.fixed_dictionaries(
    {
        "registered": st.lists(st.integers(0, 40), min_size=3, max_size=3),
        "orders": st.lists(order_events, max_size=8),
        "carts": st.lists(cart_events, max_size=3),
        "reviews": st.lists(review_events, max_size=3),
        "inquiries": st.lists(inquiry_events, max_size=3),
        "as_of_day": st.integers(0, 60),
    }
)


def shop_rows(histories: list[dict], as_of: date | None) -> dict[str, list[dict]]:
    """The shop of many histories (see `one_history`), today (`as_of` None) or as it was at the end of `as_of`."""
    rows: dict[str, list[dict]] = {name: [] for name in INPUT_TABLES}
    rows["products"] = [
        {"id": i, "category": c, "price": Decimal("1.00"), "created_at": START, "updated_at": START} for i, c in CATEGORIES.items()
    ]
    for index, history in enumerate(histories):
        shift = timedelta(days=(AS_OF - START.date()).days - history["as_of_day"])
        for name, table in one_history(history, as_of, shift).items():
            for row in table:
                for key in ("id", "customer_id", "order_id", "cart_id"):
                    if key in row:
                        row[key] += index * ID_STRIDE
            rows[name] += table
    return rows


def one_history(history: dict, as_of: date | None, shift: timedelta) -> dict[str, list[dict]]:
    """One history's rows (ids from 1, times moved by `shift`), today or at the end of `as_of`."""
    cutoff = end_of(as_of).replace(tzinfo=None) if as_of else datetime.max  # the rows' times are naive UTC

    def at(day: int, hour: int = 12) -> datetime:
        return START + shift + timedelta(days=day, hours=hour)

    def state(created: datetime, settled: datetime, final: dict, initial: dict) -> dict:
        return {**final, "updated_at": settled} if settled < cutoff else {**initial, "updated_at": created}

    rows: dict[str, list[dict]] = {name: [] for name in INPUT_TABLES if name != "products"}
    for customer, day in enumerate(history["registered"], start=1):
        rows["customers"].append({"id": customer, "created_at": at(day, 0), "updated_at": at(day, 0)})
    line_id = 0
    for order_id, event in enumerate(history["orders"], start=1):
        created = at(event["day"], event["hour"])
        settled = created + timedelta(days=event["settles_after_days"], minutes=1)
        rows["orders"].append(
            {
                "id": order_id,
                "customer_id": event["customer"],
                "created_at": created,
                "total_amount": Decimal(event["amount"]) / 100,
                "coupon_id": 7 if event["coupon"] else None,
                **state(created, settled, {"status": event["final"]}, {"status": "placed"}),
            }
        )
        for product, quantity, cents in event["lines"]:
            line_id += 1
            rows["order_items"].append(
                {
                    "id": line_id,
                    "order_id": order_id,
                    "product_id": product,
                    "quantity": quantity,
                    "unit_price": Decimal(cents) / 100,
                    "created_at": created,
                    "updated_at": created,
                }
            )
    for cart_id, event in enumerate(history["carts"], start=1):
        created = at(event["day"], 9)
        settled = created + timedelta(days=event["settles_after_days"], minutes=1)
        rows["carts"].append(
            {
                "id": cart_id,
                "customer_id": event["customer"],
                "created_at": created,
                **state(created, settled, {"status": event["final"]}, {"status": "open"}),
            }
        )
        for index, (product, quantity) in enumerate(event["lines"]):
            rows["cart_items"].append(
                {
                    "id": cart_id * 10 + index,
                    "cart_id": cart_id,
                    "product_id": product,
                    "quantity": quantity,
                    "unit_price": Decimal("2.50"),
                    "created_at": created,
                    "updated_at": created,
                }
            )
    for review_id, event in enumerate(history["reviews"], start=1):
        created = at(event["day"], 18)
        rows["reviews"].append(
            {
                "id": review_id,
                "customer_id": event["customer"],
                "product_id": 1,
                "rating": event["rating"],
                "created_at": created,
                "updated_at": created,
            }
        )
    for inquiry_id, event in enumerate(history["inquiries"], start=1):
        created = at(event["day"], 15)
        delay = event["resolved_after_days"]
        resolved = None if delay is None else created + timedelta(days=delay, hours=1)
        rows["inquiries"].append(
            {
                "id": inquiry_id,
                "customer_id": event["customer"],
                "created_at": created,
                **state(
                    created,
                    resolved or datetime.max,
                    {"status": "resolved", "resolved_at": resolved},
                    {"status": "open", "resolved_at": None},
                ),
            }
        )
    return {name: [row for row in table if row["created_at"] < cutoff] for name, table in rows.items()}


def collected(frame) -> list[dict]:
    return sorted((row.asDict() for row in frame.collect()), key=lambda row: row["customer_id"])


# Spark's fixed cost per query dominates on data this small, so each example holds up to 25 histories
# (shifted to one as_of, with ids of their own): 6 examples check about 100 histories.
@settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(many=st.lists(histories, min_size=1, max_size=25))
def test_features_at_as_of_from_all_data_equal_those_from_the_data_cut_at_as_of(spark, many):
    from_all = customer_features(silver_frames(spark, shop_rows(many, None)), AS_OF, PURCHASE_STATUSES)
    from_cut = customer_features(silver_frames(spark, shop_rows(many, AS_OF)), AS_OF, PURCHASE_STATUSES)
    assert collected(from_all) == collected(from_cut)


def test_features_of_one_customer_mean_what_the_registry_says(spark):
    as_of = date(2026, 6, 30)
    rows = {
        "customers": [{"id": 1, "created_at": datetime(2026, 1, 10), "updated_at": datetime(2026, 1, 10)}],
        "products": [{"id": p, "category": c, "created_at": START, "updated_at": START} for p, c in CATEGORIES.items()],
        "orders": [
            # day 0 (100 days before as_of), +30 days, +60 days: gaps of 30 and 30 days
            {
                "id": 1,
                "customer_id": 1,
                "status": "delivered",
                "total_amount": Decimal("40.00"),
                "coupon_id": 5,
                "created_at": datetime(2026, 3, 22, 10),
                "updated_at": datetime(2026, 3, 25),
            },
            {
                "id": 2,
                "customer_id": 1,
                "status": "delivered",
                "total_amount": Decimal("60.00"),
                "created_at": datetime(2026, 4, 21, 10),
                "updated_at": datetime(2026, 4, 25),
            },
            # cancelled on July 2nd, after as_of: still a purchase at as_of
            {
                "id": 3,
                "customer_id": 1,
                "status": "cancelled",
                "total_amount": Decimal("20.00"),
                "created_at": datetime(2026, 5, 21, 10),
                "updated_at": datetime(2026, 7, 2),
            },
            {
                "id": 4,
                "customer_id": 1,
                "status": "returned",
                "total_amount": Decimal("99.00"),
                "created_at": datetime(2026, 2, 1),
                "updated_at": datetime(2026, 2, 20),
            },
            {
                "id": 5,
                "customer_id": 1,
                "status": "paid",
                "total_amount": Decimal("500.00"),  # after as_of
                "created_at": datetime(2026, 7, 1, 0, 0, 1),
                "updated_at": datetime(2026, 7, 1, 0, 0, 1),
            },
        ],
        "order_items": [
            {"id": 1, "order_id": 1, "product_id": 1, "quantity": 2, "unit_price": Decimal("20.00")},
            {"id": 2, "order_id": 2, "product_id": 2, "quantity": 1, "unit_price": Decimal("60.00")},
            {"id": 3, "order_id": 3, "product_id": 1, "quantity": 3, "unit_price": Decimal("5.00")},
        ],
        "carts": [
            {"id": 1, "customer_id": 1, "status": "converted", "created_at": datetime(2026, 6, 29), "updated_at": datetime(2026, 7, 3)},
            {"id": 2, "customer_id": 1, "status": "abandoned", "created_at": datetime(2026, 5, 1), "updated_at": datetime(2026, 5, 2)},
        ],
        "cart_items": [
            {"id": 1, "cart_id": 1, "product_id": 3, "quantity": 2, "unit_price": Decimal("7.50")},
            {"id": 2, "cart_id": 2, "product_id": 3, "quantity": 1, "unit_price": Decimal("3.00")},
        ],
        "reviews": [
            {"id": 1, "customer_id": 1, "rating": 4, "created_at": datetime(2026, 4, 1)},
            {"id": 2, "customer_id": 1, "rating": 5, "created_at": datetime(2026, 4, 2)},
        ],
        "inquiries": [
            {"id": 1, "customer_id": 1, "status": "resolved", "resolved_at": datetime(2026, 7, 5), "created_at": datetime(2026, 6, 1)}
        ],
    }
    for name in ("order_items", "cart_items"):
        for row in rows[name]:
            row.setdefault("created_at", datetime(2026, 1, 1))
    (features,) = collected(customer_features(silver_frames(spark, rows), as_of, PURCHASE_STATUSES))
    assert features == {
        "as_of": as_of,
        "customer_id": 1,
        "recency_days": 40,
        "purchase_count": 3,
        "total_spent": Decimal("120.00"),
        "avg_order_value": Decimal("40.00"),
        "first_order_at": datetime(2026, 3, 22, 10),
        "last_order_at": datetime(2026, 5, 21, 10),
        "tenure_days": 171,
        "mean_days_between_orders": 30.0,
        "std_days_between_orders": 0.0,
        "spend_last_90d": Decimal("80.00"),
        "spend_previous_90d": Decimal("40.00"),
        "spend_trend": 2.0,
        "avg_basket_units": 2.0,
        "favourite_category": "garden",
        "categories_bought": 2,
        "coupon_order_share": round(1 / 3, 4),
        "open_cart_value": Decimal("15.00"),
        "abandoned_cart_value": Decimal("3.00"),
        "cancelled_orders": 0,
        "returned_orders": 1,
        "review_count": 2,
        "avg_rating": 4.5,
        "inquiry_count": 1,
        "open_inquiries": 1,
        "satisfaction_score": -0.125,  # mean of stars (4.5 - 3) / 2 = 0.75 and inquiries -1 / 1 (still open)
        # No events in this lake: the browsing counts are 0 (tests/test_activity.py has them with events).
        "views_30d": 0,
        "visits_30d": 0,
        "visits_previous_30d": 0,
        "cart_adds_30d": 0,
        "days_since_last_visit": None,
    }


def test_the_features_written_are_exactly_the_registry_with_its_types(spark):
    frame = customer_features(silver_frames(spark, {}), date(2026, 1, 1), PURCHASE_STATUSES)
    assert [(name, kind) for name, kind in frame.dtypes] == [(f.name, f.type) for f in FEATURES]


@pytest.mark.parametrize("feature", FEATURES, ids=lambda f: f.name)
def test_every_feature_is_documented(feature):
    assert feature.description and f"`{feature.name}`" in markdown()


@pytest.mark.parametrize(("monetary_value", "total_spent"), [("net", Decimal("60.00")), ("gross", Decimal("100.00"))])
def test_a_credit_note_is_no_purchase_and_is_taken_off_the_money_when_net(spark, monetary_value, total_spent):
    """Two purchases (40 + 60) and a credit note (-40): 2 purchases; spent 60 net, 100 gross. A guest order
    (no customer) makes no row and counts for nobody."""
    as_of = date(2026, 6, 30)

    def order(id, customer_id, total, day):
        return {
            "id": id,
            "customer_id": customer_id,
            "status": "delivered",
            "total_amount": Decimal(total),
            "created_at": datetime(2026, 6, day, 10),
            "updated_at": datetime(2026, 6, day, 10),
        }

    rows = {
        "customers": [{"id": 1, "created_at": datetime(2026, 1, 10), "updated_at": datetime(2026, 1, 10)}],
        "orders": [order(1, 1, "40.00", 1), order(2, 1, "60.00", 10), order(3, 1, "-40.00", 20), order(4, None, "99.00", 21)],
    }
    features = collected(customer_features(silver_frames(spark, rows), as_of, ["delivered"], monetary_value))
    assert [(row["customer_id"], row["purchase_count"], row["total_spent"]) for row in features] == [(1, 2, total_spent)]
    assert features[0]["spend_last_90d"] == total_spent and features[0]["last_order_at"] == datetime(2026, 6, 10, 10)
