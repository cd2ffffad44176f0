"""validate: the quality gate of one lake layer for a run date (Great Expectations 1.x).

Every table of the layer that has a suite (`expectations/`) and exists in the lake is checked in ONE GX
validation: all its expectations over the rows the layer checks for the run date (`rows_checked`; bronze: the
run's batch; silver: the whole table; gold: the run date's partition), read from the lake once: up to
`IN_MEMORY_MAX_ROWS` rows into memory, validated by GX's pandas engine, more cached in Spark and validated by
GX's Spark engine. Rows in memory come straight from the table's Delta files through pyarrow (`ArrowLake`,
no JVM) when those files are its rows (no deletion vectors, no column mapping), else through Spark; a gate
that needs no Spark opens no Spark session.

Validation runs in an in-memory GX context (`validation_context`). Everything users read is kept under
`<data_dir>/quality/`: the GX project in `gx/` (suites, every run's validation results, Data Docs in
`gx/uncommitted/data_docs/local_site/`), and a short JSON summary per layer and run date in
`<run_date>/<layer>.json` for the run summary (a rerun of the date replaces it). A failed critical
expectation raises `QualityGateError` once everything is stored; a failed warning is only recorded.

A table is validated for pass/fail first (GX's `BOOLEAN_ONLY`, the fewest Spark jobs); only when something
failed is it validated again with unexpected counts and example values (`BASIC`), which is what its stored
result and Data Docs page then show.

A gate result is of the rows a table held at one Delta version under one suite: when a table's version, its
suite and the rows checked (`check_scope`: the whole silver table; bronze's and gold's rows of the run date)
are those of a result that passed before, the gate reports that result (`reused_from`: its run date and
run) instead of validating the same rows again: a silver table no night changed (products, coupons), a
rerun's unchanged tables. The passing results are kept per layer in `<data_dir>/quality/passed/<layer>.json`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import operator
import os
import time
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from core.config import Settings
from core.lake import LAYERS, ArrowLake, Lake
from core.spark import spark_session

if TYPE_CHECKING:
    import pandas
    import pyarrow

# Great Expectations (and `expectations`, which imports it) is imported inside the functions that validate:
# it takes ~15 s to import, and the report and the run summary import this module only to read results.

log = logging.getLogger(__name__)

DATASOURCE = "lake"
#: Rows to check that fit the task's memory are validated by GX's pandas engine on one Arrow copy
#: (`IN_MEMORY_MAX_ROWS`): GX runs several Spark jobs per table, each with a fixed cost that dwarfs the work on
#: a night's batch or partition (measured: 31,451 silver orders, 2.7 s on a warm Spark server, 1.0 s in memory
#: with the copy). Larger sets stay on Spark, cached for the validation.
IN_MEMORY_DATASOURCE = "lake_in_memory"
IN_MEMORY_MAX_ROWS = 1_000_000
BATCH_DEFINITION = "rows_to_check"
EXAMPLES = 5  # unexpected values quoted per failed expectation
ROWS_PER_PARTITION = 1_000_000  # of the cached rows GX validates
#: Validation results the Data Docs index lists, newest first (about a week of nights: 3 gates of ~12
#: tables each). Building the index reads every result it lists, so without a limit each night's gate
#: would take longer than the last; older results stay stored, and so do their pages.
DATA_DOCS_INDEX_RESULTS = 300


class QualityGateError(ValueError):
    """A critical expectation failed; the message names layer, table, expectation, column, values and docs."""


def quality_dir(settings: Settings) -> Path:
    """Where the GX project and the per-run summaries live."""
    return settings.data_dir / "quality"


def summary_path(settings: Settings, run_date: date, layer: str) -> Path:
    """The JSON summary of one layer's gate for one run date."""
    return quality_dir(settings) / run_date.isoformat() / f"{layer}.json"


def run(run_date: date, settings: Settings, run_id: str, layer: str, tables_to_check: Sequence[str] | None = None) -> dict[str, Any]:
    """Validate every table of `layer` (or those named) for `run_date`; returns the layer's summary (JSON-ready).

    Raises `QualityGateError` when a critical expectation fails or a table of the layer is missing, after
    the results, the Data Docs and the summary are written.
    """
    import expectations

    if layer not in LAYERS:
        raise ValueError(f"unknown lake layer {layer!r}; expected one of {', '.join(LAYERS)}")
    started = time.perf_counter()
    project = quality_context(settings)
    context = validation_context()
    gx_run = _run_identifier(run_date, run_id)
    tables: dict[str, dict[str, Any]] = {}
    result_ids = []
    missing = []
    passed = read_passed(settings, layer)
    validated = {}
    files = ArrowLake(settings.lake_location)
    layer_rules = expectations.LAYER_SUITES[layer]
    with ExitStack() as opened:
        # Spark only for the rows a table's files cannot give in memory: a gate whose tables all fit starts and
        # waits for no Spark at all.
        spark_lake = functools.cache(
            lambda: Lake(opened.enter_context(spark_session(settings, f"validate_{layer}")), settings.lake_location)
        )
        for table in tables_to_check or expectations.tables(layer):
            if not files.exists(layer, table):
                if table not in getattr(layer_rules, "OPTIONAL_TABLES", ()):
                    missing.append(table)
                continue
            commit = files.latest_commit(layer, table)
            scope = layer_rules.rows_checked(run_date, table)
            suite = expectations.suite(layer, table)
            checked = {
                "version": commit["version"],
                "committed_at": commit["committed_at"],
                "suite": suite_digest(suite),
                "scope": scope_in_words(scope),
            }
            earlier = passed.get(table)
            if earlier is None or earlier["checked"]["suite"] != checked["suite"]:  # else the project has it since then
                project.suites.add_or_update(expectations.suite(layer, table))
            if earlier is not None and earlier["checked"] == checked:
                tables[table] = {
                    **earlier["report"],
                    "seconds": 0.0,
                    "reused_from": {"run_date": earlier["run_date"], "run_id": earlier["run_id"]},
                }
                log.info(
                    "%s/%s: version %d unchanged since the gate of %s passed it: not validated again",
                    layer,
                    table,
                    checked["version"],
                    earlier["run_date"],
                )
                continue
            reading = time.perf_counter()
            at_most = commit["rows_at_most"]
            fits_in_memory = at_most is not None and at_most <= IN_MEMORY_MAX_ROWS
            # Rows in memory come from the table's files through pyarrow, whenever those are its rows: no Spark job,
            # no round trip to the server. A large table's rows of the run date are counted first (silver/events).
            if commit["plain_files"] and (fits_in_memory or files.count_rows(layer, table, arrow_condition(scope)) <= IN_MEMORY_MAX_ROWS):
                rows = as_spark_gives(files.read(layer, table, where=arrow_condition(scope)))
            else:
                rows = spark_lake().read(layer, table).where(spark_condition(scope))
            report, result, result_id = validate_table(context, suite, rows, gx_run, fits_in_memory=fits_in_memory)
            project.validation_results_store.store_validation_results(result, result_id)
            report["seconds"] = round(time.perf_counter() - reading, 1)
            tables[table] = report
            validated[table] = (result_id, checked)
            result_ids.append(result_id)
            log.info(
                "%s/%s: %d rows, %d expectations, %d critical failures, %d warnings, %.1f s",
                layer,
                table,
                report["rows"],
                report["expectations"],
                len(report["critical_failures"]),
                len(report["warnings"]),
                report["seconds"],
            )

    docs_index = build_data_docs(project, result_ids)
    for table, (result_id, checked) in validated.items():
        tables[table]["data_docs"] = docs_page(project, result_id)
        if not tables[table]["critical_failures"]:
            passed[table] = {"checked": checked, "run_date": run_date.isoformat(), "run_id": run_id, "report": tables[table]}
    write_summary(passed_path(settings, layer), passed)
    summary = {
        "layer": layer,
        "run_date": run_date.isoformat(),
        "run_id": run_id,
        "passed": not missing and not any(report["critical_failures"] for report in tables.values()),
        "critical_failures": sum(len(report["critical_failures"]) for report in tables.values()),
        "warnings": sum(len(report["warnings"]) for report in tables.values()),
        "seconds": round(time.perf_counter() - started, 1),
        "data_docs": docs_index,
        "tables": tables,
        "not_in_lake": missing,
    }
    write_summary(summary_path(settings, run_date, layer), summary)
    if not summary["passed"]:
        raise QualityGateError(gate_message(summary))
    return summary


def passed_path(settings: Settings, layer: str) -> Path:
    """The layer's latest passing result per table, with what it was of (version, suite, rows checked)."""
    return quality_dir(settings) / "passed" / f"{layer}.json"


def read_passed(settings: Settings, layer: str) -> dict[str, dict[str, Any]]:
    """The passing results `run` may reuse, per table (none when the file is missing or unreadable)."""
    path = passed_path(settings, layer)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (ValueError, OSError) as error:
        log.warning("%s: %s; every table of the layer is validated", path, error)
        return {}


def scope_in_words(scope: dict[str, object]) -> str:
    """The rows a gate checks (`rows_checked`: column = value), in words: with the table's version, what a gate
    result is of."""
    return " AND ".join(f"{column} = {value}" for column, value in scope.items()) or "the whole table"


def spark_condition(scope: dict[str, object]):
    """`rows_checked` as a Spark filter (true for the whole table)."""
    from pyspark.sql import functions as F

    return functools.reduce(operator.and_, (F.col(column) == F.lit(value) for column, value in scope.items()), F.lit(True))


def arrow_condition(scope: dict[str, object]):
    """`rows_checked` as a `pyarrow.compute` filter (None for the whole table)."""
    import pyarrow.compute as pc

    conditions = [pc.field(column) == value for column, value in scope.items()]
    return functools.reduce(operator.and_, conditions) if conditions else None


def as_spark_gives(rows: pyarrow.Table) -> pandas.DataFrame:
    """An Arrow table in memory as Spark's `toPandas` gives it: timestamps in nanoseconds without a zone (UTC,
    the session time zone). GX's pandas engine then sees the same values and types whichever read the rows."""
    import pyarrow as pa

    spark_types = pa.schema([field.with_type(pa.timestamp("ns")) if pa.types.is_timestamp(field.type) else field for field in rows.schema])
    return rows.cast(spark_types).to_pandas()


def suite_digest(suite) -> str:
    """What a table's suite (`expectations.suite`, not yet in the GX project) checks, as a short hash: a changed
    expectation makes its results stale."""
    canonical = json.dumps(suite.to_json_dict(), sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def quality_context(settings: Settings):
    """The file-backed GX project under `<data_dir>/quality` (created on first use), progress bars off, the
    Data Docs index limited to the newest `DATA_DOCS_INDEX_RESULTS` results."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    import expectations  # noqa: F401  (first: it imports GX so that a failed import is an error, not an exit)

    context = gx.get_context(mode="file", project_root_dir=quality_dir(settings))
    bars = context.variables.progress_bars  # a dict once read back from great_expectations.yml
    shown = True if bars is None else bars.get("globally", True) if isinstance(bars, dict) else bars.globally
    changed = False
    if shown:
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        changed = True
    sites = dict(context.variables.data_docs_sites or {})
    for site in sites.values():
        index = site.setdefault("site_index_builder", {"class_name": "DefaultSiteIndexBuilder"})
        if index.get("validation_results_limit") != DATA_DOCS_INDEX_RESULTS:
            index["validation_results_limit"] = DATA_DOCS_INDEX_RESULTS
            changed = True
    if changed:
        context.variables.data_docs_sites = sites
        context.variables.save()
        context = gx.get_context(mode="file", project_root_dir=quality_dir(settings))
    return context


def validation_context():
    """The GX context tables are validated in: in memory (suite, data source, validation definition live as long
    as the gate), progress bars off. Registering them in the file project wrote and re-read a JSON or YAML file
    per object and table (measured: 11 silver tables validated in 4.5 s there, 1.8 s in memory); the project keeps
    what users read: the suites, every result, the Data Docs."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def validate_table(context, suite, rows, gx_run, fits_in_memory: bool = False) -> tuple[dict[str, Any], Any, Any]:
    """Run a table's suite (`expectations.suite`) on `rows` (a pandas DataFrame in memory, or a Spark DataFrame) as one
    validation in `context` (`validation_context`); returns its report, the result and the key to keep it under.

    `fits_in_memory`: the whole table is known to hold at most `IN_MEMORY_MAX_ROWS` rows (its log's file
    statistics), so Spark rows are copied into memory at once, without caching and counting them first."""
    import great_expectations as gx
    import pandas
    from great_expectations.data_context.types.resource_identifiers import ExpectationSuiteIdentifier, ValidationResultIdentifier

    from expectations.severity import CRITICAL

    name = suite.name
    # A Spark DataFrame is read once: straight into memory when the whole table fits; otherwise into Spark's
    # cache (the rows of a night may be a filter over a large table), counted, and from there into memory when
    # they fit. Few partitions for GX's Spark jobs, since each job's overhead outweighs the work on small tables.
    if isinstance(rows, pandas.DataFrame):
        checked = rows
        row_count, in_memory = len(checked), True
    elif fits_in_memory:
        checked = rows.toPandas()
        row_count, in_memory = len(checked), True
    else:
        cached = rows.persist()
        row_count = cached.count()
        in_memory = row_count <= IN_MEMORY_MAX_ROWS
        if in_memory:
            checked = cached.toPandas()
            cached.unpersist()
        else:
            checked = cached.coalesce(max(1, math.ceil(row_count / ROWS_PER_PARTITION)))
    definition = context.validation_definitions.add_or_update(  # adds the suite too
        gx.ValidationDefinition(
            name=f"{name}.in_memory" if in_memory else name, data=_batch_definition(context, name, in_memory), suite=suite
        )
    )
    suite = definition.suite
    try:
        result = definition.run(batch_parameters={"dataframe": checked}, result_format="BOOLEAN_ONLY", run_id=gx_run)
        if not result.success:
            # Counts and example values cost a job per expectation (BASIC doubles the jobs): only computed
            # when something failed. This result is the one kept (same key).
            result = definition.run(batch_parameters={"dataframe": checked}, result_format="BASIC", run_id=gx_run)
    finally:
        if not in_memory:
            cached.unpersist()
    result_id = ValidationResultIdentifier(
        expectation_suite_identifier=ExpectationSuiteIdentifier(name=suite.name), run_id=gx_run, batch_identifier=result.batch_id
    )
    report = {"rows": row_count, "expectations": result.statistics["evaluated_expectations"], "critical_failures": [], "warnings": []}
    position = {expectation.id: index for index, expectation in enumerate(suite.expectations)}
    for outcome in sorted(result.results, key=lambda outcome: position.get(outcome.expectation_config.id, 0)):
        if outcome.success:
            continue
        key = "critical_failures" if outcome.expectation_config.severity == CRITICAL else "warnings"
        report[key].append(describe_failure(outcome))
    return report, result, result_id


def describe_failure(outcome) -> dict[str, Any]:
    """A failed expectation in a few JSON-ready fields: which, on what column, how many rows, examples."""
    config = outcome.expectation_config
    result = outcome.result or {}
    failure: dict[str, Any] = {"expectation": config.type, "column": config.kwargs.get("column")}
    errors = _exception_messages(outcome.exception_info)
    if errors:
        failure["error"] = "; ".join(errors)
    elif "unexpected_count" in result:
        failure["unexpected_count"] = result["unexpected_count"]
        failure["rows"] = result.get("element_count")
        failure["examples"] = _distinct(result.get("partial_unexpected_list") or [])[:EXAMPLES]
    elif "mismatched" in result.get("details", {}):
        failure["missing_columns"] = result["details"]["mismatched"].get("missing", [])
        failure["unexpected_columns"] = result["details"]["mismatched"].get("unexpected", [])
        failure["present_columns"] = result.get("observed_value")
    elif "observed_value" in result:
        failure["observed"] = result["observed_value"]
    return json.loads(json.dumps(failure, default=str))


def build_data_docs(context, result_ids: list) -> str:
    """Render this run's validation pages and the index; returns the index page's path."""
    sites = context.build_data_docs(resource_identifiers=result_ids) if result_ids else {}
    if not sites:
        sites = {site["site_name"]: site["site_url"] for site in context.get_docs_sites_urls(only_if_exists=False)}
    return _file_path(next(iter(sites.values())))


def docs_page(context, result_id) -> str:
    """The Data Docs page of one stored validation result."""
    return _file_path(context.get_docs_sites_urls(resource_identifier=result_id, only_if_exists=False)[0]["site_url"])


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """Write the layer's summary in one rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def quality_summary(settings: Settings, run_date: date) -> dict[str, dict[str, Any]] | None:
    """The gate summaries of `run_date` per layer (bronze, silver, gold order), or None when none ran."""
    found = {}
    for layer in LAYERS:
        path = summary_path(settings, run_date, layer)
        if path.is_file():
            found[layer] = json.loads(path.read_text(encoding="utf-8"))
    return found or None


def gate_message(summary: dict[str, Any]) -> str:
    """Every critical failure of a layer, one line each, naming table, expectation, column, values and docs."""
    layer = summary["layer"]
    # The first line alone (what a scheduler's task list shows) names where: table.column of each failure.
    where = [
        f"{table}.{failure['column']}" if failure.get("column") else table
        for table, report in summary["tables"].items()
        for failure in report["critical_failures"]
    ]
    lines = [
        f"quality gate {layer} for {summary['run_date']} failed: {summary['critical_failures']} critical expectation(s) not met"
        + (f" ({', '.join(dict.fromkeys(where))})" if where else "")
    ]
    if summary.get("not_in_lake"):
        lines.append(
            f"  {layer}: table(s) not in the lake: {', '.join(summary['not_in_lake'])} "
            f"(the job that writes them has not run for this lake?)"
        )
    for table, report in summary["tables"].items():
        for failure in report["critical_failures"]:
            lines.append(f"  {layer}/{table}: {failure_text(failure)} (Data Docs: {report['data_docs']})")
    lines.append(f"Data Docs index: {summary['data_docs']}")
    return "\n".join(lines)


def failure_text(failure: dict[str, Any]) -> str:
    column = f" on column {failure['column']}" if failure.get("column") else ""
    text = f"{failure['expectation']}{column}"
    if "error" in failure:
        return f"{text} could not be evaluated: {failure['error']}"
    if "unexpected_count" in failure:
        examples = ", ".join(repr(value) for value in failure["examples"])
        return f"{text}: {failure['unexpected_count']} of {failure['rows']} rows unexpected, e.g. {examples}"
    if "missing_columns" in failure:
        problems = [
            f"{kind} column(s) {', '.join(failure[f'{kind}_columns'])}" for kind in ("missing", "unexpected") if failure[f"{kind}_columns"]
        ]
        return f"{text}: {'; '.join(problems)} (present: {', '.join(failure['present_columns'] or [])})"
    return f"{text}: observed {failure.get('observed')}"


def _batch_definition(context, asset_name: str, in_memory: bool):
    """The whole-DataFrame batch of the asset `asset_name` (created on first use): of a pandas DataFrame
    (`in_memory`) or of a Spark DataFrame."""
    try:
        source = context.data_sources.get(IN_MEMORY_DATASOURCE if in_memory else DATASOURCE)
    except KeyError:
        # Caching is ours (`validate_table`), so GX must not persist the rows again and keep them.
        source = (
            context.data_sources.add_pandas(name=IN_MEMORY_DATASOURCE)
            if in_memory
            else context.data_sources.add_spark(name=DATASOURCE, persist=False)
        )
    try:
        asset = source.get_asset(asset_name)
    except LookupError:
        asset = source.add_dataframe_asset(name=asset_name)
    try:
        return asset.get_batch_definition(BATCH_DEFINITION)
    except KeyError:
        return asset.add_batch_definition_whole_dataframe(BATCH_DEFINITION)


def _run_identifier(run_date: date, run_id: str):
    """GX's run id: the run date and our run id as its name (no `/`: GX store keys are paths)."""
    from great_expectations.core.run_identifier import RunIdentifier

    name = f"{run_date.isoformat()}__{run_id}".replace("/", "_").replace("\\", "_")
    return RunIdentifier(run_name=name, run_time=datetime.now(timezone.utc))


def _exception_messages(info: dict | None) -> list[str]:
    """The messages of an expectation that could not be evaluated (e.g. its column is missing).

    GX gives either one exception (`raised_exception`, `exception_message`) or one per failed metric.
    """
    if not info:
        return []
    if "raised_exception" in info:
        return [str(info.get("exception_message"))] if info.get("raised_exception") else []
    return _distinct([str(getattr(item, "exception_message", item)) for item in info.values()])


def _distinct(values: list) -> list:
    seen, distinct = set(), []
    for value in values:
        marker = repr(value)
        if marker not in seen:
            seen.add(marker)
            distinct.append(value)
    return distinct


def _file_path(url: str) -> str:
    return unquote(urlparse(url).path) if url.startswith("file:") else url
