"""Coupon targeting by uplift: whom a personal coupon makes order, learnt from the shop's past randomised
personal-coupon campaigns. Pure pandas and scikit-learn; the nightly job supplies the frames.

A past campaign gave a personal coupon (one row in `coupons` with the customer's id) to a random half of
the customers registered before the coupon's `valid_from`; the other eligible customers are its control
group. The outcome is whether the customer made a purchase in the coupon's window
[valid_from, valid_to] (whole UTC days), so the uplift of a customer is

    uplift(x) = P(order in window | coupon, x) - P(order in window | no coupon, x)     (probability, -1..1)

Two estimators (`METHODS`):
- `two_model`: one classifier on the treated, one on the control customers; uplift is the difference of
  their probabilities.
- `class_transformation` (Jaskowski, M. & Jaroszewicz, S. (2012). Uplift modeling for clinical trial data.
  ICML 2012 Workshop on Clinical Data Analysis): one classifier of Z = T*Y + (1-T)*(1-Y); with
  P(T=1) = 1/2, uplift = 2 P(Z=1 | x) - 1. When the treated share p is not 1/2, treated rows are weighted
  1/(2p) and control rows 1/(2(1-p)), which restores the identity.

One pooled model for all coupons, with the coupon's terms as features (`TERM_FEATURES`: percent off,
currency off, window length in days), rather than one model per campaign: the customer traits that make
someone respond to a coupon are shared across campaigns, and a 5,000-customer shop has only ~1,500
treated customers per campaign, too few for a stable uplift model each. The terms let the model tell the
coupons apart; with three past campaigns, terms and campaign date cannot be separated, so the model only
scores the terms of past campaigns (`coupon` = the campaign's name), never new terms.

Evaluation follows Radcliffe (2007), "Using control groups to target on predicted lift: building and
assessing uplift models", Direct Marketing Analytics Journal 1:14-21, as implemented by scikit-uplift's
`qini_curve` and `qini_auc_score`: the Qini coefficient here is normalised, the area between the model's
Qini curve and the random line divided by that area for the perfect ranking (1 = perfect, 0 = random,
negative = worse than random).

Offers: expected net incremental revenue of a coupon for a customer (currency) is

    uplift x order_value - (baseline + uplift) x discount

where `baseline` = P(order in window | no coupon) and `discount` the coupon's discount on one order of
`order_value`: the extra orders the coupon brings, minus the discount paid on every order that uses it,
including those that would have happened anyway (a coupon holder's first order in the window uses it).
`expected_cost` = (baseline + uplift) x discount, the expected discount given.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime, time

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.pipeline import Pipeline

from features.purchases import utc_timestamps
from models.churn import estimator

METHODS = ("two_model", "class_transformation")
#: Coupon terms as model features: percent off (percent points, 0 for a fixed coupon), currency off (0 for
#: a percent coupon), and the window's length in days.
TERM_FEATURES = ("discount_percent", "discount_fixed", "window_days")
OUTCOME_COLUMNS = (
    "campaign",
    "customer_id",
    "valid_from",
    "valid_to",
    "window_days",
    "discount_type",
    "discount_value",
    "is_treated",
    "has_order",
    "order_value",
)
OFFER_COLUMNS = ("customer_id", "coupon", "expected_uplift", "expected_incremental_revenue", "expected_cost")
#: Random targeting is the mean over this many seeded random rankings.
RANDOM_DRAWS = 20
DISCOUNT_TYPES = ("percent", "fixed")


# --------------------------------------------------------------------------- past campaigns


def campaign_outcomes(
    customers: pd.DataFrame,
    coupons: pd.DataFrame,
    orders: pd.DataFrame,
    purchase_statuses: Sequence[str],
    campaigns: Iterable[str] | None = None,
) -> pd.DataFrame:
    """One row per past personal-coupon campaign and eligible customer (`OUTCOME_COLUMNS`).

    Eligible: registered (`customers.created_at`) before the start of `valid_from` (UTC). Treated: holds the
    campaign's personal coupon; control: the other eligible customers. `has_order`: a purchase created in
    [valid_from 00:00, valid_to + 1 day 00:00) UTC; `order_value`: their total (currency). An order counts
    when it was still a purchase at the window's end: its status is a purchase status, or it changed
    after the window (as `features.customer.orders_as_of`); credit notes (negative totals) and guest orders
    (no customer) never count. `discount_value` is percent points for a
    percent coupon, currency for a fixed one. Campaigns: those with personal coupons (non-null
    `customer_id`), or `campaigns`. Raises ValueError naming the campaign when it has no treated or no
    control customer, several terms, or coupon holders who were not eligible.
    """
    _require(customers, "customers", ("id", "created_at"))
    _require(coupons, "coupons", ("campaign", "customer_id", "discount_type", "discount_value", "valid_from", "valid_to"))
    _require(orders, "orders", ("customer_id", "status", "total_amount", "created_at", "updated_at"))
    personal = coupons[coupons["customer_id"].notna()]
    names = sorted(personal["campaign"].unique()) if campaigns is None else list(campaigns)
    registered_at = utc_timestamps(customers["created_at"])
    order_at, order_changed_at = utc_timestamps(orders["created_at"]), utc_timestamps(orders["updated_at"])
    is_purchase_status = orders["status"].isin(list(purchase_statuses)).to_numpy()
    amount = pd.to_numeric(orders["total_amount"].astype("float64"))
    is_customer_purchase = (orders["customer_id"].notna() & ~(amount < 0)).to_numpy()
    frames = []
    for name in names:
        rows = personal[personal["campaign"] == name]
        if rows.empty:
            raise ValueError(f"campaign {name!r}: no treated customer (no personal coupon in `coupons`)")
        terms = rows[["discount_type", "discount_value", "valid_from", "valid_to"]].drop_duplicates()
        if len(terms) != 1:
            raise ValueError(
                f"campaign {name!r}: its personal coupons have {len(terms)} different terms "
                f"(discount_type, discount_value, valid_from, valid_to); expected one"
            )
        discount_type, discount_value, valid_from, valid_to = terms.iloc[0]
        if discount_type not in DISCOUNT_TYPES:
            raise ValueError(f"campaign {name!r}: discount_type {discount_type!r}; expected one of {DISCOUNT_TYPES}")
        start, stop = _start_of(valid_from), _start_of(valid_to) + pd.Timedelta(days=1)
        eligible = customers.loc[(registered_at < start).to_numpy(), "id"].astype("int64")
        holders = pd.Index(rows["customer_id"].astype("int64").unique())
        not_eligible = holders.difference(pd.Index(eligible))
        if len(not_eligible):
            raise ValueError(
                f"campaign {name!r}: {len(not_eligible)} coupon holders were not registered before "
                f"valid_from {valid_from} (e.g. customer {not_eligible[0]}); expected only "
                f"eligible customers to be treated"
            )
        is_treated = eligible.isin(holders).to_numpy()
        if is_treated.all():
            raise ValueError(
                f"campaign {name!r}: no control group (all {is_treated.size} eligible customers "
                f"hold the coupon); uplift needs customers without it"
            )
        in_window = ((order_at >= start) & (order_at < stop)).to_numpy()
        # A credit note (negative total) is no purchase, and a guest order (no customer) nobody's.
        counts = in_window & (is_purchase_status | (order_changed_at >= stop).to_numpy()) & is_customer_purchase
        value = amount[counts].groupby(orders.loc[counts, "customer_id"].astype("int64")).sum()
        order_value = value.reindex(eligible.to_numpy(), fill_value=0.0).to_numpy()
        frames.append(
            pd.DataFrame(
                {
                    "campaign": name,
                    "customer_id": eligible.to_numpy(),
                    "valid_from": pd.Timestamp(valid_from).date(),
                    "valid_to": pd.Timestamp(valid_to).date(),
                    "window_days": (stop - start).days,
                    "discount_type": discount_type,
                    "discount_value": float(discount_value),
                    "is_treated": is_treated,
                    "has_order": eligible.isin(value.index).to_numpy(),
                    "order_value": np.round(order_value, 2),
                }
            )
        )
    if not frames:
        return pd.DataFrame({column: [] for column in OUTCOME_COLUMNS})
    return pd.concat(frames, ignore_index=True).sort_values(["campaign", "customer_id"], ignore_index=True)


def coupon_terms(outcomes: pd.DataFrame) -> pd.DataFrame:
    """One row per coupon (campaign): discount_type, discount_value, window_days, from `campaign_outcomes`."""
    return (
        outcomes[["campaign", "discount_type", "discount_value", "window_days"]]
        .drop_duplicates()
        .rename(columns={"campaign": "coupon"})
        .reset_index(drop=True)
    )


def with_term_features(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of `frame` (with discount_type, discount_value, window_days) plus the `TERM_FEATURES`."""
    is_percent = frame["discount_type"] == "percent"
    value = frame["discount_value"].astype("float64")
    return frame.assign(
        discount_percent=np.where(is_percent, value, 0.0),
        discount_fixed=np.where(is_percent, 0.0, value),
        window_days=frame["window_days"].astype("float64"),
    )


# --------------------------------------------------------------------------- model


class UpliftModel(BaseEstimator):
    """Uplift of a coupon on P(order in the coupon window), by `method` (see the module docstring).

    `fit(X, is_treated, has_order)` takes a frame with (at least) the `features` columns;
    `expected_uplift(X)` gives probability points (-1..1), `baseline_probability(X)` P(order | no coupon).
    `algorithm` is the classifier of `models.churn.estimator`, seeded with `seed`.
    """

    def __init__(self, features: Sequence[str], method: str = "two_model", algorithm: str = "hist_gradient_boosting", seed: int = 0):
        self.features = features
        self.method = method
        self.algorithm = algorithm
        self.seed = seed

    def fit(self, X: pd.DataFrame, is_treated, has_order) -> UpliftModel:
        if self.method not in METHODS:
            raise ValueError(f"uplift.method: unknown method {self.method!r}; expected one of {', '.join(METHODS)}")
        matrix = self.feature_matrix(X)
        t = np.asarray(is_treated, dtype=bool)
        y = np.asarray(has_order, dtype=bool)
        for group, mask in (("treated", t), ("control", ~t)):
            outcomes = np.unique(y[mask])
            if outcomes.size < 2:
                raise ValueError(
                    f"uplift training data: the {mask.sum()} {group} customers all "
                    f"{'ordered' if outcomes.size and outcomes[0] else 'did not order'}; "
                    f"both outcomes are needed in each group"
                )
        base = estimator(self.algorithm, self.seed)
        self.control_model_ = clone(base).fit(matrix[~t], y[~t])
        if self.method == "two_model":
            self.treated_model_ = clone(base).fit(matrix[t], y[t])
        else:
            z = t == y  # Z = T*Y + (1-T)*(1-Y)
            share = t.mean()
            self.treated_share_ = float(share)
            weight = np.where(t, 0.5 / share, 0.5 / (1.0 - share))
            self.transformed_model_ = _fit_weighted(clone(base), matrix, z, weight)
        return self

    def expected_uplift(self, X: pd.DataFrame) -> np.ndarray:
        """P(order | coupon) - P(order | no coupon) per row of `X`, probability points (-1..1)."""
        matrix = self.feature_matrix(X)
        if self.method == "two_model":
            return _positive(self.treated_model_, matrix) - _positive(self.control_model_, matrix)
        return 2.0 * _positive(self.transformed_model_, matrix) - 1.0

    def baseline_probability(self, X: pd.DataFrame) -> np.ndarray:
        """P(order in the window | no coupon) per row of `X` (the control-group classifier), 0-1."""
        return _positive(self.control_model_, self.feature_matrix(X))

    def feature_matrix(self, X: pd.DataFrame) -> pd.DataFrame:
        missing = [name for name in self.features if name not in X.columns]
        if missing:
            raise ValueError(f"uplift features missing from the input: {missing}; present: {list(X.columns)}")
        return X[list(self.features)].astype("float64")


def _fit_weighted(model, matrix: pd.DataFrame, labels: np.ndarray, weight: np.ndarray):
    if isinstance(model, Pipeline):
        return model.fit(matrix, labels, **{f"{model.steps[-1][0]}__sample_weight": weight})
    return model.fit(matrix, labels, sample_weight=weight)


def _positive(model, matrix: pd.DataFrame) -> np.ndarray:
    return model.predict_proba(matrix)[:, list(model.classes_).index(True)]


# --------------------------------------------------------------------------- evaluation


def holdout_mask(customer_id, is_treated, share: float, seed: int) -> np.ndarray:
    """True for the held-out rows: in each treatment group, the `share` of rows with the lowest hash of
    (seed, customer_id). Deterministic; the same customer falls on the same side in every campaign except
    those whose hash lies at a group's cut."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"uplift.holdout_share: {share}; expected a share between 0 and 1 (exclusive)")
    ids = np.asarray(customer_id)
    t = np.asarray(is_treated, dtype=bool)
    key = np.array([int.from_bytes(hashlib.sha256(f"{seed}:{int(i)}".encode()).digest()[:8], "big") for i in ids], dtype=np.uint64)
    mask = np.zeros(ids.size, dtype=bool)
    for group in (t, ~t):
        rows = np.flatnonzero(group)
        chosen = rows[np.argsort(key[rows], kind="stable")[: int(round(share * rows.size))]]
        mask[chosen] = True
    return mask


def qini_curve(has_order, is_treated, score) -> tuple[np.ndarray, np.ndarray]:
    """Customers targeted (best score first, ties together) and the incremental orders among them:
    treated orders - control orders x treated / control (Radcliffe 2007; scikit-uplift's `qini_curve`)."""
    y, t, s = _aligned(has_order, is_treated, score)
    order = np.argsort(s, kind="mergesort")[::-1]
    y, t, s = y[order], t[order], s[order]
    cut = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    treated = np.cumsum(t)[cut]
    treated_orders = np.cumsum(y * t)[cut]
    control_orders = np.cumsum(y * (1 - t))[cut]
    customers = cut + 1
    control = customers - treated
    ratio = np.divide(treated, control, out=np.zeros(cut.size), where=control != 0)
    return np.r_[0, customers], np.r_[0.0, treated_orders - control_orders * ratio]


def qini_coefficient(has_order, is_treated, score) -> float:
    """Normalised Qini coefficient: (area of the model's Qini curve - random line) / (area of the perfect
    ranking's - random line); 1 perfect, 0 random. scikit-uplift's `qini_auc_score(negative_effect=True)`."""
    y, t, _ = _aligned(has_order, is_treated, score)
    perfect_x, perfect_y = qini_curve(y, t, y * t - y * (1 - t))
    random_area = perfect_x[-1] * perfect_y[-1] / 2.0
    model_x, model_y = qini_curve(has_order, is_treated, score)
    perfect_area = np.trapezoid(perfect_y, perfect_x) - random_area
    if perfect_area <= 0:
        return float("nan")
    return float((np.trapezoid(model_y, model_x) - random_area) / perfect_area)


def uplift_at_k(has_order, is_treated, score, share: float) -> float:
    """Order rate of the treated minus that of the control customers among the top `share` of all
    customers by score, probability points (NaN when the top has no treated or no control customer)."""
    y, t, s = _aligned(has_order, is_treated, score)
    top = np.argsort(s, kind="mergesort")[::-1][: max(1, int(np.ceil(share * s.size)))]
    treated, control = t[top] == 1, t[top] == 0
    if not treated.any() or not control.any():
        return float("nan")
    return float(y[top][treated].mean() - y[top][control].mean())


def targeting_report(
    outcomes: pd.DataFrame, scores: dict[str, np.ndarray], shares: Sequence[float] = (0.1, 0.3), seed: int = 0
) -> pd.DataFrame:
    """One row per targeting strategy (`scores`: name -> score, higher = target first; NaN last) plus
    `random` (the mean of `RANDOM_DRAWS` seeded random rankings): customers, treated, control, qini and
    uplift_at_<k>pct (probability points) on `outcomes` (is_treated, has_order)."""
    y = outcomes["has_order"].to_numpy()
    t = outcomes["is_treated"].to_numpy()
    rng = np.random.default_rng(seed)
    draws = [rng.random(len(outcomes)) for _ in range(RANDOM_DRAWS)]
    rows = []
    for name, score in {**scores, "random": None}.items():
        rankings = draws if score is None else [np.nan_to_num(np.asarray(score, dtype=float), nan=-np.inf)]
        row = {
            "strategy": name,
            "customers": len(outcomes),
            "treated": int(t.sum()),
            "control": int((~t).sum()),
            "qini": float(np.mean([qini_coefficient(y, t, s) for s in rankings])),
        }
        for share in shares:
            row[f"uplift_at_{round(share * 100)}pct"] = float(np.nanmean([uplift_at_k(y, t, s, share) for s in rankings]))
        rows.append(row)
    return pd.DataFrame(rows)


def _aligned(has_order, is_treated, score) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = np.asarray(has_order, dtype=float)
    t = np.asarray(is_treated, dtype=float)
    s = np.nan_to_num(np.asarray(score, dtype=float), nan=-np.inf)
    if not y.size == t.size == s.size:
        raise ValueError(f"has_order, is_treated and score differ in length: {y.size}, {t.size}, {s.size}")
    return y, t, s


# --------------------------------------------------------------------------- offers


def discount_per_order(order_value, discount_type, discount_value) -> np.ndarray:
    """The discount (currency) a coupon gives on an order of `order_value` (currency): percent points of
    it, or a fixed amount (at most the order's value)."""
    value = np.asarray(order_value, dtype=float)
    amount = np.asarray(discount_value, dtype=float)
    return np.where(np.asarray(discount_type) == "percent", value * amount / 100.0, np.minimum(amount, value))


def select_offers(
    uplift: pd.DataFrame, order_value: pd.DataFrame, terms: pd.DataFrame, budget: float, min_expected_uplift: float
) -> pd.DataFrame:
    """The coupon to offer each customer (`OFFER_COLUMNS`), within `budget` of expected discount cost.

    `uplift`: customer_id, coupon, expected_uplift (probability points), baseline_probability (P(order |
    no coupon)); `order_value`: customer_id, expected_order_value (currency); `terms`: coupon,
    discount_type, discount_value. Offers below `min_expected_uplift` or with no positive expected
    incremental revenue (module docstring) are dropped, as are customers whose expected order value is not
    positive (net of credit notes); of the rest each customer gets the one with the
    most incremental revenue; then customers by incremental revenue, best first, are taken while the
    summed `expected_cost` stays within `budget` (one that would exceed it is skipped, smaller ones after
    it may still fit). Money rounded to cents.
    """
    _require(uplift, "uplift", ("customer_id", "coupon", "expected_uplift", "baseline_probability"))
    _require(order_value, "order_value", ("customer_id", "expected_order_value"))
    _require(terms, "terms", ("coupon", "discount_type", "discount_value"))
    if budget < 0:
        raise ValueError(f"uplift.budget: {budget}; expected a non-negative amount of currency")
    unknown = sorted(set(uplift["coupon"]) - set(terms["coupon"]))
    if unknown:
        raise ValueError(f"coupons without terms: {unknown}; terms given for {sorted(terms['coupon'])}")
    # A customer whose expected order value is not positive (credit notes outweigh their orders, net
    # monetary value) gets no offer: a discount on such an order is not a cost, and no revenue follows.
    valued = order_value.loc[order_value["expected_order_value"] > 0, ["customer_id", "expected_order_value"]]
    frame = uplift.merge(valued, on="customer_id", how="inner", validate="many_to_one").merge(
        terms[["coupon", "discount_type", "discount_value"]], on="coupon", validate="many_to_one"
    )
    discount = discount_per_order(frame["expected_order_value"], frame["discount_type"], frame["discount_value"])
    redeem = np.clip(frame["baseline_probability"].to_numpy() + frame["expected_uplift"].to_numpy(), 0.0, 1.0)
    # Rounded to cents before the budget is applied, so the written amounts add up within it.
    frame = frame.assign(
        expected_cost=np.round(redeem * discount, 2),
        expected_incremental_revenue=np.round(frame["expected_uplift"] * frame["expected_order_value"] - redeem * discount, 2),
    )
    frame = frame[(frame["expected_uplift"] >= min_expected_uplift) & (frame["expected_incremental_revenue"] > 0)]
    best = (
        frame.sort_values(["customer_id", "expected_incremental_revenue", "coupon"], ascending=[True, False, True])
        .drop_duplicates("customer_id")
        .sort_values(["expected_incremental_revenue", "customer_id"], ascending=[False, True])
    )
    cost = best["expected_cost"].to_numpy()
    keep = np.zeros(cost.size, dtype=bool)
    spent = 0.0
    for index, amount in enumerate(cost):
        if spent + amount <= budget + 1e-9:
            keep[index] = True
            spent += amount
    chosen = best[keep]
    return pd.DataFrame(
        {
            "customer_id": chosen["customer_id"].astype("int64").to_numpy(),
            "coupon": chosen["coupon"].to_numpy(),
            "expected_uplift": chosen["expected_uplift"].astype("float64").to_numpy(),
            "expected_incremental_revenue": chosen["expected_incremental_revenue"].to_numpy(),
            "expected_cost": chosen["expected_cost"].to_numpy(),
        }
    )


# --------------------------------------------------------------------------- helpers


def _require(frame: pd.DataFrame, name: str, columns: Sequence[str]) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"{name}: missing columns {missing}; present: {list(frame.columns)}")


def _start_of(day) -> pd.Timestamp:
    """The first instant of `day` (a date or date-like), UTC."""
    if isinstance(day, datetime):
        day = day.date()
    return pd.Timestamp(datetime.combine(pd.Timestamp(day).date(), time.min)).tz_localize("UTC")
