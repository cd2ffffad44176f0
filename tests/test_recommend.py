"""Recommendations (implicit ALS + popularity fallback) and category propensity on a tiny shop whose
answer is known: two groups of customers with distinct tastes, a new customer, and orders after the cutoff."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest
from pyspark.sql import functions as F
from test_features import PURCHASE_STATUSES, silver_frames

from core.config import RecommendSettings
from models.propensity import category_propensity
from models.recommend import (
    POPULAR,
    SIMILAR_CUSTOMERS,
    evaluate_recommendations,
    interactions,
    preferences,
    purchase_lines,
    recommendations,
)

AS_OF = date(2026, 6, 30)
BOOKS, GARDEN = (1, 2, 3), (4, 5, 6)
CATEGORY = {**{p: "books" for p in BOOKS}, **{p: "garden" for p in GARDEN}}
OPTIONS = RecommendSettings(
    top_n=3,
    rank=2,
    max_iter=5,
    reg_param=0.1,
    alpha=10.0,
    exclude_bought=True,
    popularity_days=90,
    holdout_days=10,
    top_categories=2,
    seed=23,
    event_weights={"view": 0.1, "add_to_cart": 0.5},
    event_days=90,
)


def shop(extra_orders: list[tuple[int, str, datetime, tuple[int, ...]]] = ()) -> dict[str, list[dict]]:
    """Customers 1-4 buy books, 5-8 garden, twice each (May and June, before 2026-06-20); customer 1 never
    bought book 3 (only a cancelled order of it), customer 5 never garden product 6; customer 9 is new.
    Product 4 is the most bought (customer 6 buys it once more). `extra_orders`: (customer, status, when, products)."""

    def basket(customer: int) -> tuple[int, ...]:
        group = BOOKS if customer <= 4 else GARDEN
        return group[:2] if customer in (1, 5) else group

    plan = [(c, "delivered", datetime(2026, 5, 1 + c), basket(c)) for c in range(1, 9)]
    plan += [(c, "delivered", datetime(2026, 6, 1 + c), basket(c)[:2]) for c in range(1, 9)]
    plan += [(1, "cancelled", datetime(2026, 6, 12), (3,)), (6, "delivered", datetime(2026, 6, 14), (4,)), *extra_orders]
    orders, items = [], []
    for order_id, (customer, status, when, products) in enumerate(plan, start=1):
        orders.append(
            {
                "id": order_id,
                "customer_id": customer,
                "status": status,
                "total_amount": Decimal("20.00"),
                "created_at": when,
                "updated_at": when,
            }
        )
        items += [
            {
                "id": order_id * 10 + i,
                "order_id": order_id,
                "product_id": p,
                "quantity": 1,
                "unit_price": Decimal("10.00"),
                "created_at": when,
                "updated_at": when,
            }
            for i, p in enumerate(products)
        ]
    return {
        "customers": [{"id": c, "created_at": datetime(2026, 1, 1), "updated_at": datetime(2026, 1, 1)} for c in range(1, 10)],
        "products": [
            {"id": p, "category": c, "price": Decimal("10.00"), "created_at": datetime(2025, 1, 1), "updated_at": datetime(2025, 1, 1)}
            for p, c in CATEGORY.items()
        ],
        "orders": orders,
        "order_items": items,
    }


@pytest.fixture(scope="module")
def silver(spark):
    return silver_frames(spark, shop())


@pytest.fixture(scope="module")
def recommended(spark, silver):
    customers = spark.createDataFrame([(c,) for c in range(1, 10)], "customer_id long")
    rows = recommendations(silver, customers, AS_OF, PURCHASE_STATUSES, OPTIONS).collect()
    return {
        c: [(r["rank"], r["product_id"], r["reason"], r["score"]) for r in sorted(rows, key=lambda r: r["rank"]) if r["customer_id"] == c]
        for c in range(1, 10)
    }


def test_als_recommends_the_groups_product_a_member_has_not_bought(recommended):
    assert recommended[1][0][:3] == (1, 3, SIMILAR_CUSTOMERS)
    assert recommended[5][0][:3] == (1, 6, SIMILAR_CUSTOMERS)


def test_products_already_bought_are_not_recommended(silver, recommended):
    bought = {(r["customer_id"], r["product_id"]) for r in purchase_lines(silver, AS_OF, PURCHASE_STATUSES).collect()}
    proposed = {(c, product) for c, rows in recommended.items() for _, product, _, _ in rows}
    assert (1, 1) in bought and not bought & proposed
    # Customer 2 bought all three books: what remains is the garden.
    assert sorted(product for _, product, _, _ in recommended[2]) == list(GARDEN)


def test_without_exclusion_bought_products_may_come_back(spark, silver):
    customers = spark.createDataFrame([(1,)], "customer_id long")
    options = OPTIONS.model_copy(update={"exclude_bought": False})
    rows = recommendations(silver, customers, AS_OF, PURCHASE_STATUSES, options).collect()
    assert {r["product_id"] for r in rows} == set(BOOKS)


def test_a_new_customer_gets_the_most_bought_products_as_popular(recommended):
    # Lines in the last 90 days: product 4 in 9, products 1, 2 and 5 in 8 each (ties: by id), of 39.
    assert [(rank, product, reason) for rank, product, reason, _ in recommended[9]] == [(1, 4, POPULAR), (2, 1, POPULAR), (3, 2, POPULAR)]
    assert recommended[9][0][3] == pytest.approx(9 / 39)


def test_every_customer_gets_top_n_ranks(recommended):
    assert {c: [rank for rank, *_ in rows] for c, rows in recommended.items()} == {c: [1, 2, 3] for c in range(1, 10)}


def test_the_time_split_fits_on_nothing_after_the_cutoff(spark):
    # After the cutoff (2026-06-20) customer 1 buys book 3; a later order (after as_of) does not count.
    silver = silver_frames(spark, shop([(1, "delivered", datetime(2026, 6, 25), (3,)), (5, "delivered", datetime(2026, 7, 2), (6,))]))
    cutoff_pairs = interactions(purchase_lines(silver, date(2026, 6, 20), PURCHASE_STATUSES))
    assert cutoff_pairs.where((F.col("customer_id") == 1) & (F.col("product_id") == 3)).count() == 0
    figures = evaluate_recommendations(silver, AS_OF, PURCHASE_STATUSES, OPTIONS, k=1)
    assert figures["cutoff"] == "2026-06-20"
    assert figures["train_interactions"] == cutoff_pairs.count() == 4 * 3 - 1 + 4 * 3 - 1
    # Only customer 1 bought in the holdout (book 3): ALS proposes it, popularity the garden's product 4.
    assert (figures["als_customers"], figures["als_precision_at_1"], figures["als_recall_at_1"]) == (1, 1.0, 1.0)
    assert (figures["popularity_precision_at_1"], figures["popularity_recall_at_1"]) == (0.0, 0.0)


def test_without_a_new_product_bought_in_the_holdout_nothing_is_judged(spark, settings):
    # A shop of one product (CDNOW: "CD"): every later order repeats what the customer bought, so with
    # exclude_bought no customer has anything to find, and recall would be 0/0.
    from jobs.recommend import evaluate_recommendations as judge

    silver = silver_frames(spark, shop([(2, "delivered", datetime(2026, 6, 25), (1,)), (6, "delivered", datetime(2026, 6, 26), (4,))]))
    assert evaluate_recommendations(silver, AS_OF, PURCHASE_STATUSES, OPTIONS, k=1)["popularity_customers"] == 0
    assert judge(silver, AS_OF, settings.model_copy(update={"recommend": OPTIONS}), "run-1") == ({}, None)


def browsing(spark, rows):
    """silver/events rows: (customer, product, event_type, when)."""
    return spark.createDataFrame(
        [(f"e{i}", customer, product, CATEGORY[product], kind, when) for i, (customer, product, kind, when) in enumerate(rows)],
        "event_id string, customer_id long, product_id long, category string, event_type string, occurred_at timestamp",
    )


def test_a_customer_who_only_browsed_gets_recommendations_from_what_they_browsed(spark, silver):
    # Customer 9 never bought, but viewed garden products 5 and 6 and put 6 in the cart; a view after as_of
    # and one older than event_days do not count.
    events = browsing(
        spark,
        [
            (9, 5, "view", datetime(2026, 6, 20)),
            (9, 6, "view", datetime(2026, 6, 21)),
            (9, 6, "add_to_cart", datetime(2026, 6, 21)),
            (9, 1, "view", datetime(2026, 7, 1)),
            (9, 2, "view", datetime(2026, 1, 2)),
        ],
    )
    customers = spark.createDataFrame([(9,)], "customer_id long")
    rows = recommendations({**silver, "events": events}, customers, AS_OF, PURCHASE_STATUSES, OPTIONS).collect()
    ranked = [(r["product_id"], r["reason"]) for r in sorted(rows, key=lambda r: r["rank"])]
    assert ranked[0][1] == SIMILAR_CUSTOMERS and {product for product, _ in ranked[:3]} <= set(GARDEN)
    observed = {
        (r["customer_id"], r["product_id"]): r["preference"]
        for r in preferences(interactions(purchase_lines(silver, AS_OF, PURCHASE_STATUSES)), events, AS_OF, OPTIONS).collect()
    }
    assert observed[(9, 6)] == pytest.approx(0.6) and observed[(9, 5)] == pytest.approx(0.1)
    assert (9, 1) not in observed and (9, 2) not in observed
    assert observed[(1, 1)] == 2.0  # purchases: one per order


def test_with_events_the_evaluation_also_measures_als_on_purchases_alone(spark):
    silver = silver_frames(spark, shop([(1, "delivered", datetime(2026, 6, 25), (3,))]))
    events = browsing(spark, [(1, 3, "view", datetime(2026, 6, 18))])
    figures = evaluate_recommendations({**silver, "events": events}, AS_OF, PURCHASE_STATUSES, OPTIONS, k=1)
    assert figures["als_recall_at_1"] == 1.0 and "als_purchases_only_recall_at_1" in figures
    assert figures["train_observations"] == figures["train_interactions"] + 1  # (1, 3): viewed, not bought


def test_propensity_features_count_each_categorys_views_of_the_last_30_days(spark, silver):
    from models.propensity import category_features

    events = browsing(
        spark,
        [
            (1, 4, "view", datetime(2026, 6, 20)),
            (1, 5, "view", datetime(2026, 6, 25)),
            (1, 6, "add_to_cart", datetime(2026, 6, 25)),
            (1, 2, "view", datetime(2026, 5, 1)),
        ],
    )
    features = category_features({**silver, "events": events}, AS_OF, PURCHASE_STATUSES, ["books", "garden"])
    assert (features.loc[1, "views_garden"], features.loc[1, "views_books"]) == (2.0, 0.0)  # the May view is older
    assert features.loc[2, "views_garden"] == 0.0
    assert "views_books" in category_features(silver, AS_OF, PURCHASE_STATUSES, ["books", "garden"])  # 0 without events


def test_propensity_ranks_a_customers_usual_category_first(silver):
    top = category_propensity(silver, AS_OF, 30, PURCHASE_STATUSES, OPTIONS)
    assert list(top.columns) == ["customer_id", "rank", "category", "probability"]
    first = top[top["rank"] == 1].set_index("customer_id")["category"].to_dict()
    assert {c: first[c] for c in range(1, 9)} == {**{c: "books" for c in range(1, 5)}, **{c: "garden" for c in range(5, 9)}}
    assert top.groupby("customer_id")["rank"].apply(list).to_dict() == {c: [1, 2] for c in range(1, 10)}
