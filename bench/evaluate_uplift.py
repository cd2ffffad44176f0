"""Evaluate coupon targeting by uplift on a generated shop (run by hand, never in tests).

    .venv/bin/python bench/evaluate_uplift.py --data /work/main/data [--method two_model] [--algorithm ...]

1. Past campaigns: `models.uplift.campaign_outcomes` on silver customers, coupons and orders (delta-rs,
   no Spark), compared with the generator's truth file `truth/coupon_assignments.parquet` (used only here).
2. Features as of each campaign's start: `features.customer.customer_features` (Spark) at
   as_of = valid_from - 1 day, i.e. everything created before valid_from 00:00 UTC; the model uses the
   churn model's feature list (`churn.features`) plus the coupon terms (`uplift.TERM_FEATURES`).
3. Churn risk at each campaign's start: `models.churn.ChurnClassifier` (`churn.model`, calibration, seed)
   fitted on the labelled snapshot at as_of - `churn.horizon_days` (`jobs.train.snapshot`: its labels
   end at as_of, so nothing after the campaign's start is used), scored at as_of. Customers without a
   purchase by then have no churn risk and are ranked last by that strategy.
4. Holdout: `uplift.holdout_mask` per campaign (`uplift.holdout_share`, `uplift.seed`). Models: one pooled
   model on the training rows of all campaigns, and one model per campaign for comparison. Printed per
   campaign and pooled (all holdouts together): holdout sizes, normalised Qini coefficient, uplift@10%
   and @30% (probability points) for the pooled model, the per-campaign model, churn-risk targeting and
   random targeting (mean of `uplift.RANDOM_DRAWS` random rankings).
5. Offers at the data's end date with the pooled model refitted on all campaign rows (`select_offers`,
   `uplift.budget`, `uplift.min_expected_uplift`; order value = the customer's mean order value to date,
   else the median of buyers).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="data root of a generated shop (lake/silver, truth/)")
    parser.add_argument("--method", choices=("two_model", "class_transformation"), help="default: uplift.method")
    parser.add_argument(
        "--features-cache", type=Path, help="parquet folder: reuse the Spark features saved there by an earlier run, else save them"
    )
    parser.add_argument("--algorithm", default="logistic_regression", choices=("hist_gradient_boosting", "logistic_regression"))
    args = parser.parse_args()
    os.environ["CRM_DATA_DIR"] = str(Path(args.data).resolve())

    from deltalake import DeltaTable
    from threadpoolctl import threadpool_limits

    from core.config import load_config
    from models import churn, uplift

    threadpool_limits(1)  # the cores are shared with Spark; OpenMP threads in gradient boosting oversubscribe them
    started = time.monotonic()
    settings = load_config()
    options = settings.uplift
    method = args.method or options.method
    statuses = settings.rfm.scored_statuses
    silver_dir = settings.lake_dir / "silver"
    frames = {t: DeltaTable(str(silver_dir / t)).to_pandas() for t in ("customers", "coupons", "orders")}
    outcomes = uplift.campaign_outcomes(frames["customers"], frames["coupons"], frames["orders"], statuses)

    print(
        f"shop: {args.data}  customers {len(frames['customers'])}  method {method}  algorithm {args.algorithm}"
        f"  holdout_share {options.holdout_share}  seed {options.seed}"
    )
    print("\n== reconstructed assignment vs truth/coupon_assignments.parquet")
    truth = pd.read_parquet(Path(args.data) / "truth" / "coupon_assignments.parquet")
    both = outcomes.merge(
        truth[["campaign", "customer_id", "is_treated"]],
        on=["campaign", "customer_id"],
        how="outer",
        suffixes=("", "_truth"),
        indicator=True,
    )
    compare = both.groupby("campaign").agg(
        eligible=("is_treated", "count"),
        eligible_truth=("is_treated_truth", "count"),
        treated=("is_treated", "sum"),
        treated_truth=("is_treated_truth", "sum"),
        only_here=("_merge", lambda m: int((m == "left_only").sum())),
        only_truth=("_merge", lambda m: int((m == "right_only").sum())),
        group_differs=("_merge", lambda m: 0),
    )
    matched = both[both["_merge"] == "both"]
    compare["group_differs"] = (
        (matched["is_treated"] != matched["is_treated_truth"]).groupby(matched["campaign"]).sum().reindex(compare.index, fill_value=0)
    )
    print(compare.to_string())
    print("\n== outcome: P(purchase in window), by group (whole campaign)")
    rates = outcomes.groupby(["campaign", "is_treated"])["has_order"].mean().unstack()
    rates.columns = ["control", "treated"]
    rates["ate"] = rates["treated"] - rates["control"]
    print(rates.round(4).to_string())

    terms = uplift.coupon_terms(outcomes)
    end_date = pd.to_datetime(frames["orders"]["created_at"]).max().date()
    cache = args.features_cache
    if cache is not None and (cache / "campaigns.parquet").exists():
        parts = [pd.read_parquet(cache / "campaigns.parquet")]
        today = pd.read_parquet(cache / "today.parquet")
        print(f"features and churn risk read from {cache}")
    else:
        parts, today = campaign_features(settings, outcomes, terms, end_date, started)
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
            pd.concat(parts, ignore_index=True).to_parquet(cache / "campaigns.parquet")
            today.to_parquet(cache / "today.parquet")
    data = uplift.with_term_features(pd.concat(parts, ignore_index=True))
    data["is_holdout"] = False
    for coupon, rows in data.groupby("campaign"):
        data.loc[rows.index, "is_holdout"] = uplift.holdout_mask(
            rows["customer_id"], rows["is_treated"], options.holdout_share, options.seed
        )
    # The gold columns of the churn list: BG/NBD's churn inputs (models.churn.BGNBD_INPUTS) are no gold column.
    customer_features_used = [name for name in settings.churn.features if name not in churn.BGNBD_INPUTS]
    pooled_features = customer_features_used + list(uplift.TERM_FEATURES)

    def fitted(rows: pd.DataFrame, features: list[str]) -> uplift.UpliftModel:
        model = uplift.UpliftModel(features, method, args.algorithm, options.seed)
        return model.fit(rows, rows["is_treated"], rows["has_order"])

    train, holdout = data[~data["is_holdout"]], data[data["is_holdout"]].copy()
    holdout["pooled_model"] = fitted(train, pooled_features).expected_uplift(holdout)
    holdout["campaign_model"] = np.nan
    for coupon, rows in holdout.groupby("campaign"):
        model = fitted(train[train["campaign"] == coupon], customer_features_used)
        holdout.loc[rows.index, "campaign_model"] = model.expected_uplift(rows)

    train_size = train["campaign"].value_counts().to_dict()
    print("\n== holdout evaluation (qini: normalised, 1 = perfect, 0 = random; uplift@k: probability points)")
    for name, rows in [*holdout.groupby("campaign"), ("POOLED (all holdouts)", holdout)]:
        # Scores of the per-campaign models are on different scales; pooled over campaigns they are still
        # each campaign's own uplift estimate, which is what one would rank by.
        report = uplift.targeting_report(
            rows,
            {"pooled_model": rows["pooled_model"], "campaign_model": rows["campaign_model"], "churn_risk": rows["churn_probability"]},
            seed=options.seed,
        )
        print(
            f"\n-- {name}: holdout {len(rows)} (treated {int(rows['is_treated'].sum())}, control "
            f"{int((~rows['is_treated']).sum())}); train {train_size.get(name, len(train))}; "
            f"no churn score (no purchase yet) {int(rows['churn_probability'].isna().sum())}"
        )
        print(report.drop(columns=["customers", "treated", "control"]).round(4).to_string(index=False))

    print(
        f"\n== offers as of {end_date} (pooled model refitted on all {len(data)} campaign rows; budget "
        f"{options.budget}, min_expected_uplift {options.min_expected_uplift})"
    )
    model = fitted(data, pooled_features)
    scored = []
    for _, term in terms.iterrows():
        frame = uplift.with_term_features(
            today.assign(discount_type=term["discount_type"], discount_value=term["discount_value"], window_days=term["window_days"])
        )
        scored.append(
            pd.DataFrame(
                {
                    "customer_id": today["customer_id"],
                    "coupon": term["coupon"],
                    "expected_uplift": model.expected_uplift(frame),
                    "baseline_probability": model.baseline_probability(frame),
                }
            )
        )
    aov = today["avg_order_value"].astype("float64")
    order_value = pd.DataFrame({"customer_id": today["customer_id"], "expected_order_value": aov.fillna(aov.median())})
    offers = uplift.select_offers(pd.concat(scored, ignore_index=True), order_value, terms, options.budget, options.min_expected_uplift)
    summary = pd.concat(scored).groupby("coupon")["expected_uplift"].describe()[["mean", "25%", "50%", "75%"]]
    print("predicted uplift over all customers, by coupon:\n" + summary.round(4).to_string())
    print(
        f"offers {len(offers)} of {len(today)} customers; expected cost {offers['expected_cost'].sum():.2f}; "
        f"expected incremental revenue {offers['expected_incremental_revenue'].sum():.2f}"
    )
    if len(offers):
        print(
            offers.groupby("coupon")
            .agg(
                offers=("customer_id", "size"),
                mean_uplift=("expected_uplift", "mean"),
                revenue=("expected_incremental_revenue", "sum"),
                cost=("expected_cost", "sum"),
            )
            .round(3)
            .to_string()
        )
    print(f"\ndone in {time.monotonic() - started:.0f}s")


def campaign_features(settings, outcomes: pd.DataFrame, terms: pd.DataFrame, end_date, started: float):
    """Per campaign: its outcome rows with the customer features and churn risk at valid_from - 1 day;
    and the features at `end_date` (Spark)."""
    from core.lake import Lake
    from core.spark import spark_session
    from features.customer import INPUT_TABLES, customer_features
    from jobs.train import snapshot
    from models import churn

    statuses = settings.rfm.scored_statuses
    with spark_session(settings, "evaluate_uplift") as spark:
        lake = Lake(spark, settings.lake_dir)
        silver = {table: lake.read("silver", table) for table in INPUT_TABLES}
        parts = []
        for coupon in terms["coupon"]:
            rows = outcomes[outcomes["campaign"] == coupon]
            as_of = rows["valid_from"].iloc[0] - timedelta(days=1)
            features = customer_features(silver, as_of, statuses).toPandas()
            training = snapshot(lake, as_of - timedelta(days=settings.churn.horizon_days), settings)
            gold_features = [name for name in settings.churn.features if name not in churn.BGNBD_INPUTS]
            classifier = churn.ChurnClassifier(gold_features, settings.churn.model, settings.churn.calibration, settings.churn.seed)
            classifier.fit(training.features, training.outcome["is_churned"])
            buyers = features[features["purchase_count"] > 0]
            risk = pd.Series(classifier.churn_probability(buyers), index=buyers["customer_id"])
            part = rows.merge(features, on="customer_id", how="left", validate="one_to_one")
            parts.append(part.assign(churn_probability=part["customer_id"].map(risk)))
            print(
                f"features {coupon}: as_of {as_of}, churn model fitted at "
                f"{as_of - timedelta(days=settings.churn.horizon_days)} on {len(training.features)} buyers "
                f"({time.monotonic() - started:.0f}s)",
                flush=True,
            )
        today = customer_features(silver, end_date, statuses).toPandas()
    return parts, today


if __name__ == "__main__":
    main()
