"""The nightly scores of a shop that cannot be fully scored yet: what is published and what is said."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import purchase_logs
import pytest

from core.config import load_config
from features.purchases import orders_known_by
from jobs import predict


def test_without_a_repeat_buyer_the_value_scores_are_null_and_the_reason_is_given():
    settings = load_config(environ={"CRM_ENV": "test"})
    history = pd.DataFrame(
        {
            "repeat_purchase_days": [0, 0, 0],
            "purchase_span_days": [0.0, 0.0, 0.0],
            "days_since_first_purchase": [3.0, 10.0, 40.0],
            "mean_repeat_order_value": [0.0, 0.0, 0.0],
        },
        index=pd.Index([7, 8, 9], name="customer_id"),
    )
    degraded: dict[str, str] = {}

    value, run, fit = predict.value_scores(history, settings.clv, date(2026, 11, 26), "no-repeat", degraded)

    assert run is None and fit == {"fitted": False, "reason": degraded["value"]}
    assert list(value.index) == [7, 8, 9] and set(predict.VALUE_COLUMNS) <= set(value.columns)
    assert value[list(predict.VALUE_COLUMNS)].isna().all().all()
    assert degraded["value"].startswith("no value model tonight (3 buyers, 0 with a repeat purchase): ")
    assert "no customer has a repeat purchase" in degraded["value"]


def test_without_a_churn_model_the_churn_columns_are_null():
    buyers = pd.DataFrame(index=pd.Index([1, 2], name="customer_id"))
    columns = predict.churn_scores(None, buyers, load_config(environ={"CRM_ENV": "test"}), None)

    frame = pd.DataFrame(index=buyers.index).assign(**columns)
    assert frame["churn_probability"].isna().all() and np.all(frame["churn_risk"].isna())
    assert frame["churn_model_version"].isna().all()


def test_a_repeat_buyer_whose_net_spend_is_not_positive_gets_no_order_value_and_is_counted(tmp_path):
    """Gamma-Gamma models positive order values: a repeat buyer whose repeat spend net of credit notes is 0
    or below is left out of it (null money columns, counted in `degraded`); the others are valued as usual."""
    from models import tracking

    settings = load_config(environ={"CRM_ENV": "test", "CRM_DATA_DIR": str(tmp_path)})
    tracking.connect(settings.mlflow)  # the fit is logged: to this test's store, not ./mlflow.db
    rng = np.random.default_rng(3)
    n = 300
    x = rng.poisson(2.0, n)
    T = rng.uniform(100, 400, n)
    history = pd.DataFrame(
        {
            "repeat_purchase_days": x,
            "purchase_span_days": np.where(x > 0, T * rng.uniform(0.2, 1.0, n), 0.0).round(),
            "days_since_first_purchase": T.round(),
            "mean_repeat_order_value": np.where(x > 0, rng.gamma(4.0, 30.0, n), 0.0),
        },
        index=pd.Index(np.arange(1, n + 1), name="customer_id"),
    )
    repeat = history.index[history["repeat_purchase_days"] > 0]
    history.loc[repeat[:2], "mean_repeat_order_value"] = [-25.0, 0.0]  # more credited than bought again
    degraded: dict[str, str] = {}

    value, _, _ = predict.value_scores(history, settings.clv, date(2026, 11, 26), "credits", degraded)

    money = list(predict.MONEY_COLUMNS)
    assert value.loc[repeat[:2], money].isna().all().all()
    assert value.drop(index=repeat[:2])[money].notna().all().all()
    assert value["p_alive"].notna().all()  # the purchase model still scores them
    assert degraded["order_value"].startswith("2 repeat buyer(s) whose repeat spend net of credit notes is not positive")


def _history(log: pd.DataFrame, as_of_day: int) -> pd.DataFrame:
    """The predict job's history frame of a simulated log (every purchase day worth 50)."""
    frame = purchase_logs.histories(log, as_of_day)
    spend = np.random.default_rng(len(frame)).gamma(4.0, 12.5, len(frame))  # mean 50 per purchase day
    return frame.assign(mean_repeat_order_value=np.where(frame["repeat_purchase_days"] > 0, spend, 0.0)).rename_axis("customer_id")


def _diagnostics(run_id: str) -> dict:
    import mlflow

    return mlflow.artifacts.load_dict(f"runs:/{run_id}/{predict.DIAGNOSTICS_ARTIFACT}")


def test_a_log_whose_dropout_is_not_identifiable_publishes_no_p_alive_and_says_why(tmp_path):
    """Customers who all keep buying at steady Poisson rates: the BG/NBD fit has no dropout (a -> 0), so
    P(alive) is 1 for everyone by construction, not by evidence. It is left null, the reason is in
    `degraded`, the diagnostics in MLflow flag it, and the expected orders are still published."""
    import mlflow

    from models import tracking

    settings = load_config(environ={"CRM_ENV": "test", "CRM_DATA_DIR": str(tmp_path)})
    tracking.connect(settings.mlflow)
    log = purchase_logs.purchase_log(np.random.default_rng(7), 2000, 730, rate=(2.0, 60.0), dropout=None)
    degraded: dict[str, str] = {}

    value, run, fit = predict.value_scores(_history(log, 729), settings.clv, date(2026, 11, 26), "steady", degraded)

    assert value["p_alive"].isna().all()
    assert value["expected_orders_90d"].notna().all() and value["expected_orders_90d"].sum() > 0
    assert "dropout_not_identifiable" not in degraded.get("value", "")
    assert "does not show customers leaving" in degraded["p_alive"] and "churn_probability" in degraded["p_alive"]
    assert fit["dropout_identifiable"] is False and fit["expected_orders_model"] == "bgnbd"
    diagnostics = _diagnostics(run)
    purchase = diagnostics["purchase_model"]
    assert "dropout_not_identifiable" in purchase["problems"] and "a/(a+b)" in purchase["boundary"]
    assert purchase["figures"]["dropout_likelihood_ratio"] < 5.99 and purchase["converged"]
    recorded = mlflow.get_run(run)
    assert recorded.data.params["dropout_identifiable"] == "False" and recorded.data.tags["dropout_identifiable"] == "false"
    assert recorded.data.metrics["purchase_model_log_likelihood"] == pytest.approx(purchase["log_likelihood"])


def test_a_log_from_a_genuine_bg_nbd_process_is_not_flagged(tmp_path):
    from models import tracking

    settings = load_config(environ={"CRM_ENV": "test", "CRM_DATA_DIR": str(tmp_path)})
    tracking.connect(settings.mlflow)
    log = purchase_logs.purchase_log(np.random.default_rng(8), 2000, 730, rate=(2.0, 60.0), dropout=(1.0, 4.0))
    degraded: dict[str, str] = {}

    value, run, fit = predict.value_scores(_history(log, 729), settings.clv, date(2026, 11, 26), "genuine", degraded)

    assert degraded == {} and fit["dropout_identifiable"] is True
    assert value["p_alive"].between(0, 1).all() and value["p_alive"].min() < 0.5
    purchase = _diagnostics(run)["purchase_model"]
    assert purchase["problems"] == {} and purchase["boundary"] == {}
    assert purchase["figures"]["dropout_likelihood_ratio"] > 100
    assert 0.1 < purchase["figures"]["mean_dropout_probability"] < 0.3  # the truth: E[p] = 1 / (1 + 4)


def test_a_seasonal_shop_publishes_the_expected_orders_that_won_its_holdout(spark, tmp_path):
    """Three years of a shop whose customers never leave and buy at four times their usual rate in the last
    90 days of each year (the case of a wholesaler before Christmas): the run date's holdout (those 90 days)
    is its peak. The fit flags dropout as not identifiable (P(alive) null, the reason in `degraded`); BG/NBD,
    stationary, under-forecasts the peak; the seasonal index learnt a year earlier corrects the level; the
    winner by holdout RMSE is published and logged."""
    from test_features import silver_frames

    from models import tracking

    settings = load_config(environ={"CRM_ENV": "test", "CRM_DATA_DIR": str(tmp_path)})
    tracking.connect(settings.mlflow)
    days = 3 * 365
    season = np.where(np.arange(days) % 365 >= 275, 4.0, 1.0)
    log = purchase_logs.purchase_log(np.random.default_rng(9), 1500, days, rate=(2.0, 80.0), dropout=None, season=season)
    start = date(2023, 12, 1)
    run_date = start + timedelta(days=days - 1)
    orders = orders_known_by(silver_frames(spark, {"orders": purchase_logs.orders(log, start)})["orders"], run_date).toPandas()
    seasons = predict.seasonal_histories(orders, run_date, 90, settings)
    history = _history(log, days - 1)
    degraded: dict[str, str] = {}

    value, run, fit = predict.value_scores(history, settings.clv, run_date, "seasonal", degraded, seasons)

    assert fit["dropout_identifiable"] is False and value["p_alive"].isna().all()
    assert "does not show customers leaving" in degraded["p_alive"]
    holdout = fit["holdout"]
    print(f"chosen {fit['expected_orders_model']}; holdout {holdout}")
    actual = holdout["bgnbd"]["actual_total"]
    holdout_start = days - 1 - 90
    assert actual == purchase_logs.purchases_between(log, holdout_start, days - 1, purchase_logs.histories(log, holdout_start).index).sum()
    assert holdout["bgnbd"]["predicted_total"] < 0.6 * actual  # the stationary model misses the peak
    assert abs(holdout["bgnbd_seasonal"]["predicted_total"] / actual - 1) < 0.2
    assert fit["expected_orders_model"] != "bgnbd"
    chosen = fit["expected_orders_model"]
    assert holdout[chosen]["rmse"] == min(figures["rmse"] for figures in holdout.values())
    diagnostics = _diagnostics(run)["expected_orders"]
    assert diagnostics["chosen"] == chosen and [row["repeat_purchases"] for row in diagnostics["by_frequency"]][0] == "0"
    # Published: the chosen model's forecast of the next 90 days (the quiet season), not BG/NBD's.
    stationary = predict.PURCHASE_MODELS["bgnbd"]().fit(*(history[column] for column in predict.PURCHASE_MODEL_INPUTS))
    bg_nbd_90d = stationary.expected_purchases(90, *(history[column] for column in predict.PURCHASE_MODEL_INPUTS)).sum()
    assert value["expected_orders_90d"].sum() < 0.8 * bg_nbd_90d
    assert any(evaluation["model"] == f"expected_orders ({chosen})" for evaluation in tracking.evaluations(settings.mlflow, "seasonal"))


def test_one_bg_nbd_fit_gives_the_churn_inputs_and_the_value_scores_of_two_fits(tmp_path):
    """The night fits BG/NBD once for the churn classifier's inputs and the value scores: the scores are
    those of a fit of each, to the bit. A buyer without a purchase history (none in the history frame) keeps
    today's outcome: the churn inputs come from the others' fit and are null for them, and the value model,
    which refuses such rows, is fitted on its own (and says why it cannot be)."""
    from models import churn, tracking

    settings = load_config(environ={"CRM_ENV": "test", "CRM_DATA_DIR": str(tmp_path)})
    tracking.connect(settings.mlflow)
    log = purchase_logs.purchase_log(np.random.default_rng(22), 400, 500, rate=(2.0, 60.0), dropout=(1.0, 3.0))
    history = _history(log, 499)
    run_date, horizon_days = date(2026, 11, 26), settings.churn.horizon_days

    beta_geo = predict.churn_purchase_model(history, {})
    assert predict.shared_fit(beta_geo, history, settings.clv) is beta_geo
    pd.testing.assert_frame_equal(
        predict.churn_inputs(beta_geo, history, horizon_days),
        churn.purchase_model_inputs(churn.fit_purchase_model(history), history, horizon_days),
        check_exact=True,
    )
    shared, _, shared_fit = predict.value_scores(history, settings.clv, run_date, "shared", {}, fitted=beta_geo)
    own, _, own_fit = predict.value_scores(history, settings.clv, run_date, "own", {})
    pd.testing.assert_frame_equal(shared, own, check_exact=True)
    assert shared_fit == own_fit and shared["p_alive"].notna().all()

    without = pd.Index([10**6, 10**6 + 1], name="customer_id")
    partial = history.reindex(history.index.append(without))
    partial_fit = predict.churn_purchase_model(partial, {})
    assert partial_fit.params_ == beta_geo.params_
    inputs = predict.churn_inputs(partial_fit, partial, horizon_days)
    assert inputs.loc[without].isna().all(axis=None) and inputs.drop(without).notna().all(axis=None)
    assert predict.shared_fit(partial_fit, partial, settings.clv) is None
    mbg = settings.clv.model_copy(update={"purchase_model": "mbgnbd"})
    assert predict.shared_fit(beta_geo, history, mbg) is None
    degraded: dict[str, str] = {}
    value, run, _ = predict.value_scores(partial, settings.clv, run_date, "partial", degraded, fitted=None)
    assert run is None and value[list(predict.VALUE_COLUMNS)].isna().all(axis=None) and "no value model tonight" in degraded["value"]
