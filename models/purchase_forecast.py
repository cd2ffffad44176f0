"""Expected purchases in a horizon when the rate is seasonal: BG/NBD against two alternatives, chosen per shop.

BG/NBD (`models.lifetime`) assumes each customer buys at a constant rate while alive, so a holdout that
falls in the shop's peak (or its quiet months) is under- or over-forecast, and no customer is ranked by
when in the year they buy. The candidates below each give expected purchase days in (as_of, as_of + h];
the night compares them on a holdout and publishes the better one in `expected_orders_*`:

- `bgnbd`: the purchase model's own expectation (`clv.purchase_model`, stationary).
- `bgnbd_seasonal`: the same times the shop's seasonal index for that calendar window, learnt one year
  earlier: the purchase model fitted on the history up to as_of - 365 days, and the purchase days its
  customers made in the window a year earlier against what it expected of them (actual / expected). It
  scales everyone alike: it corrects the level, it does not re-rank customers.
- `own_count`: the customer's own purchase days in the same window a year earlier; a customer who had not
  bought by that window's start gets their purchase days of the last h days instead. The simplest model
  that knows who buys in which season.

The holdout is the last h days before the run date, forecast from the history up to their start. Figures
per candidate: RMSE of each customer's purchase days (the choice rests on it: the columns are expectations,
and an expectation is what minimises squared error), MAE (which rewards predicting the median, 0 for most
customers, so it is shown, not used to choose), total predicted against actual, and ROC-AUC of ranking the
customers who made no purchase by the lower expectation. Fader & Hardie's calibration/holdout check by
repeat purchases in the calibration period is `by_frequency`.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import roc_auc_score

from models.lifetime import BetaGeoModel, ConvergenceError, LifetimeInputError

#: The candidates in the order a tie is decided (the first of equal RMSE wins: the simpler model).
CANDIDATES = ("bgnbd", "bgnbd_seasonal", "own_count")
#: Days a seasonal index looks back: the same calendar window one year earlier.
YEAR_DAYS = 365
#: Calibration-period repeat purchases grouped as in Fader, Hardie & Lee (2005), Figure 3: 0 .. 6 and 7+.
FREQUENCY_BUCKETS = 7


def seasonal_indexes(
    model: type[BetaGeoModel], frequency: object, recency: object, T: object, actual: dict[int, object]
) -> dict[int, tuple[float | None, str]]:
    """The shop's seasonal index (actual / expected purchase days, a ratio) of each stretch between the
    horizons of `actual` (days, all from one start a year earlier: (0, h1], (h1, h2], ...), keyed by the
    stretch's end, and how each was found; (None, why) where it cannot be.

    `frequency`, `recency`, `T` (days) are the customers' histories at the start, `actual[h]` their purchase
    days in the h days after it. The purchase model is fitted once, on those histories. Indexes per
    stretch keep a seasonal forecast cumulative: the 90 days hold at least the 30 (`seasonal_forecast`).
    """
    horizons = sorted(actual)
    if len(np.atleast_1d(frequency)) == 0:
        return {days: (None, "no customer had bought a year before the window") for days in horizons}
    try:
        fitted = model().fit(frequency, recency, T)
    except (LifetimeInputError, ConvergenceError) as error:
        return {days: (None, f"no purchase model a year before the window: {error}") for days in horizons}
    found, previous_days, previous_expected, previous_total = {}, 0, 0.0, 0.0
    for days in horizons:
        expected = float(fitted.expected_purchases(days, frequency, recency, T).sum())
        total = float(np.sum(actual[days]))
        stretch_expected, stretch_total = expected - previous_expected, total - previous_total
        window = f"days {previous_days + 1}-{days}" if previous_days else f"the {days} days"
        if stretch_expected > 0:
            found[days] = (
                stretch_total / stretch_expected,
                f"{stretch_total:,.0f} purchase days in {window} a year earlier against {stretch_expected:,.1f} expected",
            )
        else:
            found[days] = (None, f"the purchase model a year before expected no purchase in {window}")
        previous_days, previous_expected, previous_total = days, expected, total
    return found


def seasonal_forecast(expected: dict[int, np.ndarray], indexes: dict[int, float | None]) -> dict[int, np.ndarray]:
    """Expected purchase days per horizon (days, cumulative from one start) with each stretch between the
    horizons scaled by its seasonal index (`seasonal_indexes`; 1 where there is none)."""
    forecast, previous, total = {}, 0.0, 0.0
    for days in sorted(expected):
        index = indexes.get(days)
        total = total + (expected[days] - previous) * (1.0 if index is None else index)
        forecast[days], previous = total, expected[days]
    return forecast


def own_count(
    same_window_a_year_earlier: object,
    last_days: object,
    bought_a_year_earlier: object,
    days_since_first_purchase: object,
    horizon_days: float,
) -> np.ndarray:
    """Each customer's purchase days in the window a year earlier, or their repeat purchase days in the last
    `horizon_days` for a customer who had not bought by that window's start (purchase days; one row per
    customer). `last_days` counts every purchase day of the last `horizon_days`: a first purchase among
    them (days_since_first_purchase < horizon_days) is taken off, as a forecast is of repeat purchases."""
    earlier = np.asarray(bought_a_year_earlier, dtype=bool)
    first_in_window = np.asarray(days_since_first_purchase, dtype=float) < horizon_days
    repeat_last_days = np.asarray(last_days, dtype=float) - first_in_window
    return np.where(earlier, np.asarray(same_window_a_year_earlier, dtype=float), repeat_last_days)


def forecast_scores(predicted: object, actual: object) -> dict[str, float]:
    """How expected purchase days compare with the purchase days that came, over the customers given:
    rmse, mae (purchase days per customer), predicted_total, actual_total, and no_purchase_roc_auc (NaN when
    every customer bought, or none did)."""
    predicted, actual = np.asarray(predicted, dtype=float), np.asarray(actual, dtype=float)
    if predicted.shape != actual.shape:
        raise ValueError(
            f"forecast_scores: predicted has shape {predicted.shape}, actual {actual.shape}; expected one row per customer in both"
        )
    errors = predicted - actual
    no_purchase = actual == 0
    ranked = 0 < no_purchase.sum() < len(actual)
    return {
        "customers": float(len(actual)),
        "rmse": float(np.sqrt(np.mean(errors**2))) if len(actual) else math.nan,
        "mae": float(np.mean(np.abs(errors))) if len(actual) else math.nan,
        "predicted_total": float(predicted.sum()),
        "actual_total": float(actual.sum()),
        "no_purchase_roc_auc": float(roc_auc_score(no_purchase, -predicted)) if ranked else math.nan,
    }


def choose(scores: dict[str, dict[str, float]]) -> str:
    """The candidate with the lowest holdout RMSE (earlier in `CANDIDATES` on a tie)."""
    available = [name for name in CANDIDATES if name in scores and math.isfinite(scores[name]["rmse"])]
    if not available:
        raise ValueError(f"choose: no candidate has a holdout RMSE; got {sorted(scores)}")
    return min(available, key=lambda name: (scores[name]["rmse"], CANDIDATES.index(name)))


def by_frequency(frequency: object, predicted: object, actual: object) -> list[dict[str, float]]:
    """Fader & Hardie's calibration/holdout check: per number of calibration-period repeat purchases (0 .. 6,
    then 7 and more as 7), the customers and their mean predicted and actual holdout purchase days."""
    x = np.minimum(np.asarray(frequency, dtype=float), FREQUENCY_BUCKETS)
    predicted, actual = np.asarray(predicted, dtype=float), np.asarray(actual, dtype=float)
    rows = []
    for bucket in range(FREQUENCY_BUCKETS + 1):
        members = x == bucket
        if members.any():
            rows.append(
                {
                    "repeat_purchases": f"{bucket}+" if bucket == FREQUENCY_BUCKETS else str(bucket),
                    "customers": int(members.sum()),
                    "mean_predicted": float(predicted[members].mean()),
                    "mean_actual": float(actual[members].mean()),
                }
            )
    return rows
