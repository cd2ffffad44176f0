"""Benchmark: the CLV path from silver orders against lifetimes, side by side (run by hand, never in tests).

    .venv/bin/python -m pip install -c constraints.txt -e '.[test,bench]'
    .venv/bin/python bench/clv.py 1000000 [--orders-per-customer 8] [--driver-memory 3g] [--tmp /tmp] [--keep]

Goals: the two fits together under 3 s at 1M customers, and the whole path from silver orders to the CLV
*with* its interval faster than lifetimes' path to the point estimates alone.

Per size (number of customers) silver is generated once with `bench/rfm.py`'s `make_silver` (numpy and
delta-rs, a fixed seed, ~N orders per customer; 80% delivered, 5% cancelled, 5% returned). Both stages run
on the same silver orders, at the same run date, with the pipeline's settings (`CRM_ENV=demo`: purchase
statuses `rfm.scored_statuses`, `clv.margin`, `clv.annual_discount_rate` as a monthly rate, 12 months).
Each stage runs in a child process of its own:

1. **lifetimes** (the reference, lifetimes 0.11.3):
   - read: the orders table's current files through delta-rs into pandas (amounts as float, times as
     naive UTC);
   - summary: the orders that count as purchases at the run date, as `features.customer.orders_as_of`
     decides (created by the end of the run date; a purchase status, or changed after the run date and
     so still in progress then: cancelled and returned orders left out), filtered in pandas, then
     `summary_data_from_transaction_data(..., observation_period_end=run date, freq="D")`;
   - bgnbd fit: `BetaGeoFitter().fit`. When it raises `ConvergenceError` (its BFGS ends on "precision
     loss"), it is fitted again as lifetimes' message advises, with a penalizer: each of
     `LIFETIMES_PENALIZERS` in turn until one converges. The failed attempts are shown on a line of their
     own and left out of the totals (the figures compared stay lifetimes' best case); the parameters are
     then those of a slightly different, penalised, fit;
   - gamma-gamma fit: `GammaGammaFitter().fit` on the customers with a repeat purchase and a monetary
     value > 0;
   - clv point: `GammaGammaFitter.customer_lifetime_value(..., time=12, discount_rate=monthly, freq="D")`,
     point estimates only (lifetimes has no interval). Its months are 30 days for `freq="D"`, so its
     12 months are 360 days. Its CLV is revenue: it is multiplied by the margin afterwards (untimed) to
     compare it with this project's, which is profit.
2. **shop-crm** (this project's code, as `jobs/predict.py` runs it):
   - spark start: `core.spark.spark_session` (`local[2]`, `--driver-memory`), a cold JVM;
   - summary: `features.purchases.purchase_history` on `Lake.read("silver", "orders")`, `.toPandas()`
     (Spark reads the Delta table itself: this step includes the read);
   - bgnbd fit, gamma-gamma fit: `models.lifetime.BetaGeoModel().fit`, `GammaGammaModel().fit` (repeat
     buyers with a monetary value > 0, as `jobs.predict.value_scores`);
   - clv point + interval: `customer_lifetime_value_with_interval`, the point CLV (months of 365.25/12 days:
     12 months are 365.25 days) and its interval (`clv.interval_level`, `clv.interval_draws`, `clv.seed`)
     in one call that computes the monthly expected purchases once, as the predict task does. The Spark
     session stays open throughout, as in the predict task.

Seconds are wall time of each step inside the child. Peak MB: the largest resident memory of the child's
process tree (Python, and the JVM for shop-crm). Each stage writes its per-customer summary and CLV to
the size's folder (untimed); the driver then compares them: the summaries customer for customer
(frequency, recency and T must be equal, monetary value up to rounding), the fitted parameters, and the
per-customer CLV (correlation and relative difference; they differ by the fits and the month lengths).
A stage that fails is reported with its error (the log: `stages.log`), and the other one still runs.

The generated customers drop out: 40% buy until the run date, the others stop at a random point of their
time since registration (see `make_silver`), so BG/NBD has a dropout rate to estimate.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import time
from datetime import timedelta
from pathlib import Path

from harness import benchmark_main, code_version, lake_benchmark_parser, run_stage
from rfm import RUN_DATE, _settings, make_silver

REPO = Path(__file__).resolve().parent.parent
CLV_MONTHS = 12
#: Our purchase history's columns under the names lifetimes' summary gives them, so the two can be compared.
LIFETIMES_NAMES = {
    "repeat_purchase_days": "frequency",
    "purchase_span_days": "recency",
    "days_since_first_purchase": "T",
    "mean_repeat_order_value": "monetary_value",
}
FITS_GOAL_SECONDS = 3.0
#: lifetimes' BG/NBD penalizers, tried in turn when its unpenalised fit does not converge. On the generated
#: data 1e-8 converged at 10,000 and 50,000 customers (1e-9 not at 50,000); the larger the penalizer, the
#: further its a and b from the unpenalised fit (from 1e-5 on, a and b -> 0 and some CLVs are NaN).
LIFETIMES_PENALIZERS = (1e-8, 1e-7, 1e-6)
STEPS = ("read", "spark start", "summary", "bgnbd fit", "gamma-gamma fit", "clv point", "clv point + interval")


# --------------------------------------------------------------------------------------------------------
# Stages (each in a child process)
# --------------------------------------------------------------------------------------------------------


def _timed(steps: dict[str, float], name: str, work):
    """Run `work()`; its seconds go to `steps[name]`, also when it raises."""
    started = time.perf_counter()
    try:
        return work()
    finally:
        steps[name] = time.perf_counter() - started


def read_orders(lake_dir: Path):
    """The silver orders as pandas: the Delta table's current files, amounts as float, times as naive UTC."""
    import pyarrow as pa
    from deltalake import DeltaTable

    table = DeltaTable(str(lake_dir / "silver" / "orders")).to_pyarrow_table(
        columns=["customer_id", "status", "total_amount", "created_at", "updated_at"]
    )
    table = table.set_column(2, "total_amount", table["total_amount"].cast(pa.float64()))
    orders = table.to_pandas()
    for column in ("created_at", "updated_at"):
        orders[column] = orders[column].dt.tz_localize(None)
    return orders


def lifetimes_summary(orders, statuses: list[str]):
    """Purchases at the run date as `features.customer.orders_as_of` counts them, summarised by lifetimes."""
    import pandas as pd
    from lifetimes.utils import summary_data_from_transaction_data

    cutoff = pd.Timestamp(RUN_DATE + timedelta(days=1))  # features.customer.end_of(RUN_DATE), UTC
    purchases = orders[(orders["created_at"] < cutoff) & (orders["status"].isin(statuses) | (orders["updated_at"] >= cutoff))]
    summary = summary_data_from_transaction_data(
        purchases, "customer_id", "created_at", monetary_value_col="total_amount", observation_period_end=pd.Timestamp(RUN_DATE), freq="D"
    )
    return summary, len(purchases)


def lifetimes_bg_nbd(steps: dict[str, float], x, recency, T):
    """`BetaGeoFitter().fit`, or when that does not converge the first of `LIFETIMES_PENALIZERS` that does;
    the fitter and its penalizer. The failed attempts' seconds go to `steps["bgnbd fit, not converged"]`."""
    from lifetimes import BetaGeoFitter
    from lifetimes.utils import ConvergenceError

    def fit(penalizer: float):
        return _timed(steps, "bgnbd fit", lambda: BetaGeoFitter(penalizer_coef=penalizer).fit(x, recency, T)), penalizer

    with contextlib.redirect_stdout(sys.stderr):  # on failure lifetimes prints the optimizer's result
        for penalizer in (0.0, *LIFETIMES_PENALIZERS[:-1]):
            try:
                return fit(penalizer)
            except ConvergenceError:
                steps["bgnbd fit, not converged"] = steps.get("bgnbd fit, not converged", 0.0) + steps.pop("bgnbd fit")
        return fit(LIFETIMES_PENALIZERS[-1])


def stage_lifetimes(job: dict) -> dict:
    from lifetimes import GammaGammaFitter

    settings = _settings(job)
    steps = {}
    orders = _timed(steps, "read", lambda: read_orders(settings.lake_dir))
    summary, purchases = _timed(steps, "summary", lambda orders=orders: lifetimes_summary(orders, settings.rfm.scored_statuses))
    del orders
    x, recency, T, m = (summary[column] for column in ("frequency", "recency", "T", "monetary_value"))
    beta_geo, penalizer = lifetimes_bg_nbd(steps, x, recency, T)
    repeat = (x > 0) & (m > 0)
    gamma_gamma = _timed(steps, "gamma-gamma fit", lambda: GammaGammaFitter().fit(x[repeat], m[repeat]))
    clv = _timed(
        steps,
        "clv point",
        lambda: gamma_gamma.customer_lifetime_value(
            beta_geo, x, recency, T, m, time=CLV_MONTHS, discount_rate=settings.clv.monthly_discount_rate, freq="D"
        ),
    )
    summary.assign(clv=settings.clv.margin * clv).reset_index().to_parquet(Path(job["data_dir"]) / "lifetimes.parquet")
    return {
        "steps": steps,
        "params": {**beta_geo.params_.to_dict(), **gamma_gamma.params_.to_dict()},
        "penalizer": penalizer,
        "customers": len(summary),
        "purchases": purchases,
        "seconds": _total(steps),
    }


def stage_shop_crm(job: dict) -> dict:
    from dataclasses import asdict

    from core.lake import Lake
    from core.spark import spark_session
    from features.purchases import PURCHASE_MODEL_INPUTS, purchase_history
    from models.lifetime import DAYS_PER_MONTH, BetaGeoModel, GammaGammaModel, customer_lifetime_value_with_interval

    settings = _settings(job)
    options = settings.clv
    steps = {}
    started = time.perf_counter()
    with spark_session(settings, "bench-clv") as spark:
        steps["spark start"] = time.perf_counter() - started
        orders = Lake(spark, settings.lake_dir).read("silver", "orders")
        history = _timed(steps, "summary", lambda: purchase_history(orders, RUN_DATE, settings.rfm.scored_statuses).toPandas())
        x, recency, T = (history[column].to_numpy() for column in PURCHASE_MODEL_INPUTS)
        m = history["mean_repeat_order_value"].to_numpy()
        beta_geo = _timed(steps, "bgnbd fit", lambda: BetaGeoModel().fit(x, recency, T))
        repeat = (x > 0) & (m > 0)
        gamma_gamma = _timed(steps, "gamma-gamma fit", lambda: GammaGammaModel().fit(x[repeat], m[repeat]))
        horizon = dict(
            period_length=DAYS_PER_MONTH, months=CLV_MONTHS, margin=options.margin, monthly_discount_rate=options.monthly_discount_rate
        )
        clv, low, high = _timed(
            steps,
            "clv point + interval",
            lambda: customer_lifetime_value_with_interval(
                beta_geo,
                gamma_gamma,
                x,
                recency,
                T,
                m,
                seed=options.seed,
                level=options.interval_level,
                draws=options.interval_draws,
                **horizon,
            ),
        )
    (
        history.rename(columns=LIFETIMES_NAMES)
        .assign(clv=clv, clv_low=low, clv_high=high)
        .to_parquet(Path(job["data_dir"]) / "shop-crm.parquet")
    )
    return {
        "steps": steps,
        "params": {**asdict(beta_geo.params_), **asdict(gamma_gamma.params_)},
        "customers": len(history),
        "seconds": _total(steps),
    }


def _total(steps: dict[str, float]) -> float:
    return sum(steps.get(step, 0.0) for step in STEPS)


STAGES = {"lifetimes": stage_lifetimes, "shop-crm": stage_shop_crm}


# --------------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------------


def one_size(customers: int, args: argparse.Namespace) -> None:
    folder = Path(args.tmp) / f"crm-bench-clv-{customers}"
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "lake").mkdir(parents=True)
    started = time.perf_counter()
    rows = make_silver(folder / "lake", customers, args.orders_per_customer)
    print(
        f"\n{customers:,} customers, {rows['orders']:,} orders (silver generated in "
        f"{time.perf_counter() - started:.1f} s); {os.cpu_count()} cores, load average "
        f"{' '.join(f'{load:.2f}' for load in os.getloadavg())}; {code_version()}",
        flush=True,
    )
    environment = {**os.environ, "PYTHONPATH": str(REPO), "CRM_ENV": "demo"}
    job = {"data_dir": str(folder), "driver_memory": args.driver_memory}
    log = folder / "stages.log"
    try:
        results = {name: run_stage(__file__, {**job, "stage": name}, environment, log, check=False) for name in STAGES}
        report(results, folder)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


def report(results: dict[str, dict], folder: Path) -> None:
    """The table of seconds and peak MB, the goals, and how the two stages' results compare."""
    for name, result in results.items():
        if "skipped" in result:
            print(f"{name}: {result['skipped']}")
    lifetimes, crm = (results[name].get("steps") for name in STAGES)
    if lifetimes and crm:
        print(
            f"{results['lifetimes']['purchases']:,} purchase orders at {RUN_DATE}; buyers: "
            f"{results['shop-crm']['customers']:,} (shop-crm), {results['lifetimes']['customers']:,} (lifetimes)"
        )
    print(f"{'seconds':<30}" + "".join(f"{name:>10}" for name in STAGES))
    for step in STEPS:
        print(f"  {step:<28}" + "".join(_cell((result.get("steps") or {}).get(step)) for result in results.values()))
    print(f"  {'total':<28}" + "".join(_cell(result.get("seconds")) for result in results.values()))
    without = {"lifetimes": "read", "shop-crm": "spark start"}
    print(
        f"  {'total without read / start':<28}"
        + "".join(
            _cell(result["seconds"] - result["steps"][without[name]] if "steps" in result else None) for name, result in results.items()
        )
    )
    print(f"  {'peak MB':<28}" + "".join(f"{result.get('peak_mb', '-'):>10}" for result in results.values()))
    print(f"  {'mean load':<28}" + "".join(_cell(result.get("load")) for result in results.values()))
    if lifetimes and "bgnbd fit, not converged" in lifetimes:
        print(
            f"  lifetimes' BG/NBD fit converged only with penalizer_coef {results['lifetimes']['penalizer']:g} (the "
            f"bgnbd fit above); the attempts before it (unpenalised, then smaller penalizers) took "
            f"{lifetimes['bgnbd fit, not converged']:.2f} s, not in the totals"
        )
    if crm:
        fits = crm["bgnbd fit"] + crm["gamma-gamma fit"]
        print(
            f"goal (a), fits together under {FITS_GOAL_SECONDS:g} s: shop-crm BG/NBD + Gamma-Gamma {fits:.2f} s"
            + (f" (lifetimes {lifetimes['bgnbd fit'] + lifetimes['gamma-gamma fit']:.2f} s)" if lifetimes else "")
            + f": {_met(fits, FITS_GOAL_SECONDS)}"
        )
    if not (lifetimes and crm):
        return
    compare_params(results["lifetimes"]["params"], results["shop-crm"]["params"])
    compare_customers(folder)
    with_read, with_start = results["lifetimes"]["seconds"], results["shop-crm"]["seconds"]
    without_read, without_start = with_read - lifetimes["read"], with_start - crm["spark start"]
    print(
        f"goal (b), silver orders -> 12-month CLV: shop-crm with intervals {without_start:.2f} s (Spark start "
        f"excluded; {with_start:.2f} s with it) vs lifetimes' point estimates {with_read:.2f} s (its Delta read "
        f"included; {without_read:.2f} s without it): lifetimes / shop-crm = {with_read / without_start:.2f}x, "
        f"{_met(without_start, with_read)}; counting Spark start and not lifetimes' read: "
        f"{without_read / with_start:.2f}x, {_met(with_start, without_read)}",
        flush=True,
    )


def _cell(value: float | None) -> str:
    return f"{'-':>10}" if value is None else f"{value:>10.2f}"


def _met(ours: float, theirs: float) -> str:
    return "met" if ours < theirs else "NOT met"


def compare_params(theirs: dict[str, float], ours: dict[str, float]) -> None:
    """Both fits' parameters, their relative difference, and BG/NBD's mean dropout probability a / (a + b)."""
    for model, names in (("BG/NBD", ("r", "alpha", "a", "b")), ("Gamma-Gamma", ("p", "q", "v"))):
        print(
            f"{model} (lifetimes / shop-crm, relative difference): "
            + "; ".join(f"{name} {theirs[name]:.6g} / {ours[name]:.6g} ({_relative(ours[name], theirs[name]):.1e})" for name in names)
        )
    dropout = [params["a"] / (params["a"] + params["b"]) for params in (theirs, ours)]
    print(
        f"  BG/NBD mean dropout probability per purchase a / (a + b): {dropout[0]:.6g} / {dropout[1]:.6g} "
        f"({_relative(dropout[1], dropout[0]):.1e})"
    )


def _relative(ours, theirs):
    import numpy as np

    return np.abs(ours - theirs) / np.maximum(np.abs(theirs), 1e-300)


def compare_customers(folder: Path) -> None:
    """The per-customer summaries (must agree) and 12-month CLVs (differ by the fits and the month lengths)."""
    import numpy as np
    import pandas as pd

    theirs = pd.read_parquet(folder / "lifetimes.parquet")
    ours = pd.read_parquet(folder / "shop-crm.parquet")
    both = ours.merge(theirs, on="customer_id", how="inner", suffixes=("", "_lifetimes"))
    only = len(ours) + len(theirs) - 2 * len(both)
    fields = ("frequency", "recency", "T")
    differs = {name: both[name] != both[f"{name}_lifetimes"] for name in fields}
    equal = len(both) - int(np.logical_or.reduce(list(differs.values())).sum())
    monetary = _relative(both["monetary_value"], both["monetary_value_lifetimes"]).max()
    print(
        f"summary: frequency, recency and T equal for {equal:,} of {len(both):,} customers in both "
        f"({only:,} in one only; differing: {', '.join(f'{name} {int(rows.sum()):,}' for name, rows in differs.items())}); "
        f"monetary value: largest relative difference {monetary:.1e}"
    )
    relative = _relative(both["clv"], both["clv_lifetimes"])
    inside = ((both["clv"] >= both["clv_low"]) & (both["clv"] <= both["clv_high"])).mean()
    print(
        f"12-month CLV per customer (lifetimes x margin: 12 x 30 days; shop-crm: 12 x 365.25/12 days): "
        f"correlation {np.corrcoef(both['clv'], both['clv_lifetimes'])[0, 1]:.6f}, relative difference "
        f"median {np.median(relative):.2%}, max {relative.max():.2%}; totals {both['clv_lifetimes'].sum():,.0f} "
        f"(lifetimes) / {both['clv'].sum():,.0f} (shop-crm); shop-crm's point CLV inside its interval for "
        f"{inside:.1%}"
    )


def main() -> None:
    parser = lake_benchmark_parser(__doc__, [1_000_000], "lake, stages.log, per-customer results")
    benchmark_main(parser, STAGES, one_size)


if __name__ == "__main__":
    main()
