"""report: one static HTML page per run date: segments, scores, lifetime value, calibration, quality, changes.

Written to `<data_dir>/reports/<run_date>/index.html` in one rename (a reader never sees half a page), and
self-contained: inline CSS, plots as base64 PNG `data:` URIs (matplotlib, Agg), no network. Reads without
Spark: the gold tables' run-date partitions through their Delta logs (delta-rs) and pyarrow, the quality
gates' summaries that `jobs/validate.py` writes under `<data_dir>/quality/<run_date>/`, and, when an MLflow
store is there, the holdout calibration table of the churn model that scored the run. Every section says
plainly when its data is missing (no previous run, no scores yet, no gate results).

"The previous run" is the latest earlier `as_of` in `gold/customer_segments`, as in `jobs/score.py`.

    python -m jobs.report --date 2026-11-26
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from core import db
from core.config import Settings, load_config
from core.db import masked
from core.lake import LAYERS, LakeLayout
from core.rundate import parse_run_date
from jobs.validate import failure_text, quality_summary
from models import plots
from models.lifetime import DIAGNOSTICS_ARTIFACT

log = logging.getLogger(__name__)

REPORT_FILE = "index.html"
#: Section id and heading, in page order.
SECTIONS = {
    "overview": "Overview",
    "segments": "Segments",
    "scores": "Churn and activity scores",
    "clv": "Customer lifetime value",
    "lifetime": "Lifetime model fits",
    "calibration": "Churn model calibration",
    "quality": "Data quality",
    "changes": "Biggest changes since the previous run",
}
RISK_BANDS = ("high", "medium", "low")
TOP_CHANGES = 10
SEGMENT_COLUMNS = ["customer_id", "frequency", "segment", "run_id"]
SCORE_COLUMNS = [
    "customer_id",
    "churn_probability",
    "churn_risk",
    "p_alive",
    "clv_12m",
    "clv_12m_low",
    "clv_12m_high",
    "churn_model_version",
    "clv_model_run",
    "run_id",
]
CALIBRATION_MODELS = ("champion", "bgnbd_no_purchase", "challenger", "former_champion", "logistic_baseline", "p_alive_baseline")
NEW = "(new customer)"
GONE = "(no longer in gold)"


def latest_report_date(settings: Settings) -> date | None:
    """The latest run date with a report, if any."""
    folders = sorted((settings.data_dir / "reports").glob("????-??-??/" + REPORT_FILE))
    return date.fromisoformat(folders[-1].parent.name) if folders else None


def report_path(settings: Settings, run_date: date) -> Path:
    """Where the report of `run_date` is written."""
    return settings.data_dir / "reports" / run_date.isoformat() / REPORT_FILE


def run(run_date: date, settings: Settings, run_id: str) -> str:
    """The nightly `report` task: build the run date's report; returns its path (shown in the task's log and XCom)."""
    path = build(settings, run_date)
    log.info("run report of %s (run %s): %s", run_date, run_id, path.as_uri())
    return str(path)


def build(settings: Settings, run_date: date) -> Path:
    """Write the HTML report of `run_date` (replacing an earlier one) and return its path."""
    started = time.perf_counter()
    run = gather(settings, run_date)
    page = render(run)
    path = report_path(settings, run_date)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{REPORT_FILE}.{os.getpid()}.tmp")
    temporary.write_text(page, encoding="utf-8")
    os.replace(temporary, path)
    log.info("report for %s: %s (%d bytes, %.1f s)", run_date, path, len(page.encode()), time.perf_counter() - started)
    return path


# --------------------------------------------------------------------------------------------------------
# Reading: gold partitions, quality summaries, quarantine counts, MLflow calibration tables


@dataclass(frozen=True)
class RunData:
    """Everything the report shows about one run date; None where the data is not there."""

    settings: Settings
    run_date: date
    previous_date: date | None  # latest earlier as_of in gold/customer_segments
    segments: pd.DataFrame | None
    previous_segments: pd.DataFrame | None
    scores: pd.DataFrame | None
    previous_scores: pd.DataFrame | None
    quality: dict[str, dict[str, Any]]  # layer -> validate.py's summary
    quarantined: dict[str, dict[tuple[str, str | None], int]]  # silver table -> (rule, column or None) -> records of the run date
    calibration: dict[str, pd.DataFrame] | str  # model -> holdout calibration table, or why there is none
    calibration_source: str
    publication: dict | None = None  # models.tracking.churn_publication of the champion that scored the run
    consent: dict[str, int] | None = None  # customers, consent_unknown (accepts_marketing null), suppressed for it
    lifetime: dict | str = "not read"  # the value models' diagnostics (jobs/predict.py), or why there are none


def gather(settings: Settings, run_date: date) -> RunData:
    """Read what the report needs for `run_date` from the lake, the quality folder and MLflow."""
    lake = LakeLayout(settings.lake_location)
    earlier = [as_of for as_of in gold_dates(lake, "customer_segments") if as_of < run_date]
    previous_date = max(earlier, default=None)
    scores = read_gold(lake, "customer_scores", run_date, SCORE_COLUMNS)
    calibration, source, publication = churn_calibration(settings, scores)
    return RunData(
        settings=settings,
        run_date=run_date,
        previous_date=previous_date,
        segments=read_gold(lake, "customer_segments", run_date, SEGMENT_COLUMNS),
        previous_segments=(read_gold(lake, "customer_segments", previous_date, SEGMENT_COLUMNS) if previous_date else None),
        scores=scores,
        previous_scores=read_gold(lake, "customer_scores", previous_date, SCORE_COLUMNS) if previous_date else None,
        quality=quality_summary(settings, run_date) or {},
        quarantined=quarantined_rows(lake, run_date),
        calibration=calibration,
        calibration_source=source,
        publication=publication,
        consent=consent_counts(lake, run_date),
        lifetime=lifetime_diagnostics(settings, scores),
    )


def consent_counts(lake: LakeLayout, run_date: date) -> dict[str, int] | None:
    """How many customers have no recorded marketing consent (`accepts_marketing` null: the shop's column is
    null, or the shop has none) and how many campaign members were suppressed for it; None without a profile."""
    profile = read_gold(lake, "customer_profile", run_date, ["customer_id", "accepts_marketing"])
    if profile is None:
        return None
    audiences = read_gold(lake, "campaign_audiences", run_date, ["customer_id", "suppression_reason"])
    suppressed = 0 if audiences is None else int((audiences["suppression_reason"] == "consent_unknown").sum())
    return {"customers": len(profile), "unknown": int(profile["accepts_marketing"].isna().sum()), "suppressed": suppressed}


def gold_dates(lake: LakeLayout, table: str) -> list[date]:
    """The `as_of` dates of a gold table's current snapshot (from its Delta log; no data files read)."""
    values = _add_actions(lake, "gold", table).get("partition.as_of", [])
    return sorted({_as_date(value) for value in values if value is not None})


def read_gold(lake: LakeLayout, table: str, as_of: date, columns: Sequence[str]) -> pd.DataFrame | None:
    """The `as_of` partition of a gold table (those columns, decimals as float), or None when it has none.

    Reads the partition's files of the current snapshot with pyarrow rather than through delta-rs's
    `to_pandas`, which can abort the interpreter at exit (delta-rs#2184).
    """
    actions = _add_actions(lake, "gold", table)
    base = lake.location.arrow_path("gold", table)
    files = [
        _data_file(base, path)
        for path, value in zip(actions.get("path", []), actions.get("partition.as_of", []))
        if _as_date(value) == as_of
    ]
    if not files:
        return None
    dataset = ds.dataset(files, format="parquet", filesystem=lake.filesystem())
    wanted = [column for column in columns if column in dataset.schema.names]
    data = dataset.to_table(columns=wanted)
    data = data.cast(pa.schema([pa.field(field.name, pa.float64()) if pa.types.is_decimal(field.type) else field for field in data.schema]))
    return data.to_pandas().reindex(columns=list(columns))


def quarantined_rows(lake: LakeLayout, run_date: date) -> dict[str, dict[tuple[str, str | None], int]]:
    """Quarantine records each silver table wrote on `run_date`, per rule and column (None: the whole row; a
    column: a field nulled, the row kept). Reads the `rule` and `column` of the run date's files only."""
    counts: dict[str, dict[tuple[str, str | None], int]] = {}
    for layer, name in lake.tables():
        if layer != "silver" or not name.startswith("_quarantine/"):
            continue
        actions = _add_actions(lake, layer, name)
        base = lake.location.arrow_path(layer, name)
        files = [
            _data_file(base, path)
            for path, rows, value in zip(actions.get("path", []), actions.get("num_records", []), actions.get("partition.run_date", []))
            if _as_date(value) == run_date and rows
        ]
        table = counts.setdefault(name.removeprefix("_quarantine/"), {})
        if not files:
            continue
        dataset = ds.dataset(files, format="parquet", filesystem=lake.filesystem())
        wanted = [column for column in ("rule", "column") if column in dataset.schema.names]  # `column`: lakes since field rules
        for record in dataset.to_table(columns=wanted).group_by(wanted).aggregate([([], "count_all")]).to_pylist():
            table[(record["rule"], record.get("column"))] = record["count_all"]
    return counts


def _add_actions(lake: LakeLayout, layer: str, table: str) -> dict[str, list]:
    """The table's current data files as columns (path, num_records, partition.<column>), empty if no table."""
    if not lake.exists(layer, table):
        return {}
    return pa.table(lake.delta_table(layer, table).get_add_actions(flatten=True)).to_pydict()


def _data_file(base: str, path: str) -> str:
    """A data file's path in the lake's file system (`LakeLayout.filesystem`: a local path, or bucket/key) from its
    Delta log entry (relative to the table's `base` and URL-encoded, or an absolute URI)."""
    if "://" in path:
        return unquote(path.split("://", 1)[1])
    return f"{base}/{unquote(path)}"


def _as_date(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


@contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """No progress bars, and one quick try against a tracking server: the report must not hang on MLflow."""
    settings = {
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    }
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def churn_calibration(settings: Settings, scores: pd.DataFrame | None) -> tuple[dict[str, pd.DataFrame] | str, str, dict | None]:
    """The holdout reliability tables of the churn model that scored the run (`calibration/<model>.csv` of the
    training run that chose what nights publish, else of the one that trained it, in MLflow), where they come
    from, and that choice (`models.tracking.churn_publication`); or why they are not available."""
    if scores is None or scores["churn_model_version"].isna().all():
        return "not available: no churn model scored this run date", "", None
    published = str(scores["churn_model_version"].dropna().mode().iloc[0])
    label = published.removeprefix("bg_nbd@")  # models.churn.judged_version, without importing scikit-learn here
    name, _, version = label.rpartition("/")
    uri, shown = settings.mlflow.tracking_uri, masked(settings.mlflow.tracking_uri)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        # Opening a missing SQLite store would create it: the report only reads.
        return f"not available: no MLflow store at {shown}", "", None
    publication = None
    try:
        with _quiet_mlflow():
            from mlflow import MlflowClient  # deferred: seconds to import, for this one section, with its logs quieted

            from models.tracking import churn_publication

            client = MlflowClient(uri, uri)
            publication = churn_publication(client, label)
            run_id = publication["run_id"] if publication else client.get_model_version(name, version).run_id
            with tempfile.TemporaryDirectory() as folder:
                local = Path(client.download_artifacts(run_id, "calibration", folder))
                tables = {path.stem: pd.read_csv(path) for path in sorted(local.glob("*.csv"))}
    except Exception as error:  # noqa: BLE001  (MLflow is optional here: any failure only hides this section)
        log.warning("churn calibration of %s not read from MLflow (%s): %s", label, shown, error)
        return f"not available: MLflow at {shown} has no calibration table for {label} ({type(error).__name__})", "", None
    if not tables:
        return f"not available: the training run of {label} logged no calibration table", "", publication
    ordered = {model: tables[model] for model in CALIBRATION_MODELS if model in tables}
    ordered.update({model: table for model, table in tables.items() if model not in ordered})
    return ordered, f"{published}, MLflow run {run_id}", publication


def lifetime_diagnostics(settings: Settings, scores: pd.DataFrame | None) -> dict | str:
    """The diagnostics of the value models that scored the run (`lifetime_diagnostics.json` of the MLflow
    run named in `clv_model_run`), or why they are not available."""
    if scores is None or scores["clv_model_run"].isna().all():
        return "not available: no value model scored this run date"
    return read_lifetime_diagnostics(settings, str(scores["clv_model_run"].dropna().mode().iloc[0]))


def read_lifetime_diagnostics(settings: Settings, run_id: str) -> dict | str:
    """`lifetime_diagnostics.json` of the value models' MLflow run `run_id` (with `run_id` added), or why not."""
    uri, shown = settings.mlflow.tracking_uri, masked(settings.mlflow.tracking_uri)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return f"not available: no MLflow store at {shown}"
    try:
        with _quiet_mlflow():
            from mlflow import MlflowClient  # deferred, as in churn_calibration

            with tempfile.TemporaryDirectory() as folder:
                local = Path(MlflowClient(uri, uri).download_artifacts(run_id, DIAGNOSTICS_ARTIFACT, folder))
                diagnostics = json.loads(local.read_text(encoding="utf-8"))
    except Exception as error:  # noqa: BLE001  (MLflow is optional here: any failure only hides this section)
        log.warning("lifetime diagnostics of MLflow run %s not read (%s): %s", run_id, shown, error)
        return f"not available: MLflow run {run_id} at {shown} has no {DIAGNOSTICS_ARTIFACT} ({type(error).__name__})"
    return {**diagnostics, "run_id": run_id}


# --------------------------------------------------------------------------------------------------------
# Page


def render(run: RunData) -> str:
    """The whole page as HTML."""
    body = "\n".join(
        [
            overview_section(run),
            segments_section(run),
            scores_section(run),
            clv_section(run),
            lifetime_section(run),
            calibration_section(run),
            quality_section(run),
            changes_section(run),
        ]
    )
    title = f"shop-crm run report {run.run_date.isoformat()}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_text(title)}</title>
<style>{CSS}</style>
</head>
<body>
<h1>{_text(title)}</h1>
<nav>{" · ".join(f'<a href="#{key}">{_text(heading)}</a>' for key, heading in SECTIONS.items())}</nav>
{body}
<script>{SCRIPT}</script>
</body>
</html>
"""


CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2330; margin: 0 auto;
       max-width: 1180px; padding: 16px 24px 48px; }
h1 { font-size: 22px; margin: 8px 0 4px; }
h2 { font-size: 18px; border-bottom: 2px solid #d6dbe4; padding-bottom: 4px; margin: 28px 0 10px; }
h3 { font-size: 15px; margin: 16px 0 6px; }
nav { color: #6b7385; font-size: 13px; }
nav a, a { color: #1f5fbf; }
table { border-collapse: collapse; margin: 6px 0 10px; }
th, td { padding: 3px 8px; border-bottom: 1px solid #e4e7ee; text-align: left; vertical-align: top; }
th { background: #f3f5f9; font-weight: 600; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
table.matrix td, table.matrix th { font-size: 12px; padding: 2px 5px; }
table.matrix td.same { font-weight: 700; }
.missing { background: #fff6e0; border-left: 4px solid #e0a800; padding: 6px 10px; }
.bad { color: #b42318; font-weight: 600; }
.good { color: #18794e; font-weight: 600; }
.figures { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
img { max-width: 100%; height: auto; border: 1px solid #e4e7ee; }
code { font-size: 12.5px; background: #f3f5f9; padding: 0 3px; }
"""

# Marks each plot once the browser has decoded it, so a headless browser's DOM dump shows they rendered.
SCRIPT = """
for (const img of document.querySelectorAll("img[data-plot]")) {
  const mark = () => { if (img.naturalWidth > 0) img.setAttribute("data-rendered", "true"); };
  if (img.complete) mark(); else img.addEventListener("load", mark);
}
"""


def overview_section(run: RunData) -> str:
    settings, segments = run.settings, run.segments
    exports = settings.exports_dir / run.run_date.isoformat()
    manifest = exports / "manifest.json"
    docs = next((layer.get("data_docs") for layer in run.quality.values() if layer.get("data_docs")), None)
    rows = [("run date", _text(run.run_date.isoformat()))]
    if segments is None:
        rows.append(("run id", _missing_inline("gold/customer_segments has no rows for this run date")))
    else:
        rows += [
            ("run id", _text(", ".join(sorted(segments["run_id"].dropna().unique())))),
            ("customers", _count(len(segments))),
            ("buyers (at least one purchase)", _count(int((segments["frequency"] > 0).sum()))),
        ]
    rows += [
        ("customers scored", _count(len(run.scores)) if run.scores is not None else _missing_inline("no scores for this run date")),
        (
            "previous run date in gold",
            _text(run.previous_date.isoformat()) if run.previous_date else _missing_inline("none: this is the first run date in gold"),
        ),
        ("data root", _code(settings.data_dir)),
        ("CRM database", _code(db.masked(settings.crm.db_url))),
        (
            "exports",
            _link(manifest, f"{exports}/manifest.json")
            if manifest.is_file()
            else f"{_code(exports)} {_missing_inline('not exported for this run date')}",
        ),
        ("lake", _code(str(settings.lake_location))),
        ("Data Docs (quality)", _link(docs, docs) if docs else _missing_inline("no gate results")),
        ("MLflow store", _code(masked(settings.mlflow.tracking_uri))),
    ]
    table = "<table>" + "".join(f"<tr><th>{_text(key)}</th><td>{value}</td></tr>" for key, value in rows) + "</table>"
    return _section("overview", table + consent_warning(run))


def consent_warning(run: RunData) -> str:
    """A warning when the shop does not record some customers' marketing consent: what the night did about it."""
    consent = run.consent
    if not consent or not consent["unknown"]:
        return ""
    setting = run.settings.campaigns.consent_when_missing
    treated = {
        "unknown": f"{consent['suppressed']:,} campaign member(s) were suppressed as <code>consent_unknown</code>; set "
        "<code>campaigns.consent_when_missing: granted</code> only if consent is kept elsewhere (e.g. by the e-mail service)",
        "granted": "they were treated as consenting",
        "denied": "they were suppressed as <code>unsubscribed</code>",
    }[setting]
    whole = " (the shop has no consent column, or it is empty)" if consent["unknown"] == consent["customers"] else ""
    return (
        f'<p class="bad">Marketing consent unknown for {consent["unknown"]:,} of {consent["customers"]:,} customers{whole}: '
        f"with <code>campaigns.consent_when_missing: {setting}</code> {treated}.</p>"
    )


def segments_section(run: RunData) -> str:
    segments = run.segments
    if segments is None:
        return _section("segments", _missing("No segments: gold/customer_segments has no rows for this run date."))
    counts = segments["segment"].value_counts()
    total = int(counts.sum())
    figure = _barh(counts.index, counts.to_numpy(), "customers", "Customers per segment", value_format="{:,.0f}")
    table = _table(
        ["segment", "customers", "share"],
        [[_text(segment), _count(customers), _percent(customers / total)] for segment, customers in counts.items()],
        numeric={1, 2},
    )
    parts = [
        f'<div class="figures">{_img("segments", f"Bar chart of customers per segment on {run.run_date}", figure)}{table}</div>',
        "<h3>Movement since the previous run</h3>",
    ]
    if run.previous_segments is None:
        parts.append(_missing("No previous run date in gold/customer_segments: nothing to compare with."))
    else:
        parts.append(movement_html(segments, run.previous_segments, run.previous_date, run.run_date))
    return _section("segments", "\n".join(parts))


def segment_moves(current: pd.DataFrame, previous: pd.DataFrame) -> pd.DataFrame:
    """Customers per (from, to) pair: previous segment (or new) to current segment (or gone)."""
    both = previous[["customer_id", "segment"]].merge(
        current[["customer_id", "segment"]], on="customer_id", how="outer", suffixes=("_from", "_to")
    )
    both = both.fillna({"segment_from": NEW, "segment_to": GONE})
    return both.groupby(["segment_from", "segment_to"]).size().rename("customers").reset_index()


def movement_html(current: pd.DataFrame, previous: pd.DataFrame, previous_date: date, run_date: date) -> str:
    moves = segment_moves(current, previous)
    matrix = moves.pivot(index="segment_from", columns="segment_to", values="customers").fillna(0).astype(int)
    order = list(current["segment"].value_counts().index)
    order += [segment for segment in previous["segment"].value_counts().index if segment not in order]
    rows = [segment for segment in order if segment in matrix.index] + ([NEW] if NEW in matrix.index else [])
    columns = [segment for segment in order if segment in matrix.columns] + ([GONE] if GONE in matrix.columns else [])
    matrix = matrix.reindex(index=rows, columns=columns, fill_value=0)
    largest = max(int(matrix.to_numpy().max()), 1)
    stayed = int(moves.loc[moves["segment_from"] == moves["segment_to"], "customers"].sum())
    changed = int(
        moves.loc[
            (moves["segment_from"] != moves["segment_to"]) & (moves["segment_from"] != NEW) & (moves["segment_to"] != GONE), "customers"
        ].sum()
    )
    new = int(moves.loc[moves["segment_from"] == NEW, "customers"].sum())
    gone = int(moves.loc[moves["segment_to"] == GONE, "customers"].sum())
    head = "".join(f'<th class="n">{_text(column)}</th>' for column in columns)
    body = []
    for source in rows:
        cells = []
        for target in columns:
            value = int(matrix.at[source, target])
            shade = f' style="background: rgba(31,95,191,{0.06 + 0.5 * value / largest:.2f})"' if value else ""
            kind = "n same" if source == target else "n"
            cells.append(f'<td class="{kind}"{shade}>{value:,}</td>' if value else f'<td class="{kind}"></td>')
        body.append(f"<tr><th>{_text(source)}</th>{''.join(cells)}</tr>")
    summary = (
        f"<p>From {previous_date} to {run_date}: {_count(changed)} customers changed segment, "
        f"{_count(stayed)} stayed, {_count(new)} are new"
        + (f", {_count(gone)} are no longer in gold" if gone else "")
        + ". Rows: segment on "
        f"{previous_date}; columns: segment on {run_date}.</p>"
    )
    return f'{summary}<table class="matrix"><tr><th>from \\ to</th>{head}</tr>{"".join(body)}</table>'


def scores_section(run: RunData) -> str:
    scores = run.scores
    if scores is None:
        return _section("scores", _missing("No scores yet: gold/customer_scores has no rows for this run date."))
    parts, figures = [], []
    churn = scores["churn_probability"].dropna()
    if churn.empty:
        parts.append(
            _missing("No churn probabilities: no churn model yet (the shop needs 2 x churn.horizon_days of purchase history to train one).")
        )
    else:
        figures.append(
            _img(
                "churn_probability",
                "Histogram of churn probability over scored customers",
                _histogram(churn, "churn probability (no purchase within the horizon)", "Churn probability", bounds=(0, 1)),
            )
        )
    alive = scores["p_alive"].dropna()
    if alive.empty and dropout_problem(run):
        parts.append(_missing(f"No P(alive) tonight: {dropout_problem(run)}. {ranking_advice(run)}"))
    elif alive.empty:
        parts.append(_missing("No P(alive): the value models are not fitted yet (no repeat buyer)."))
    else:
        figures.append(
            _img(
                "p_alive",
                "Histogram of P(alive) over scored customers",
                _histogram(alive, "P(alive), BG/NBD", "Probability still active", bounds=(0, 1)),
            )
        )
    if figures:
        parts.insert(0, f'<div class="figures">{"".join(figures)}</div>')
    options = run.settings.churn
    bands = (
        scores.assign(band=scores["churn_risk"].fillna("unscored"))
        .groupby("band")
        .agg(customers=("customer_id", "size"), churn=("churn_probability", "mean"), p_alive=("p_alive", "mean"), clv=("clv_12m", "sum"))
    )
    order = [band for band in (*RISK_BANDS, "unscored") if band in bands.index]
    rows = [
        [
            _text(band),
            _count(int(bands.at[band, "customers"])),
            _percent(bands.at[band, "customers"] / len(scores)),
            _number(bands.at[band, "churn"], "{:.2f}"),
            _number(bands.at[band, "p_alive"], "{:.2f}"),
            _number(bands.at[band, "clv"], "{:,.2f}"),
        ]
        for band in order
    ]
    models = ", ".join(sorted(scores["churn_model_version"].dropna().unique())) or "none yet"
    parts.append(
        f"<h3>Churn risk bands</h3><p>High from churn probability {options.high_risk}, medium from "
        f"{options.medium_risk}; churn model {_text(models)}.</p>"
        + _table(
            ["churn risk", "customers", "share", "mean churn probability", "mean P(alive)", "CLV 12 months (sum)"],
            rows,
            numeric={1, 2, 3, 4, 5},
        )
    )
    return _section("scores", "\n".join(parts))


def clv_by_segment(scores: pd.DataFrame, segments: pd.DataFrame) -> pd.DataFrame:
    """Per segment: scored customers, total and mean clv_12m, its share of all CLV, mean interval bounds."""
    joined = scores.merge(segments[["customer_id", "segment"]], on="customer_id", how="left")
    joined["segment"] = joined["segment"].fillna("(no segment)")
    table = joined.groupby("segment").agg(
        customers=("customer_id", "size"),
        clv_total=("clv_12m", "sum"),
        clv_mean=("clv_12m", "mean"),
        low_mean=("clv_12m_low", "mean"),
        high_mean=("clv_12m_high", "mean"),
    )
    everything = table["clv_total"].sum()
    table["clv_share"] = table["clv_total"] / everything if everything else np.nan
    return table.sort_values("clv_total", ascending=False)


def clv_section(run: RunData) -> str:
    scores = run.scores
    if scores is None or scores["clv_12m"].isna().all():
        reason = (
            "gold/customer_scores has no rows for this run date"
            if scores is None
            else "the value models are not fitted yet (no repeat buyer)"
        )
        return _section("clv", _missing(f"No lifetime values: {reason}."))
    if run.segments is None:
        return _section("clv", _missing("No segments for this run date: CLV cannot be shown by segment."))
    table = clv_by_segment(scores.dropna(subset=["clv_12m"]), run.segments)
    level = run.settings.clv.interval_level
    figure = _clv_figure(table, level)
    rows = [
        [
            _text(segment),
            _count(int(row.customers)),
            _number(row.clv_total, "{:,.0f}"),
            _percent(row.clv_share),
            _number(row.clv_mean, "{:,.2f}"),
            f"{_number(row.low_mean, '{:,.2f}')} – {_number(row.high_mean, '{:,.2f}')}",
        ]
        for segment, row in table.iterrows()
    ]
    total = float(table["clv_total"].sum())
    html_table = _table(
        ["segment", "customers scored", "CLV 12 months, total", "share of total CLV", "mean CLV", f"mean {level:.0%} interval"],
        rows,
        numeric={1, 2, 3, 4, 5},
    )
    text = (
        f"<p>Expected profit of the next 12 months (<code>clv_12m</code>, shop currency): "
        f"{total:,.0f} in total over {_count(int(table['customers'].sum()))} scored customers. The interval "
        f"columns are the means of the customers' own {level:.0%} intervals (<code>clv_12m_low</code> .. "
        f"<code>clv_12m_high</code>); bounds of single customers do not add up to an interval of a total.</p>"
    )
    figures = _img("clv_by_segment", "Bar charts of total and mean 12-month CLV per segment", figure)
    body = f'{text}<div class="figures">{figures}</div>{html_table}'
    return _section("clv", body)


#: How the report names the expected-orders candidates of `models.purchase_forecast`.
FORECASTS = {
    "bgnbd": "purchase model (stationary)",
    "bgnbd_seasonal": "purchase model x seasonal index of a year earlier",
    "own_count": "own purchase days in the same window a year earlier",
}


def dropout_problem(run: RunData) -> str | None:
    """Why P(alive) was not published, when the purchase model's dropout was not identifiable."""
    if isinstance(run.lifetime, str):
        return None
    return run.lifetime["purchase_model"].get("problems", {}).get("dropout_not_identifiable")


def ranking_advice(run: RunData) -> str:
    """Which published score ranks customers at risk when P(alive) does not."""
    scores = run.scores
    if scores is not None and scores["churn_probability"].notna().any():
        models = ", ".join(sorted(scores["churn_model_version"].dropna().unique()))
        return f"Rank customers at risk by churn_probability (the churn model {models}), not by P(alive)."
    return "No churn model yet: rank customers at risk by a low expected_orders_90d, not by P(alive)."


def fit_rows(diagnostics: dict) -> list[list[str]]:
    """One table row per fitted model: parameters, log-likelihood, convergence, boundaries."""
    rows = []
    for key, label in (("purchase_model", None), ("gamma_gamma", "Gamma-Gamma")):
        fit = diagnostics.get(key, {})
        if fit.get("fitted") is False:
            rows.append([_text(label or key), _missing_inline(fit.get("reason", "not fitted")), "", "", ""])
            continue
        params = ", ".join(f"{name} {value:.4g}" for name, value in fit["params"].items())
        convergence = (
            f"{'converged' if fit['converged'] else 'stopped'} after {fit['iterations']} iterations "
            f"({_text(fit['optimizer_message'])}); gradient {fit['gradient_norm']:.1e}"
        )
        boundary = "; ".join(f"{_text(name)}: {_text(why)}" for name, why in fit["boundary"].items()) or "none"
        problems = "; ".join(_text(why) for why in fit["problems"].values())
        rows.append(
            [
                _text(label or fit["model"]),
                _text(params),
                _number(fit["log_likelihood"], "{:,.1f}"),
                convergence,
                boundary + (f'<br><span class="bad">{problems}</span>' if problems else ""),
            ]
        )
    return rows


def lifetime_section(run: RunData) -> str:
    if isinstance(run.lifetime, str):
        return _section("lifetime", _missing(f"Lifetime fit diagnostics {run.lifetime}."))
    diagnostics = run.lifetime
    parts = [
        f"<p>Tonight's fits (MLflow run {_code(diagnostics['run_id'])}, artifact {_code(DIAGNOSTICS_ARTIFACT)}). "
        "Log-likelihood in days; the gradient is the largest slope of the mean negative log-likelihood in the "
        "log-parameters where the optimiser stopped.</p>",
        _table(["model", "parameters", "log-likelihood", "convergence", "at a boundary"], fit_rows(diagnostics), numeric={2}),
    ]
    figures = diagnostics["purchase_model"].get("figures", {})
    if "dropout_likelihood_ratio" in figures:
        parts.append(
            f"<p>Dropout: mean dropout probability per repeat purchase a/(a+b) = {figures['mean_dropout_probability']:.3g}; "
            f"against the same model without dropout (NBD) the likelihood-ratio statistic is "
            f"{figures['dropout_likelihood_ratio']:,.2f} (dropout counts as shown from 5.99 on).</p>"
        )
    if dropout_problem(run):
        parts.append(
            _missing(f"P(alive) is not published tonight (null in customer_scores): {dropout_problem(run)}. {ranking_advice(run)}")
        )
    parts.append(forecast_html(diagnostics.get("expected_orders", {})))
    return _section("lifetime", "\n".join(parts))


def forecast_html(comparison: dict) -> str:
    """The expected-orders comparison on the holdout and Fader & Hardie's check by repeat purchases."""
    if "scores" not in comparison:
        reason = comparison.get("reason", "no holdout")
        return f"<h3>Expected orders</h3>{_missing(f'expected_orders_* come from the purchase model: {reason}.')}"
    chosen, days = comparison["chosen"], comparison["holdout_days"]
    rows = [
        [
            _text(f"{name}{' (published)' if name == chosen else ''}"),
            _text(FORECASTS.get(name, name)),
            _number(figures["rmse"], "{:.3f}"),
            _number(figures["mae"], "{:.3f}"),
            f"{_number(figures['predicted_total'], '{:,.0f}')} / {_number(figures['actual_total'], '{:,.0f}')}",
            _number(figures["no_purchase_roc_auc"], "{:.3f}"),
        ]
        for name, figures in comparison["scores"].items()
    ]
    index = comparison.get("seasonal_index")
    seasonal = (
        f"Seasonal index of the holdout's window a year earlier: {index:.3f} ({_text(comparison['seasonal_index_basis'])})."
        if index is not None
        else f"No seasonal index: {_text(comparison.get('seasonal_index_basis', ''))}."
    )
    by_frequency = _table(
        ["repeat purchases before the holdout", "customers", "mean predicted", "mean actual"],
        [
            [
                _text(row["repeat_purchases"]),
                _count(row["customers"]),
                _number(row["mean_predicted"], "{:.3f}"),
                _number(row["mean_actual"], "{:.3f}"),
            ]
            for row in comparison["by_frequency"]
        ],
        numeric={1, 2, 3},
    )
    return (
        f"<h3>Expected orders: which forecast is published</h3><p>Each forecast of the purchase days in the last {days} "
        f"days, made from the history before them ({_count(comparison['customers'])} customers), against what came. "
        f"The one with the lowest RMSE is published in <code>expected_orders_*</code>: {_code(chosen)}. MAE rewards "
        "predicting 0 (most customers buy nothing in a window) and is shown, not used to choose; ROC-AUC ranks the "
        f"customers who bought nothing by the lower forecast. {seasonal} CLV and P(alive) stay on the purchase model.</p>"
        + _table(["forecast", "what", "RMSE", "MAE", "predicted / actual", "no-purchase ROC-AUC"], rows, numeric={2, 3, 4, 5})
        + f"<h3>Calibration period against holdout (Fader &amp; Hardie)</h3><p>The purchase model's forecast of the "
        f"last {days} days by repeat purchases before them.</p>" + by_frequency
    )


def calibration_section(run: RunData) -> str:
    if isinstance(run.calibration, str):
        return _section("calibration", _missing(f"Churn calibration {run.calibration}."))
    tables = run.calibration
    figure = plots.calibration_figure(tables)
    shown = [model for model in ("champion", "bgnbd_no_purchase") if model in tables] or [next(iter(tables))]
    reliability = "".join(
        f"<div><h3>{_text(model)}</h3>"
        + _table(
            ["churn probability", "customers", "mean predicted", "observed"],
            [
                [
                    _text(row["churn_probability"]),
                    _count(int(row["customers"])),
                    _number(row["mean_predicted"], "{:.3f}"),
                    _number(row["observed"], "{:.3f}"),
                ]
                for _, row in tables[model].iterrows()
            ],
            numeric={1, 2, 3},
        )
        + "</div>"
        for model in shown
    )
    body = (
        f"<p>Observed churn rate against the predicted probability on the training run's holdout snapshot, "
        f"per probability bin of equal width ({_text(run.calibration_source)}). Points on the diagonal are well "
        f"calibrated.</p>{publication_text(run.publication)}"
        f'<div class="figures">'
        f"{_img('calibration', 'Calibration plot: observed churn rate against mean predicted probability', figure)}"
        f"{reliability}</div>"
    )
    return _section("calibration", body)


def publication_text(publication: dict | None) -> str:
    """Which churn probability the night published, why, and both candidates' holdout figures side by side."""
    if publication is None:
        return _missing(
            "This champion was trained before the calibration check: no comparison with BG/NBD's probability; its own is published."
        )
    source = "BG/NBD's probability of no purchase in the horizon" if publication["published"] == "bg_nbd" else "the champion classifier's"
    rows = [
        [_text(model), *(_number(figures[metric], "{:.4f}") for metric in ("roc_auc", "brier", "ece"))]
        for model, figures in publication["figures"].items()
    ]
    return (
        f"<p><strong>Published churn probability: {_text(source)}.</strong> {_text(publication['reason'])}. "
        f"Expected calibration error (ECE): mean over customers of |observed rate - mean predicted| in their bin "
        f"(10 bins of equal width); the better calibrated (lower ECE, then lower Brier) is published.</p>"
        + _table(["model (holdout " + str(publication["holdout_as_of"]) + ")", "ROC-AUC", "Brier", "ECE"], rows, numeric={1, 2, 3})
    )


def quality_section(run: RunData) -> str:
    if not run.quality:
        note = _missing(f"No quality gate results for {run.run_date} under {run.settings.data_dir / 'quality'}.")
        return _section("quality", note)
    rows, failures = [], []
    for layer in LAYERS:
        summary = run.quality.get(layer)
        if summary is None:
            rows.append([_text(layer), _missing_inline("no gate result"), "", "", "", "", "", ""])
            continue
        tables = summary.get("tables", {})
        evaluated = sum(report.get("expectations", 0) for report in tables.values())
        failed = sum(len(report["critical_failures"]) + len(report["warnings"]) for report in tables.values())
        quarantined = sum(sum(rules.values()) for rules in run.quarantined.values()) if layer == "silver" and run.quarantined else None
        verdict = '<span class="good">passed</span>' if summary["passed"] else '<span class="bad">FAILED</span>'
        rows.append(
            [
                _text(layer),
                verdict,
                _count(len(tables)),
                _count(evaluated - failed),
                _count(failed),
                _count(summary["critical_failures"]),
                _count(summary["warnings"]),
                _count(quarantined) if quarantined is not None else "—",
            ]
        )
        for missing in summary.get("not_in_lake", []):
            failures.append([_text(layer), _text(missing), "critical", "table not in the lake", ""])
        for table, report in tables.items():
            for severity, key in (("critical", "critical_failures"), ("warning", "warnings")):
                for failure in report[key]:
                    failures.append(
                        [
                            _text(layer),
                            _text(table),
                            severity,
                            _text(failure_text(failure)),
                            _link(report["data_docs"], "page") if report.get("data_docs") else "",
                        ]
                    )
    parts = [
        f"<p>Great Expectations gates of {run.run_date} (<code>quality/{run.run_date}/&lt;layer&gt;.json"
        "</code>). Expectations count once per table checked.</p>",
        _table(
            ["layer", "gate", "tables", "expectations passed", "failed", "critical failures", "warnings", "quarantined"],
            rows,
            numeric={2, 3, 4, 5, 6, 7},
        ),
    ]
    if failures:
        parts.append("<h3>Failed expectations</h3>" + _table(["layer", "table", "severity", "what failed", "Data Docs"], failures))
    else:
        parts.append("<p>No expectation failed.</p>")
    if run.quarantined:
        quarantine = [
            [_text(table), _text(rule), _text(column) if column else "whole row", _count(records)]
            for table, rules in sorted(run.quarantined.items())
            for (rule, column), records in sorted(rules.items(), key=lambda item: (item[0][0] or "", item[0][1] or ""))
        ]
        parts.append(
            "<h3>Quarantined by silver table and rule</h3><p>A whole row left silver (with its children, as orphans); "
            "a field was nulled and its row kept. Reasons per record in <code>silver/_quarantine/&lt;table&gt;</code>.</p>"
            + (
                _table(["table", "rule", "field", "records"], quarantine, numeric={3})
                if quarantine
                else f"<p>Nothing was quarantined on {run.run_date}.</p>"
            )
        )
    else:
        parts.append(_missing("No quarantine tables in the lake: quarantined rows are not recorded."))
    return _section("quality", "\n".join(parts))


def score_changes(current: pd.DataFrame, previous: pd.DataFrame, column: str) -> pd.DataFrame:
    """Customers scored on both dates, with `column` before and after, largest absolute change first."""
    both = (
        previous[["customer_id", column]].merge(current[["customer_id", column]], on="customer_id", suffixes=("_before", "_after")).dropna()
    )
    both["change"] = both[f"{column}_after"] - both[f"{column}_before"]
    order = both["change"].abs().sort_values(ascending=False, kind="stable").index
    return both.loc[order].reset_index(drop=True)


def changes_section(run: RunData) -> str:
    if run.previous_date is None:
        return _section("changes", _missing("No previous run date in gold: nothing to compare with."))
    parts = []
    if run.segments is not None and run.previous_segments is not None:
        moves = segment_moves(run.segments, run.previous_segments)
        changed = moves[(moves["segment_from"] != moves["segment_to"]) & (moves["segment_from"] != NEW) & (moves["segment_to"] != GONE)]
        top = changed.sort_values("customers", ascending=False).head(5)
        parts.append(
            f"<p>Since {run.previous_date}: <strong>{_count(int(changed['customers'].sum()))}</strong> "
            f"customers changed segment (largest moves: "
            + ", ".join(f"{_text(row.segment_from)} → {_text(row.segment_to)} {row.customers:,}" for row in top.itertuples())
            + ").</p>"
        )
    if run.scores is None or run.previous_scores is None:
        missing = run.run_date if run.scores is None else run.previous_date
        parts.append(_missing(f"No score changes: gold/customer_scores has no rows for {missing}."))
        return _section("changes", "\n".join(parts))
    segment_of = run.segments.set_index("customer_id")["segment"] if run.segments is not None else pd.Series(dtype=str)
    for column, title, fmt in (("clv_12m", "12-month CLV", "{:,.2f}"), ("churn_probability", "Churn probability", "{:.3f}")):
        changes = score_changes(run.scores, run.previous_scores, column)
        parts.append(f"<h3>{title}: top {TOP_CHANGES} changes</h3>")
        if changes.empty:
            parts.append(_missing(f"No customer has {column} on both {run.previous_date} and {run.run_date}."))
            continue
        rows = [
            [
                _text(row.customer_id),
                _text(segment_of.get(row.customer_id, "")),
                _number(getattr(row, f"{column}_before"), fmt),
                _number(getattr(row, f"{column}_after"), fmt),
                _number(row.change, "{:+,.3f}" if column == "churn_probability" else "{:+,.2f}"),
            ]
            for row in changes.head(TOP_CHANGES).itertuples()
        ]
        parts.append(_table(["customer", "segment now", str(run.previous_date), str(run.run_date), "change"], rows, numeric={0, 2, 3, 4}))
    return _section("changes", "\n".join(parts))


# --------------------------------------------------------------------------------------------------------
# Plots and HTML pieces


def _barh(labels, values, xlabel: str, title: str, value_format: str):
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 0.32 * len(values) + 1.2))
    positions = np.arange(len(values))
    axes.barh(positions, values, color="#1f5fbf")
    axes.set_yticks(positions, [str(label) for label in labels])
    axes.invert_yaxis()
    for position, value in zip(positions, values):
        axes.text(value, position, " " + value_format.format(value), va="center", fontsize=8)
    axes.set(xlabel=xlabel, title=title)
    axes.margins(x=0.15)
    figure.tight_layout()
    return figure


def _histogram(values: pd.Series, xlabel: str, title: str, bounds: tuple[float, float]):
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(5.2, 3.6))
    axes.hist(values.to_numpy(dtype=float), bins=np.linspace(*bounds, 21), color="#1f5fbf", edgecolor="white")
    axes.set(xlabel=xlabel, ylabel="customers", title=f"{title} ({len(values):,} customers, mean {values.mean():.2f})")
    figure.tight_layout()
    return figure


def _clv_figure(table: pd.DataFrame, level: float):
    plt = _pyplot()
    figure, (total_axes, mean_axes) = plt.subplots(1, 2, figsize=(11, 0.32 * len(table) + 1.6), sharey=True)
    positions = np.arange(len(table))
    total_axes.barh(positions, table["clv_total"], color="#1f5fbf")
    total_axes.set_yticks(positions, list(table.index))
    total_axes.invert_yaxis()
    for position, total, share in zip(positions, table["clv_total"], table["clv_share"]):
        total_axes.text(total, position, f" {total:,.0f} ({share:.0%})", va="center", fontsize=8)
    total_axes.margins(x=0.25)
    total_axes.set(xlabel="total clv_12m (shop currency)", title="CLV 12 months: total (share)")
    errors = np.vstack([(table["clv_mean"] - table["low_mean"]).clip(lower=0), (table["high_mean"] - table["clv_mean"]).clip(lower=0)])
    mean_axes.barh(positions, table["clv_mean"], color="#6c9be0", xerr=errors, ecolor="#444", capsize=2)
    mean_axes.set(xlabel="mean clv_12m per customer (shop currency)", title=f"Mean per customer, mean {level:.0%} interval")
    figure.tight_layout()
    return figure


def _pyplot():
    """matplotlib's pyplot with the Agg backend (chosen by `models.plots`, which the report also uses)."""
    return plots.plt


def _img(name: str, alt: str, figure) -> str:
    """A figure as an embedded PNG; `data-plot` names it, the page's script marks it `data-rendered`."""
    plt = _pyplot()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img data-plot="{_text(name)}" alt="{_text(alt)}" src="data:image/png;base64,{encoded}">'


def _section(key: str, body: str) -> str:
    return f'<section id="{key}">\n<h2>{_text(SECTIONS[key])}</h2>\n{body}\n</section>'


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Collection[int] = ()) -> str:
    """An HTML table; cells are HTML already, headers are text."""

    def cell(tag: str, index: int, value: str) -> str:
        return f'<{tag} class="n">{value}</{tag}>' if index in numeric else f"<{tag}>{value}</{tag}>"

    head = "".join(cell("th", index, _text(header)) for index, header in enumerate(headers))
    body = "".join("<tr>" + "".join(cell("td", index, value) for index, value in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _missing(text: str) -> str:
    return f'<p class="missing">{_text(text)}</p>'


def _missing_inline(text: str) -> str:
    return f'<span class="missing">{_text(text)}</span>'


def _text(value: Any) -> str:
    return html.escape(str(value))


def _code(value: Any) -> str:
    return f"<code>{_text(value)}</code>"


def _link(target: Path | str, text: str) -> str:
    """A link to a local file (as a file:// URI) or to a URL."""
    href = target if isinstance(target, str) and "://" in target else Path(target).resolve().as_uri()
    return f'<a href="{_text(href)}"><code>{_text(text)}</code></a>'


def _count(value: int) -> str:
    return f"{value:,}"


def _number(value: Any, fmt: str) -> str:
    return "—" if value is None or pd.isna(value) else fmt.format(value)


def _percent(value: Any) -> str:
    return _number(value, "{:.1%}")


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m jobs.report --date YYYY-MM-DD`: build the report of that run date and print its path."""
    parser = argparse.ArgumentParser(prog="python -m jobs.report", description=__doc__.splitlines()[0])
    parser.add_argument("--date", required=True, help="run date, YYYY-MM-DD")
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(build(load_config(), parse_run_date(options.date, "--date")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
