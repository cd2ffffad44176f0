"""The expected-orders candidates and their comparison, on simulated purchase logs whose truth is known."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import purchase_logs
import pytest

from models import purchase_forecast
from models.lifetime import BetaGeoModel

DAYS = 3 * 365
WINDOW = 90


def seasonal_index_of(log: pd.DataFrame, window_start: int, days: int) -> float:
    frame = purchase_logs.histories(log, window_start)
    actual = purchase_logs.purchases_between(log, window_start, window_start + days, frame.index)
    ((index, _),) = purchase_forecast.seasonal_indexes(
        BetaGeoModel, *(frame[column].to_numpy() for column in frame.columns), {days: actual.to_numpy()}
    ).values()
    return index


def test_the_seasonal_index_is_one_on_a_steady_shop_and_the_peak_factor_on_a_seasonal_one():
    """A window of the same season a year earlier: on a shop without seasons, BG/NBD fitted before it
    expects what came (index about 1); where the last 90 days of each year sell at 4x, it sees a peak."""
    rng = np.random.default_rng(21)
    steady = purchase_logs.purchase_log(rng, 3000, DAYS, rate=(2.0, 80.0), dropout=(1.0, 6.0))
    season = np.where(np.arange(DAYS) % 365 >= 275, 4.0, 1.0)
    seasonal = purchase_logs.purchase_log(rng, 3000, DAYS, rate=(2.0, 80.0), dropout=(1.0, 6.0), season=season)
    window_start = DAYS - 1 - WINDOW - 365  # the last 90 days of the second year

    assert seasonal_index_of(steady, window_start, WINDOW) == pytest.approx(1.0, abs=0.1)
    assert seasonal_index_of(seasonal, window_start, WINDOW) > 2.0  # the peak against a rate averaged over the year


def test_own_count_takes_the_window_a_year_earlier_or_the_last_days_repeat_purchases():
    predicted = purchase_forecast.own_count(
        same_window_a_year_earlier=[3, 0, 0],
        last_days=[1, 2, 2],
        bought_a_year_earlier=[True, False, False],
        days_since_first_purchase=[800, 200, 40],  # the third customer's first purchase is in the last 90 days
        horizon_days=WINDOW,
    )
    np.testing.assert_array_equal(predicted, [3, 2, 1])


def test_forecast_scores_and_the_choice():
    actual = np.array([0, 0, 1, 3])
    scores = {
        "bgnbd": purchase_forecast.forecast_scores([0.5, 0.5, 0.5, 0.5], actual),
        "bgnbd_seasonal": purchase_forecast.forecast_scores([0.2, 0.4, 1.0, 2.0], actual),
        "own_count": purchase_forecast.forecast_scores([0.5, 0.5, 0.5, 0.5], actual),
    }

    assert scores["bgnbd"]["rmse"] == pytest.approx(math.sqrt((0.25 + 0.25 + 0.25 + 6.25) / 4))
    assert scores["bgnbd"]["mae"] == pytest.approx(1.0) and scores["bgnbd"]["predicted_total"] == 2.0
    assert scores["bgnbd_seasonal"]["no_purchase_roc_auc"] == 1.0 and scores["bgnbd"]["no_purchase_roc_auc"] == 0.5
    assert purchase_forecast.choose(scores) == "bgnbd_seasonal"
    assert purchase_forecast.choose({"own_count": scores["bgnbd"], "bgnbd": scores["bgnbd"]}) == "bgnbd"  # a tie: the simpler
    assert math.isnan(purchase_forecast.forecast_scores([1, 2], [1, 1])["no_purchase_roc_auc"])  # everyone bought


def test_by_frequency_groups_seven_and_more():
    rows = purchase_forecast.by_frequency([0, 0, 1, 7, 12], [0.1, 0.3, 1.0, 5.0, 7.0], [0, 1, 2, 4, 8])

    assert [row["repeat_purchases"] for row in rows] == ["0", "1", "7+"]
    assert rows[0] == {"repeat_purchases": "0", "customers": 2, "mean_predicted": pytest.approx(0.2), "mean_actual": 0.5}
    assert rows[2]["mean_predicted"] == pytest.approx(6.0) and rows[2]["mean_actual"] == 6.0


def test_a_seasonal_forecast_scales_each_stretch_and_stays_cumulative():
    """A busy first month and a quiet rest: per-stretch indexes keep 30 days <= 90 days <= 365 days, which
    one index per horizon (2.0 for 30 days, 0.5 for 90) would not."""
    expected = {30: np.array([1.0, 0.3]), 90: np.array([3.0, 0.9]), 365: np.array([12.0, 3.6])}

    forecast = purchase_forecast.seasonal_forecast(expected, {30: 2.0, 90: 0.25, 365: None})

    np.testing.assert_allclose(forecast[30], [2.0, 0.6])
    np.testing.assert_allclose(forecast[90], [2.0 + 0.5, 0.6 + 0.15])
    np.testing.assert_allclose(forecast[365], [2.5 + 9.0, 0.75 + 2.7])
    assert (forecast[30] <= forecast[90]).all() and (forecast[90] <= forecast[365]).all()
