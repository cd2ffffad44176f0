"""Figures of a training run, logged to MLflow: calibration, cumulative gains, holdout orders."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")  # files only: tasks and tests have no display

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def calibration_figure(tables: Mapping[str, pd.DataFrame]) -> Figure:
    """Observed churn rate against mean predicted probability per band, one line per model."""
    figure, axes = plt.subplots(figsize=(5.5, 5))
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    for name, table in tables.items():
        axes.plot(table["mean_predicted"], table["observed"], marker="o", label=name)
    axes.set(
        xlabel="predicted churn probability",
        ylabel="observed churn rate",
        xlim=(0, 1),
        ylim=(0, 1),
        title="Calibration on the holdout snapshot",
    )
    axes.legend(loc="upper left")
    figure.tight_layout()
    return figure


def gains_figure(is_churned, probabilities: Mapping[str, np.ndarray]) -> Figure:
    """Share of all churners found when contacting the top x% by predicted risk, one line per model."""
    y = np.asarray(is_churned, dtype=float)
    figure, axes = plt.subplots(figsize=(5.5, 5))
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", label="random")
    for name, p in probabilities.items():
        found = np.cumsum(y[np.argsort(-np.asarray(p), kind="stable")]) / max(y.sum(), 1)
        axes.plot(np.arange(1, len(y) + 1) / len(y), found, label=name)
    axes.set(
        xlabel="share of customers contacted (highest risk first)",
        ylabel="share of churners reached",
        xlim=(0, 1),
        ylim=(0, 1),
        title="Cumulative gains on the holdout snapshot",
    )
    axes.legend(loc="lower right")
    figure.tight_layout()
    return figure


def holdout_orders_figure(repeat_purchase_days, actual, predicted, most: int = 7) -> Figure:
    """Mean actual and BG/NBD-predicted purchase days in the holdout, by repeat purchase days before it."""
    frame = pd.DataFrame(
        {"repeat_purchase_days": np.minimum(np.asarray(repeat_purchase_days), most), "actual": actual, "predicted": predicted}
    )
    means = frame.groupby("repeat_purchase_days")[["actual", "predicted"]].mean()
    figure, axes = plt.subplots(figsize=(6, 4.5))
    axes.plot(means.index, means["actual"], marker="o", label="actual")
    axes.plot(means.index, means["predicted"], marker="s", linestyle="--", label="BG/NBD expected")
    axes.set(
        xlabel=f"repeat purchases before the holdout ({most} = {most} or more)",
        ylabel="mean purchases in the holdout",
        title="Holdout: actual vs predicted purchases",
    )
    axes.legend()
    figure.tight_layout()
    return figure
