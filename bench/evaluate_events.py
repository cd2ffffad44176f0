"""What browsing events are worth to the models, on a shop's lake after a night with events (by hand).

    CRM_ENV=demo .venv/bin/python bench/evaluate_events.py --data data --date 2026-11-26

Churn: the training DAG's two point-in-time snapshots (`jobs.train.snapshot`: features at date - 2 x
churn.horizon_days, labelled by the horizon after it; the holdout at date - horizon), one classifier fitted
with the configured churn features and one without the activity columns (`features.activity.CHURN_COLUMNS`),
both the configured algorithm and calibration; ROC-AUC and PR-AUC on the holdout snapshot.

Recommendations: `models.recommend.evaluate_recommendations` on the time split of recommend.holdout_days:
ALS fitted on purchases and events, ALS on purchases alone, and popularity; precision@10 and recall@10.

The lake must hold events from at least 2 x horizon + 60 days before the date (the generator's default
events_days, 240, does), or the training snapshot has no activity to learn from.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="data root (CRM_DATA_DIR)")
    parser.add_argument("--date", required=True, type=date.fromisoformat, help="run date, YYYY-MM-DD")
    parser.add_argument("--skip-recommend", action="store_true")
    args = parser.parse_args()
    os.environ["CRM_DATA_DIR"] = str(Path(args.data).resolve())
    os.environ.setdefault("CRM_ENV", "demo")

    from sklearn.metrics import average_precision_score, roc_auc_score

    from core.config import load_config
    from core.lake import Lake
    from core.spark import spark_session
    from features.activity import CHURN_COLUMNS
    from features.customer import silver_tables
    from jobs.train import snapshot
    from models.churn import BGNBD_INPUTS, ChurnClassifier
    from models.recommend import evaluate_recommendations

    settings = load_config()
    options = settings.churn
    with spark_session(settings, "evaluate-events") as spark, tempfile.TemporaryDirectory() as checkpoints:
        spark.sparkContext.setCheckpointDir(checkpoints)
        lake = Lake(spark, settings.lake_dir)
        if not lake.exists("silver", "events"):
            raise SystemExit(f"no silver/events in {settings.lake_dir}: run a night with events first")
        started = time.perf_counter()
        horizon = options.horizon_days
        training, holdout = (snapshot(lake, args.date - timedelta(days=days), settings) for days in (2 * horizon, horizon))
        # The gold columns of the churn list (BG/NBD's churn inputs are no column of the snapshots' features).
        with_activity = [name for name in options.features if name not in BGNBD_INPUTS]
        without = [name for name in with_activity if name not in CHURN_COLUMNS]
        if with_activity == without:
            with_activity = without + list(CHURN_COLUMNS)
        y_train, y_holdout = training.outcome["is_churned"], holdout.outcome["is_churned"]
        active = (training.features["visits_30d"] > 0).mean()
        print(
            f"churn, trained at {training.as_of} ({len(y_train):,} buyers, {y_train.mean():.1%} churned, "
            f"{active:.0%} with a visit in the 30 days before), judged at {holdout.as_of} "
            f"({len(y_holdout):,} buyers, {y_holdout.mean():.1%} churned); {options.model}, {options.calibration}"
        )
        print(f"{'features':<34} {'ROC-AUC':>8} {'PR-AUC':>8}")
        for title, features in ((f"without activity ({len(without)})", without), (f"with activity ({len(with_activity)})", with_activity)):
            model = ChurnClassifier(features, options.model, options.calibration, options.seed)
            model.fit(training.features, y_train)
            probability = model.churn_probability(holdout.features)
            print(f"{title:<34} {roc_auc_score(y_holdout, probability):>8.4f} {average_precision_score(y_holdout, probability):>8.4f}")
        print(f"({time.perf_counter() - started:.1f} s)")
        if args.skip_recommend:
            return
        started = time.perf_counter()
        figures = evaluate_recommendations(silver_tables(lake), args.date, settings.rfm.scored_statuses, settings.recommend)
        print(
            f"\nrecommendations, fitted on what was known at {figures['cutoff']}, judged on the purchases up to "
            f"{args.date} ({figures['train_interactions']:,} customer-product purchases, "
            f"{figures['train_observations']:,} with the events; {time.perf_counter() - started:.1f} s)"
        )
        print(f"{'':20} {'customers':>9} {'P@10':>7} {'R@10':>7} | {'known':>6} {'P@10':>7} {'R@10':>7}")
        for name, title in (("als", "ALS, with events"), ("als_purchases_only", "ALS, purchases only"), ("popularity", "popularity")):
            f = {key.removeprefix(f"{name}_"): value for key, value in figures.items() if key.startswith(f"{name}_")}
            print(
                f"{title:20} {f['customers']:>9,} {f['precision_at_10']:>7.4f} {f['recall_at_10']:>7.4f} | "
                f"{f['warm_customers']:>6,} {f['warm_precision_at_10']:>7.4f} {f['warm_recall_at_10']:>7.4f}"
            )


if __name__ == "__main__":
    main()
