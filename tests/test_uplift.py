"""Coupon uplift (models/uplift.py): campaign reconstruction, models on a planted effect, Qini, offers."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from models import uplift

STATUSES = ["placed", "paid", "shipped", "delivered"]


def _ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def _tiny_shop(extra_coupons: list[dict] | None = None):
    """Campaign c1, window 2026-03-10..2026-03-16: customer 1 treated, 2 and 3 control, 4 registered too late."""
    customers = pd.DataFrame(
        {"id": [1, 2, 3, 4], "created_at": [_ts("2025-01-01"), _ts("2025-06-01"), _ts("2026-03-09 23:59:59"), _ts("2026-03-10 00:00:00")]}
    )
    coupons = pd.DataFrame(
        [
            {
                "campaign": "welcome",
                "customer_id": None,
                "discount_type": "percent",
                "discount_value": 10,
                "valid_from": date(2025, 1, 1),
                "valid_to": date(2027, 1, 1),
            },
            {
                "campaign": "c1",
                "customer_id": 1.0,
                "discount_type": "percent",
                "discount_value": 15,
                "valid_from": date(2026, 3, 10),
                "valid_to": date(2026, 3, 16),
            },
            *(extra_coupons or []),
        ]
    )
    orders = pd.DataFrame(
        [
            # customer 1: two purchases in the window (the last one at its last second) and one before it
            (1, "delivered", 50.0, "2026-03-10 00:00:00", "2026-03-12"),
            (1, "paid", 30.0, "2026-03-16 23:59:59", "2026-03-17"),
            (1, "delivered", 99.0, "2026-03-09 23:59:59", "2026-03-12"),
            # customer 2: ordered the moment the window closed; a cancelled order inside it
            (2, "delivered", 70.0, "2026-03-17 00:00:00", "2026-03-18"),
            (2, "cancelled", 40.0, "2026-03-11 10:00:00", "2026-03-12"),
            # customer 3: returned long after the window: still a purchase at the window's end
            (3, "returned", 25.0, "2026-03-15 10:00:00", "2026-04-20"),
            # customer 4 (not eligible) ordered in the window
            (4, "delivered", 10.0, "2026-03-11 10:00:00", "2026-03-12"),
        ],
        columns=["customer_id", "status", "total_amount", "created_at", "updated_at"],
    )
    orders["created_at"] = pd.to_datetime(orders["created_at"], utc=True)
    orders["updated_at"] = pd.to_datetime(orders["updated_at"], utc=True)
    return customers, coupons, orders


def test_campaign_outcomes_reconstructs_groups_and_window_outcome():
    outcomes = uplift.campaign_outcomes(*_tiny_shop(), STATUSES).set_index("customer_id")

    assert list(outcomes.columns) == [c for c in uplift.OUTCOME_COLUMNS if c != "customer_id"]
    assert outcomes.index.tolist() == [1, 2, 3]  # 4 registered at valid_from: not eligible
    assert outcomes["is_treated"].tolist() == [True, False, False]
    assert outcomes["has_order"].tolist() == [True, False, True]
    assert outcomes["order_value"].tolist() == [80.0, 0.0, 25.0]
    assert set(outcomes["campaign"]) == {"c1"}  # the public welcome coupon is no campaign
    row = outcomes.loc[1]
    assert (row["discount_type"], row["discount_value"], row["window_days"]) == ("percent", 15.0, 7)


def test_campaign_without_control_group_is_named():
    customers, coupons, orders = _tiny_shop(
        [
            {
                "campaign": "everyone",
                "customer_id": float(i),
                "discount_type": "fixed",
                "discount_value": 20,
                "valid_from": date(2026, 1, 5),
                "valid_to": date(2026, 1, 18),
            }
            for i in (1, 2)
        ]
    )
    with pytest.raises(ValueError, match="'everyone': no control group"):
        uplift.campaign_outcomes(customers, coupons, orders, STATUSES)


def test_campaign_without_treated_is_named():
    with pytest.raises(ValueError, match="'ghost': no treated customer"):
        uplift.campaign_outcomes(*_tiny_shop(), STATUSES, campaigns=["c1", "ghost"])


def test_coupon_to_customer_registered_after_valid_from_is_refused():
    customers, coupons, orders = _tiny_shop(
        [
            {
                "campaign": "c1",
                "customer_id": 4.0,
                "discount_type": "percent",
                "discount_value": 15,
                "valid_from": date(2026, 3, 10),
                "valid_to": date(2026, 3, 16),
            }
        ]
    )
    with pytest.raises(ValueError, match="'c1': 1 coupon holders were not registered"):
        uplift.campaign_outcomes(customers, coupons, orders, STATUSES)


def _planted(n: int, seed: int, treated_share: float = 0.5) -> pd.DataFrame:
    """Only `is_responder` customers respond to the coupon (+0.4); everyone orders at 0.2 without it."""
    rng = np.random.default_rng(seed)
    is_responder = rng.random(n) < 0.3
    noise = rng.normal(size=n)
    is_treated = rng.random(n) < treated_share
    p = 0.2 + 0.4 * (is_responder & is_treated)
    return pd.DataFrame(
        {
            "customer_id": np.arange(1, n + 1),
            "is_responder": is_responder.astype(float),
            "noise": noise,
            "is_treated": is_treated,
            "has_order": rng.random(n) < p,
        }
    )


@pytest.mark.parametrize("method", uplift.METHODS)
def test_model_ranks_planted_responders_first_and_beats_random(method):
    train, test = _planted(3000, seed=1), _planted(2000, seed=2)
    # Logistic regression keeps the test fast; gradient boosting takes seconds on shared cores.
    model = uplift.UpliftModel(["is_responder", "noise"], method, "logistic_regression", seed=3)
    model.fit(train, train["is_treated"], train["has_order"])
    score = model.expected_uplift(test)
    responder = test["is_responder"] == 1

    assert score[responder].mean() > 0.25 and abs(score[~responder].mean()) < 0.08
    report = uplift.targeting_report(test, {"model": score, "oracle": test["is_responder"]}, seed=0).set_index("strategy")
    # The normalised Qini's "perfect" ranking knows each outcome, so even the true uplift scores far below 1.
    assert report.loc["model", "qini"] > 0.8 * report.loc["oracle", "qini"] > 0.1
    assert abs(report.loc["random", "qini"]) < 0.05
    assert report.loc["model", "uplift_at_10pct"] > 0.25


def test_class_transformation_reweights_an_unbalanced_assignment():
    train, test = _planted(4000, seed=4, treated_share=0.2), _planted(1000, seed=5)
    model = uplift.UpliftModel(["is_responder"], "class_transformation", "logistic_regression", seed=0)
    score = model.fit(train, train["is_treated"], train["has_order"]).expected_uplift(test)
    responder = test["is_responder"] == 1
    # Unweighted, 2 P(Z=1) - 1 would be about -0.5 for non-responders at a 20% treated share.
    assert abs(score[~responder].mean()) < 0.06
    assert 0.25 < score[responder].mean() < 0.55


def test_qini_of_perfect_ranking_is_one_and_the_maximum():
    data = _planted(1000, seed=6)
    y, t = data["has_order"].to_numpy(), data["is_treated"].to_numpy()
    perfect = y * t - y * (1 - t)
    assert uplift.qini_coefficient(y, t, perfect) == pytest.approx(1.0)
    assert uplift.qini_coefficient(y, t, -perfect) < -0.3
    assert 0.0 < uplift.qini_coefficient(y, t, data["is_responder"]) < 1.0


def test_qini_curve_counts_incremental_orders_by_hand():
    # scores 4,3,2,1: treated ordered, control ordered, treated did not, control did not
    customers, incremental = uplift.qini_curve([1, 1, 0, 0], [1, 0, 1, 0], [4, 3, 2, 1])
    assert customers.tolist() == [0, 1, 2, 3, 4]
    # after 2: 1 treated order - 1 control order x (1 treated / 1 control) = 0; after 3: 1 - 1 x 2/1 = -1
    assert incremental.tolist() == [0.0, 1.0, 0.0, -1.0, 0.0]


def test_uplift_at_k_is_treated_minus_control_rate_in_the_top():
    y = [1, 1, 0, 1, 0, 0, 0, 0, 1, 0]
    t = [1, 1, 0, 0, 1, 0, 1, 0, 0, 1]
    score = np.arange(10, 0, -1)
    # top 50%: treated 1,1,0 -> 2/3; control 0,1 -> 1/2
    assert uplift.uplift_at_k(y, t, score, 0.5) == pytest.approx(2 / 3 - 1 / 2)
    assert np.isnan(uplift.uplift_at_k(y, t, score, 0.2))  # top two are all treated


def test_holdout_is_deterministic_and_stratified_by_treatment():
    data = _planted(1001, seed=7)
    mask = uplift.holdout_mask(data["customer_id"], data["is_treated"], 0.3, seed=19)
    again = uplift.holdout_mask(data["customer_id"][::-1], data["is_treated"][::-1], 0.3, seed=19)[::-1]
    other = uplift.holdout_mask(data["customer_id"], data["is_treated"], 0.3, seed=20)
    t = data["is_treated"].to_numpy()
    assert (mask == again).all() and not (mask == other).all()
    assert mask[t].sum() == round(0.3 * t.sum()) and mask[~t].sum() == round(0.3 * (~t).sum())


def _offers_input():
    uplift_frame = pd.DataFrame(
        {
            "customer_id": [1, 1, 2, 2, 3, 4, 5],
            "coupon": ["pct10", "fix20", "pct10", "fix20", "pct10", "pct10", "fix20"],
            "expected_uplift": [0.10, 0.20, 0.30, 0.01, 0.05, 0.30, 0.10],
            "baseline_probability": [0.2, 0.2, 0.1, 0.1, 0.9, 0.1, 0.1],
        }
    )
    order_value = pd.DataFrame({"customer_id": [1, 2, 3, 4, 5], "expected_order_value": [100.0, 100.0, 100.0, 1000.0, 100.0]})
    terms = pd.DataFrame({"coupon": ["pct10", "fix20"], "discount_type": ["percent", "fixed"], "discount_value": [10.0, 20.0]})
    return uplift_frame, order_value, terms


def test_offer_value_is_uplift_times_order_value_minus_discount_on_all_coupon_orders():
    uplift_frame, order_value, terms = _offers_input()
    offers = uplift.select_offers(uplift_frame, order_value, terms, budget=1e9, min_expected_uplift=0.02)
    by_customer = offers.set_index("customer_id")
    assert list(offers.columns) == list(uplift.OFFER_COLUMNS)
    # customer 1, pct10: 0.1 x 100 - (0.2 + 0.1) x 10 = 7; fix20: 0.2 x 100 - 0.4 x 20 = 12 -> fix20
    assert by_customer.loc[1, "coupon"] == "fix20"
    assert by_customer.loc[1, "expected_incremental_revenue"] == pytest.approx(12.0)
    assert by_customer.loc[1, "expected_cost"] == pytest.approx(8.0)
    # customer 3: 0.05 x 100 - 0.95 x 10 < 0 -> nothing; customer 2's fix20 is below the least uplift
    assert 3 not in by_customer.index and by_customer.loc[2, "coupon"] == "pct10"
    assert offers["customer_id"].is_unique


def test_offers_stay_within_budget_best_first_skipping_what_does_not_fit():
    uplift_frame, order_value, terms = _offers_input()
    # revenue, cost: customer 4 300-40=260, 40; 2 30-4=26, 4; 1 12, 8; 5 10-4=6, 4
    offers = uplift.select_offers(uplift_frame, order_value, terms, budget=15.0, min_expected_uplift=0.02)
    assert offers["customer_id"].tolist() == [2, 1]  # 4 does not fit; after 2 and 1 (12), 5 (4) would exceed
    assert offers["expected_cost"].sum() <= 15.0
    assert uplift.select_offers(uplift_frame, order_value, terms, 0.0, 0.02).empty


def test_a_customer_whose_credit_notes_outweigh_their_orders_gets_no_offer_and_no_cost_is_negative():
    uplift_frame, order_value, terms = _offers_input()
    # customer 3's net order value is negative (returns): pct10 would "cost" 0.95 x -15 = -14.25 and "bring"
    # 0.05 x -150 + 14.25 = 6.75, an offer chosen for a negative discount
    order_value.loc[order_value["customer_id"] == 3, "expected_order_value"] = -150.0
    offers = uplift.select_offers(uplift_frame, order_value, terms, budget=1e9, min_expected_uplift=0.0)
    assert 3 not in set(offers["customer_id"]) and not offers.empty
    assert (offers["expected_cost"] >= 0).all()


def test_offers_refuse_a_coupon_without_terms():
    uplift_frame, order_value, terms = _offers_input()
    with pytest.raises(ValueError, match=r"coupons without terms: \['fix20'\]"):
        uplift.select_offers(uplift_frame, order_value, terms[terms["coupon"] == "pct10"], 10.0, 0.0)
