"""Offline evaluation of the recommenders and the category propensity on a shop's silver tables (by hand).

    CRM_ENV=demo .venv/bin/python bench/evaluate_recommend.py --data /work/main/data --date 2026-11-26 \\
        [--rank 16 --alpha 10 --reg-param 0.1 --max-iter 10] [--skip-propensity]

Recommendations: ALS (with its popularity fallback; with the lake's browsing events when it has them, and
then also ALS on purchases alone) and popularity alone, both fitted on purchases known at
`date - recommend.holdout_days`, precision@10 / recall@10 against the products bought after that (see
`models.recommend.evaluate_recommendations`). Propensity: hit rate@1/@3 and mean average precision of the
model and of the most-bought-category baseline, horizon `recommend.holdout_days`
(`models.propensity.evaluate_propensity`). Seconds are wall time of each evaluation (Spark already started).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="data root (CRM_DATA_DIR)")
    parser.add_argument("--date", required=True, type=date.fromisoformat, help="run date, YYYY-MM-DD")
    for name, kind in (("rank", int), ("alpha", float), ("reg-param", float), ("max-iter", int), ("holdout-days", int)):
        parser.add_argument(f"--{name}", type=kind, help=f"override recommend.{name.replace('-', '_')}")
    parser.add_argument("--skip-propensity", action="store_true")
    args = parser.parse_args()
    os.environ["CRM_DATA_DIR"] = args.data
    os.environ.setdefault("CRM_ENV", "demo")

    from core.config import load_config
    from core.lake import Lake
    from core.spark import spark_session
    from features.customer import silver_tables
    from models.propensity import evaluate_propensity
    from models.recommend import evaluate_recommendations

    settings = load_config()
    overrides = {
        name.replace("-", "_"): getattr(args, name.replace("-", "_")) for name in ("rank", "alpha", "reg-param", "max-iter", "holdout-days")
    }
    options = settings.recommend.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    statuses = settings.rfm.scored_statuses
    print(f"recommend options: {options.model_dump()}")
    with spark_session(settings, "evaluate-recommend") as spark, tempfile.TemporaryDirectory() as checkpoints:
        spark.sparkContext.setCheckpointDir(checkpoints)
        lake = Lake(spark, settings.lake_dir)
        silver = silver_tables(lake)  # with silver/events when the lake has them
        started = time.perf_counter()
        figures = evaluate_recommendations(silver, args.date, statuses, options)
        seconds = time.perf_counter() - started
        print(
            f"\nrecommendations, fitted on purchases to {figures['cutoff']}, holdout to {args.date} "
            f"({figures['train_interactions']} customer-product pairs in training; {seconds:.1f} s)"
        )
        print(f"{'':18} {'customers':>9} {'P@10':>7} {'R@10':>7} | {'warm':>5} {'P@10':>7} {'R@10':>7}")
        for name in ("als", "als_purchases_only", "popularity"):
            if f"{name}_customers" not in figures:  # no events: ALS is on purchases alone anyway
                continue
            f = {key.removeprefix(f"{name}_"): value for key, value in figures.items() if key.startswith(f"{name}_")}
            print(
                f"{name:18} {f['customers']:>9} {f['precision_at_10']:>7.4f} {f['recall_at_10']:>7.4f} | "
                f"{f['warm_customers']:>5} {f['warm_precision_at_10']:>7.4f} {f['warm_recall_at_10']:>7.4f}"
            )
        if args.skip_propensity:
            return
        started = time.perf_counter()
        figures = evaluate_propensity(silver, args.date, options.holdout_days, statuses, options)
        seconds = time.perf_counter() - started
        print(
            f"\ncategory propensity, scored at {figures['scored_at']} for the next {options.holdout_days} days: "
            f"{figures['customers']} customers bought then ({figures['buyers_at_scoring']} buyers at scoring, "
            f"{figures['categories']} categories; {seconds:.1f} s)"
        )
        print(f"{'':12} {'hit@1':>7} {'hit@3':>7} {'MAP':>7}")
        for name in ("model", "most_bought"):
            print(
                f"{name:12} {figures[f'{name}_hit_rate_at_1']:>7.4f} {figures[f'{name}_hit_rate_at_3']:>7.4f} "
                f"{figures[f'{name}_mean_average_precision']:>7.4f}"
            )


if __name__ == "__main__":
    main()
