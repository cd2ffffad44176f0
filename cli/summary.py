"""The run summary printed by `crm run` and `make demo`: rows per layer, segments, where things are.

Reads without Spark: the lake's row counts come from the Delta logs (delta-rs), the segments from the CRM
database.
"""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path

import mlflow
import pyarrow.compute as pc
from sqlalchemy import func, select

from core import db, runlog
from core.config import Settings
from core.crm_schema import crm_table
from core.lake import LAYERS, ArrowLake, LakeLayout
from jobs import events
from jobs.report import read_lifetime_diagnostics
from jobs.validate import quality_summary
from models import churn, tracking
from models.lifetime import DIAGNOSTICS_ARTIFACT


def lake_row_counts(lake: LakeLayout) -> dict[str, dict[str, int]]:
    """Rows per table per layer, from each table's current Delta snapshot (no data files read)."""
    counts: dict[str, dict[str, int]] = {}
    for layer, table in lake.tables():
        actions = lake.delta_table(layer, table).get_add_actions(flatten=True)
        rows = sum(value or 0 for value in actions.column("num_records").to_pylist())
        counts.setdefault(layer, {})[table] = rows
    return counts


def event_lines(settings: Settings, run_date: date, counts: dict[str, dict[str, int]]) -> list[str]:
    """Browsing events: how many silver holds, what the night's files brought (ledger), where the files are."""
    if settings.events.source == "none":
        return ["Browsing events: off (events.source: none)"]
    lake = ArrowLake(settings.lake_location)
    in_silver = counts.get("silver", {}).get(events.TABLE)
    if in_silver is None:
        return [f"Browsing events: none yet (events.source: {settings.events.source}; files go to {settings.events.landing_dir})"]
    line = f"Browsing events: {in_silver:,} in silver/events"
    if lake.exists("bronze", events.LEDGER_TABLE):
        ledger = lake.read("bronze", events.LEDGER_TABLE, ["rows"], where=pc.field("batch_id") == run_date.isoformat())
        if ledger.num_rows:
            line += f"; tonight {ledger.num_rows:,} file(s) with {pc.sum(ledger.column('rows')).as_py():,} events"
    quarantined = counts.get("silver", {}).get(events.QUARANTINE_TABLE, 0)
    return [
        line + f", {quarantined:,} in quarantine (silver/{events.QUARANTINE_TABLE})",
        "  per customer as of the run date: CRM table customer_activity",
    ]


def segment_counts(settings: Settings) -> dict[str, int]:
    """Customers per segment in the CRM table `customer_segments`."""
    table = crm_table(settings, "customer_segments")
    with db.engine(settings.crm.db_url).connect() as connection:
        rows = connection.execute(select(table.c.segment, func.count()).group_by(table.c.segment)).all()
    return {segment: count for segment, count in sorted(rows, key=lambda row: -row[1])}


def campaign_lines(settings: Settings) -> list[str]:
    """Per campaign: whom to contact, held out and suppressed, from the CRM table `campaign_audiences`."""
    table = crm_table(settings, "campaign_audiences")
    with db.engine(settings.crm.db_url).connect() as connection:
        rows = connection.execute(
            select(table.c.campaign, table.c.audience_group, func.count()).group_by(table.c.campaign, table.c.audience_group)
        ).all()
    if not rows:
        return [f"Campaigns: none qualified anyone (conf/{settings.campaigns.folder}/*.yaml)"]
    groups: dict[str, dict[str, int]] = {}
    for campaign, group, count in rows:
        groups.setdefault(campaign, {})[group] = count
    lines = [
        "Campaign audiences (CRM table campaign_audiences; exports campaigns/<campaign>.csv):",
        f"  {'campaign':<22} {'contact':>8} {'control':>8} {'suppressed':>10}",
    ]
    for campaign, counts in sorted(groups.items()):
        lines.append(f"  {campaign:<22} {counts.get('treatment', 0):>8,} {counts.get('control', 0):>8,} {counts.get('suppressed', 0):>10,}")
    return lines


def score_lines(settings: Settings) -> list[str]:
    """Customers per churn risk band with their 12-month CLV, from the CRM table `customer_scores`."""
    table = crm_table(settings, "customer_scores")
    with db.engine(settings.crm.db_url).connect() as connection:
        rows = connection.execute(
            select(
                table.c.churn_risk,
                func.count(),
                func.avg(table.c.churn_probability),
                func.sum(table.c.clv_12m),
                func.max(table.c.churn_model_version),
            ).group_by(table.c.churn_risk)
        ).all()
    if not rows:
        return ["Scores: none published"]
    model = max((row[4] for row in rows if row[4] is not None), default="none yet")
    lines = [f"Churn risk and 12-month CLV (CRM table customer_scores; model {model}):"]
    order = {"high": 0, "medium": 1, "low": 2}
    for band, customers, probability, clv, _ in sorted(rows, key=lambda row: order.get(row[0], 3)):
        churn_text = f"mean churn probability {probability:.2f}" if probability is not None else "no churn model yet"
        value_text = f"CLV {float(clv):>14,.2f}" if clv is not None else "no value model yet"
        lines.append(f"  {band or 'unscored':<7} {customers:>8,} customers  {churn_text}  {value_text}")
    return lines


def lifetime_lines(settings: Settings) -> list[str]:
    """The value models' fit diagnostics and which forecast fills expected_orders_*, from the MLflow run that
    `customer_scores.clv_model_run` names (`lifetime_diagnostics.json`, see jobs/predict.py)."""
    table = crm_table(settings, "customer_scores")
    with db.engine(settings.crm.db_url).connect() as connection:
        run = connection.execute(select(func.max(table.c.clv_model_run))).scalar()
    if run is None:
        return ["Lifetime models: none fitted (no repeat buyer yet)"]
    diagnostics = read_lifetime_diagnostics(settings, run)
    if isinstance(diagnostics, str):
        return [f"Lifetime models: diagnostics {diagnostics}"]
    lines = [f"Lifetime models (MLflow run {run}, {DIAGNOSTICS_ARTIFACT}):"]
    for key, label in (("purchase_model", None), ("gamma_gamma", "GammaGamma")):
        fit = diagnostics[key]
        if fit.get("fitted") is False:
            lines.append(f"  {label or key:<20} not fitted: {fit['reason']}")
            continue
        params = " ".join(f"{name} {value:.4g}" for name, value in fit["params"].items())
        boundary = ", ".join(fit["boundary"]) or "none"
        lines.append(
            f"  {(label or fit['model']).removesuffix('Model'):<20} {params}; log-likelihood {fit['log_likelihood']:,.1f}; "
            f"{'converged' if fit['converged'] else 'NOT converged'} in {fit['iterations']} iterations, gradient "
            f"{fit['gradient_norm']:.1e}; at a boundary: {boundary}"
        )
        lines += [f"  ! {problem}" for problem in fit["problems"].values()]
    comparison = diagnostics["expected_orders"]
    if "scores" in comparison:
        figures = ", ".join(
            f"{name} RMSE {scores['rmse']:.3f} MAE {scores['mae']:.3f} ({scores['predicted_total']:,.0f} of {scores['actual_total']:,.0f})"
            for name, scores in comparison["scores"].items()
        )
        index = comparison.get("seasonal_index")
        season = f"seasonal index of its window a year earlier {index:.3f}" if index is not None else "no year before it"
        lines.append(f"  expected_orders_*: {comparison['chosen']} (holdout: last {comparison['holdout_days']} days, {season}; {figures})")
    else:
        lines.append(f"  expected_orders_*: {comparison['chosen']} ({comparison.get('reason', 'no holdout')})")
    return lines


def churn_publication_lines(settings: Settings) -> list[str]:
    """Which churn probability was published (the champion classifier's or BG/NBD's) and why, with both
    holdout figures side by side (from the champion's training run in MLflow)."""
    table = crm_table(settings, "customer_scores")
    with db.engine(settings.crm.db_url).connect() as connection:
        label = connection.execute(select(func.max(table.c.churn_model_version))).scalar()
    if label is None:
        return ["Churn probability published: none (no churn model yet)"]
    found = tracking.churn_publication(tracking.connect(settings.mlflow), churn.judged_version(label))
    if found is None:
        return [f"Churn probability published: {label} (trained before the calibration check: no comparison with BG/NBD)"]
    source = "BG/NBD's P(no purchase in the horizon)" if found["published"] == churn.BG_NBD else f"classifier {churn.judged_version(label)}"
    lines = [
        f"Churn probability published: {source} ({label}); holdout {found['holdout_as_of']}, ECE: 10 equal-width bins",
        f"  {'model':<20} {'ROC-AUC':>8} {'Brier':>8} {'ECE':>8}",
    ]
    for model, figures in found["figures"].items():
        lines.append(f"  {model:<20} {figures['roc_auc']:>8.4f} {figures['brier']:>8.4f} {figures['ece']:>8.4f}")
    return [*lines, f"  why: {found['reason']}"]


def evaluation_lines(settings: Settings, run_id: str, run_date: date) -> list[str]:
    """Each model the night evaluated on its holdout (or reused an evaluation of, with that night's date),
    beside its baselines (MLflow runs of the night)."""
    found = tracking.evaluations(settings.mlflow, run_id)
    if not found:
        return ["Model checks: none this night"]
    lines = ["Model checks on held-out data (MLflow, tag kind = holdout-evaluation; higher is better):"]
    for evaluation in found:
        against = ", ".join(f"{name} {value:.3f}" for name, value in evaluation["baselines"].items())
        when = (
            ""
            if evaluation["evaluated_on"] == str(run_date)
            else f"; evaluated on {evaluation['evaluated_on']}, mlflow.evaluate_every_days"
        )
        figure = f"{evaluation['metric']} {evaluation['value']:.3f} against {against}"
        lines.append(f"  {evaluation['model']:<20} {figure}  ({evaluation['holdout']}{when})")
    return lines


def degraded_lines(settings: Settings, run_id: str) -> list[str]:
    """What the night could not compute and why (the tasks' `degraded`, from the run log)."""
    stages = next((run["stages"] for run in runlog.recent_runs(settings, 1) if run["run_id"] == run_id), [])
    reasons = runlog.render_degraded(stages)
    return ["Not computed tonight (each task's reason; crm status):", *reasons] if reasons else []


def mlflow_ui_command(settings: Settings) -> str:
    """How to open the MLflow UI on this project's tracking store."""
    uri = db.masked(settings.mlflow.tracking_uri)  # a store's password stays out of the summary: fill it in
    if uri.startswith(("http://", "https://")):
        return f"open {uri}"
    return f"{Path(sys.executable).with_name('mlflow')} ui --backend-store-uri {uri} --port 5000"


def quality_lines(settings: Settings, run_date: date) -> list[str]:
    """The quality gates' outcome per layer and where their Data Docs are."""
    layers = quality_summary(settings, run_date) or {}
    if not layers:
        return ["Data quality: no gate results for this date"]
    lines = ["Data quality (Great Expectations):"]
    for layer in LAYERS:
        if layer in layers:
            outcome = layers[layer]
            verdict = "passed" if outcome["passed"] else "FAILED"
            lines.append(
                f"  {layer:<7} {verdict}, {outcome['critical_failures']} critical failures, "
                f"{outcome['warnings']} warnings, {len(outcome['tables'])} tables"
            )
    docs = next((outcome["data_docs"] for outcome in layers.values() if outcome.get("data_docs")), None)
    if docs:
        lines.append(f"  Data Docs      {docs}")
    return lines


def render(settings: Settings, run_date: date, run_id: str) -> str:
    """The summary as text for the terminal."""
    lines = [f"shop-crm nightly run {run_id} for {run_date}: success", ""]
    counts = lake_row_counts(LakeLayout(settings.lake_location))
    for layer in LAYERS:
        tables = counts.get(layer, {})
        quarantined = sum(rows for name, rows in tables.items() if name.startswith("_quarantine/"))
        kept = sum(rows for name, rows in tables.items() if not name.startswith("_quarantine/"))
        extra = f", {quarantined} rows in quarantine" if layer == "silver" else ""
        lines.append(f"  {layer:<7} {len(tables):>3} tables {kept:>10,} rows{extra}")
    lines += ["", *event_lines(settings, run_date, counts)]
    lines += ["", *quality_lines(settings, run_date)]
    lines += ["", "Customers per segment (CRM table customer_segments):"]
    segments = segment_counts(settings)
    total = sum(segments.values()) or 1
    for segment, customers in segments.items():
        lines.append(f"  {segment:<22} {customers:>8,}  {100 * customers / total:5.1f}%")
    lines += ["", *score_lines(settings)]
    lines += ["", *lifetime_lines(settings)]
    lines += ["", *churn_publication_lines(settings)]
    lines += ["", *evaluation_lines(settings, run_id, run_date)]
    lines += ["", *degraded] if (degraded := degraded_lines(settings, run_id)) else []
    lines += ["", *campaign_lines(settings)]
    exports = settings.exports_dir / run_date.isoformat()
    lines += [
        "",
        "Where the results are:",
        f"  CRM database   {db.masked(settings.crm.db_url)}",
        f"  exports        {exports}  (manifest.json, latest -> {settings.exports_dir / 'latest'})",
        f"  run report     {settings.data_dir / 'reports' / run_date.isoformat() / 'index.html'}  (crm report --open)",
        f"  lake           {settings.lake_location}  (Delta tables: bronze, silver, gold)",
        f"  Airflow logs   {Path(settings.airflow.home) / 'logs'}",
        "  tasks, seconds crm status     (this night's tasks as the run log has them)",
        f"  Airflow UI     make airflow   (the nightly under Airflow's own scheduler; then open http://localhost:{settings.airflow.api_port})",
        f"  MLflow store   {db.masked(settings.mlflow.tracking_uri)}  (models, training runs, plots)",
        f"  MLflow UI      {mlflow_ui_command(settings)}   (then open http://localhost:5000)",
    ]
    return "\n".join(lines)


def render_training(settings: Settings, run_id: str) -> str:
    """What a training run decided and how each model did on the holdout, from its MLflow run."""
    tracking.connect(settings.mlflow)
    runs = mlflow.search_runs(
        experiment_names=[settings.mlflow.experiment],
        output_format="list",
        filter_string=f"tags.pipeline_run_id = '{run_id}' and tags.kind = 'churn-training'",
    )
    if not runs:
        return f"training run {run_id}: no MLflow run found in {db.masked(settings.mlflow.tracking_uri)}"
    run = runs[0]
    params, metrics = run.data.params, run.data.metrics
    lines = [
        f"shop-crm training run {run_id}: {run.data.tags.get('decision', '?')}",
        f"  snapshots: train {params.get('training_as_of')} ({params.get('training_customers')} buyers), "
        f"holdout {params.get('holdout_as_of')} ({params.get('holdout_customers')} buyers, "
        f"churn rate {params.get('holdout_churn_rate')}), horizon {params.get('horizon_days')} days",
        "",
        f"  {'model':<20} {'ROC-AUC':>8} {'PR-AUC':>8} {'Brier':>8} {'ECE':>8}",
    ]
    for model in ("challenger", "champion", "former_champion", "logistic_baseline", "p_alive_baseline", "bgnbd_no_purchase"):
        if f"{model}_roc_auc" in metrics:
            figures = [metrics.get(f"{model}_{metric}", float("nan")) for metric in ("roc_auc", "pr_auc", "brier", "ece")]
            lines.append(f"  {model:<20} " + " ".join(f"{figure:>8.4f}" for figure in figures))
    if "published_churn" in run.data.tags:
        lines += ["", f"  published by nights: {run.data.tags['published_churn']} ({run.data.tags.get('published_churn_reason', '')})"]
    lines += [
        "",
        f"  MLflow run     {run.info.run_id} (experiment {settings.mlflow.experiment})",
        f"  MLflow UI      {mlflow_ui_command(settings)}",
    ]
    return "\n".join(lines)
