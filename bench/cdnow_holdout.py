"""A CDNOW night's published scores against what its customers did next (run by hand, never in tests).

    CRM_DATA_DIR=/tmp/t27/cdnow .venv/bin/python bench/cdnow_holdout.py --date 1997-09-30

Reads `customer_scores` from the night's CRM database and CDNOW's full purchase log (lifetimes'
CDNOW_master.txt, `demo_shop/cdnow.py`); a customer churned when they bought nothing in the `churn.horizon_days`
after the run date. Prints ROC-AUC, Brier score and expected calibration error (customer-weighted mean
|observed - mean predicted| over ten equal-width bands) of the published churn probability and of
1 - P(alive), BG/NBD's expected orders as a ranking, and how P(alive) is spread. The night must have run on
the shop written with `--through` that date, or later purchases would be in its features.
"""

from __future__ import annotations

import argparse
from datetime import date, timedelta

import numpy as np
import pandas as pd
from sklearn.metrics import brier_score_loss, roc_auc_score

from core import db
from core.config import load_config
from demo_shop.cdnow import default_log_path, read_purchase_log

BANDS = 10


def expected_calibration_error(churned: np.ndarray, probability: np.ndarray, bands: int = BANDS) -> float:
    """Customer-weighted mean |observed churn rate - mean probability| over `bands` equal-width bands."""
    band = np.minimum((probability * bands).astype(int), bands - 1)
    return sum(abs(churned[band == b].mean() - probability[band == b].mean()) * (band == b).sum() for b in np.unique(band)) / len(churned)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--date", type=date.fromisoformat, required=True, help="the night's run date, YYYY-MM-DD")
    args = parser.parse_args()
    settings = load_config()
    horizon = settings.churn.horizon_days
    log = read_purchase_log(default_log_path())
    later = log[(log["purchased_on"] > args.date) & (log["purchased_on"] <= args.date + timedelta(days=horizon))]
    with db.engine(settings.crm.db_url).connect() as connection:
        scores = pd.read_sql("SELECT * FROM customer_scores", connection).set_index("customer_id")
    if scores.empty or str(scores["as_of"].iloc[0]) != args.date.isoformat():
        raise SystemExit(f"customer_scores in {db.masked(settings.crm.db_url)} is not of {args.date}: run that night first")
    churned = ~scores.index.isin(later["customer_id"].unique())
    print(f"{len(scores):,} customers; churned (no purchase in the {horizon} days after {args.date}): {churned.mean():.3f}")
    for name, probability in (("churn_probability", scores["churn_probability"]), ("1 - p_alive", 1 - scores["p_alive"])):
        p = probability.to_numpy(dtype=float)
        print(
            f"  {name:<20} ROC-AUC {roc_auc_score(churned, p):.4f}  Brier {brier_score_loss(churned, p):.4f}  "
            f"ECE {expected_calibration_error(churned, p):.4f}  mean {p.mean():.3f}"
        )
    print(f"  {'expected_orders_90d':<20} ROC-AUC {roc_auc_score(churned, -scores['expected_orders_90d']):.4f} (a ranking, no probability)")
    known = log[log["purchased_on"] <= args.date]
    one_time = scores.index.isin(known.groupby("customer_id")["purchased_on"].nunique().loc[lambda days: days == 1].index)
    alive = scores["p_alive"]
    print(
        f"P(alive): mean {alive.mean():.3f}, median {alive.median():.3f}, quartiles {alive.quantile(0.25):.3f} / "
        f"{alive.quantile(0.75):.3f}, at 0.9 or more {(alive >= 0.9).mean():.3f}; {one_time.sum():,} one-time buyers, mean "
        f"{alive[one_time].mean():.3f}"
    )


if __name__ == "__main__":
    main()
