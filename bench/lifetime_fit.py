"""The lifetime fits' diagnostics and the expected-orders comparison on the CDNOW sample (run by hand).

    PYTHONPATH=. .venv/bin/python bench/lifetime_fit.py

CDNOW (lifetimes' `CDNOW_sample.txt`, 2,357 customers who first bought in Q1 1997), in days as the
pipeline counts: calibration to 1997-09-30, holdout 1997-10-01 .. 1998-06-30 (273 days). Prints each fit's
`FitDiagnostics`, Fader & Hardie's calibration/holdout check by repeat purchases, and the candidates of
`models.purchase_forecast` on the holdout. CDNOW has no year before its holdout (the cohort starts in
January 1997), so `bgnbd_seasonal` cannot be formed and `own_count` is each customer's purchase days in
the 273 days before the holdout.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from lifetimes.datasets import load_dataset

from models import purchase_forecast
from models.lifetime import BetaGeoModel, GammaGammaModel

CALIBRATION_END = pd.Timestamp("1997-09-30")
HOLDOUT_END = pd.Timestamp("1998-06-30")


def main() -> None:
    transactions = load_dataset("CDNOW_sample.txt", header=None, sep=r"\s+")
    transactions.columns = ["master_id", "customer_id", "date", "qty", "amount"]
    transactions["date"] = pd.to_datetime(transactions["date"].astype(str), format="%Y%m%d")
    days = transactions.groupby(["customer_id", "date"], as_index=False)["amount"].sum()  # purchase days
    calibration = days[days["date"] <= CALIBRATION_END]
    grouped = calibration.groupby("customer_id")
    first, last = grouped["date"].min(), grouped["date"].max()
    x = (grouped.size() - 1).to_numpy(dtype=float)
    recency = (last - first).dt.days.to_numpy(dtype=float)
    T = (CALIBRATION_END - first).dt.days.to_numpy(dtype=float)
    repeat_value = (
        calibration.assign(first=calibration["customer_id"].map(first)).query("date > first").groupby("customer_id")["amount"].mean()
    )
    m = repeat_value.reindex(first.index).fillna(0).to_numpy()
    horizon = (HOLDOUT_END - CALIBRATION_END).days
    in_holdout = days[(days["date"] > CALIBRATION_END) & (days["date"] <= HOLDOUT_END)]
    actual = in_holdout.groupby("customer_id").size().reindex(first.index, fill_value=0).to_numpy(dtype=float)
    before = calibration[calibration["date"] > CALIBRATION_END - pd.Timedelta(days=horizon)]
    last_days = before.groupby("customer_id").size().reindex(first.index, fill_value=0).to_numpy(dtype=float)

    beta_geo = BetaGeoModel().fit(x, recency, T)
    gamma_gamma = GammaGammaModel().fit(x[x > 0], m[x > 0])
    print(f"CDNOW: {len(x):,} customers, calibration to {CALIBRATION_END.date()}, holdout {horizon} days to {HOLDOUT_END.date()}")
    for fitted in (beta_geo, gamma_gamma):
        print(json.dumps(fitted.diagnostics_.as_dict(), indent=1))
    predicted = {
        "bgnbd": beta_geo.expected_purchases(horizon, x, recency, T),
        "own_count": purchase_forecast.own_count(np.zeros(len(x)), last_days, np.zeros(len(x), dtype=bool), T, horizon),
    }
    print(f"\n{'forecast':<12} {'RMSE':>7} {'MAE':>7} {'predicted':>10} {'actual':>7} {'no-purchase ROC-AUC':>20}")
    scores = {}
    for name, values in predicted.items():
        scores[name] = purchase_forecast.forecast_scores(values, actual)
        figures = scores[name]
        print(
            f"{name:<12} {figures['rmse']:>7.3f} {figures['mae']:>7.3f} {figures['predicted_total']:>10.1f} "
            f"{figures['actual_total']:>7.0f} {figures['no_purchase_roc_auc']:>20.3f}"
        )
    alive = beta_geo.probability_alive(x, recency, T)
    print(f"1 - P(alive) as the no-purchase ranking: ROC-AUC {purchase_forecast.forecast_scores(alive, actual)['no_purchase_roc_auc']:.3f}")
    print(f"chosen (lowest RMSE): {purchase_forecast.choose(scores)}")
    print(f"\n{'repeat purchases':<17} {'customers':>9} {'mean predicted':>15} {'mean actual':>12}")
    for row in purchase_forecast.by_frequency(x, predicted["bgnbd"], actual):
        print(f"{row['repeat_purchases']:<17} {row['customers']:>9,} {row['mean_predicted']:>15.3f} {row['mean_actual']:>12.3f}")


if __name__ == "__main__":
    main()
