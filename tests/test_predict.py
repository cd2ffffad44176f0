"""The nightly scores of a shop that cannot be fully scored yet: what is published and what is said."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from core.config import load_config
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

    value, run = predict.value_scores(history, settings.clv, date(2026, 11, 26), "no-repeat", degraded)

    assert run is None
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

    value, _ = predict.value_scores(history, settings.clv, date(2026, 11, 26), "credits", degraded)

    money = list(predict.MONEY_COLUMNS)
    assert value.loc[repeat[:2], money].isna().all().all()
    assert value.drop(index=repeat[:2])[money].notna().all().all()
    assert value["p_alive"].notna().all()  # the purchase model still scores them
    assert degraded["order_value"].startswith("2 repeat buyer(s) whose repeat spend net of credit notes is not positive")
