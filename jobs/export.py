"""export: gold -> `<data>/exports/<run_date>/`, the files marketing tools read.

Per dataset a CSV and a Parquet file with the same rows, after the dataset's PII policy (`export.pii`:
hash or drop columns); JSON Schemas of the manifest and of each dataset's rows in `schemas/`;
`manifest.json` (schema version, run id, run date, per file: format, sha256 and bytes; per data file also
rows, columns and the PII policy applied); `_SUCCESS`. The folder is written under a temporary name with
`_SUCCESS` last and renamed when complete; `exports/latest` points at the newest complete run date and moves
last. A reader that waits for `_SUCCESS` (or follows `latest`) never sees a partial export. After a
successful export only the newest `export.keep_runs` dated folders are kept.

`crm export` (`rerun`) writes a run date's folder again from gold the same way, without rerunning the night:
after a change of `export.pii` or `export.datasets`, with the run id of the night that wrote those rows.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import functions as F
from sqlalchemy import Boolean, Column, Date, DateTime, Float, Integer, Numeric, String, Table

from core import runlog
from core.config import PII_POLICIES, Settings
from core.crm_schema import crm_metadata
from core.lake import Lake
from core.spark import spark_session

log = logging.getLogger(__name__)

#: 3.3: customer_activity exported by default (browsing activity, browse-abandoned products).
#: 3.2: coupon_offers and recommendations exported by default. 3.1: campaign_audiences exported by default,
#: and per campaign its treatment group alone in campaigns/<campaign>.csv|parquet (manifest entries with
#: `campaign`). 3.0: a Parquet file next to each CSV, JSON Schemas in schemas/, the PII policy per dataset
#: (export.pii), and `format` (plus `dataset`, `pii`, `schema` for data files) in each manifest entry; the schema files are
#: listed there too. 2.1: customer_scores.csv added (its churn columns are empty while no churn model can be
#: trained yet, its value columns while the shop has no repeat buyer); 2.0: customer_segments.csv columns changed.
SCHEMA_VERSION = "3.3"
SUCCESS_MARKER = "_SUCCESS"
MANIFEST = "manifest.json"
SCHEMAS = "schemas"
MANIFEST_SCHEMA = f"{SCHEMAS}/manifest.schema.json"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
#: Hidden names in `exports/`: a run's staging folder, a replaced or expired folder on its way out, a new symlink.
STAGING_PREFIX, RETIRED_PREFIX, LINK_PREFIX = ".tmp-", ".old-", ".latest-"
#: A hidden leftover younger than this may belong to a run in progress (of another code version, which
#: takes no lock): retention leaves it alone.
LEFTOVER_MIN_AGE_SECONDS = 3600
SHA256_PATTERN = "^[0-9a-f]{64}$"
#: The task whose success makes a run date's gold rows exportable (`crm export` checks the run log).
QUALITY_GATE = "validate_gold"
#: The dataset also written per campaign (its treatment group) in campaigns/.
CAMPAIGNS = "campaign_audiences"


def run(run_date: date, settings: Settings, run_id: str) -> Path:
    """Export the run date's gold datasets; returns the export folder."""
    exports = settings.exports_dir
    exports.mkdir(parents=True, exist_ok=True)
    with exclusive(exports):
        remove_leftovers_of(exports, run_date)
        staging = exports / f"{STAGING_PREFIX}{run_date.isoformat()}-{uuid.uuid4().hex[:8]}"
        (staging / SCHEMAS).mkdir(parents=True)
        try:
            files = {MANIFEST_SCHEMA: write_json(manifest_schema(), staging / MANIFEST_SCHEMA)}
            with spark_session(settings, "export") as spark:
                lake = Lake(spark, settings.lake_location)
                for dataset in settings.export.datasets:
                    files.update(write_dataset(lake, dataset, run_date, settings.export.pii.get(dataset, {}), staging))
            manifest = {"schema_version": SCHEMA_VERSION, "run_id": run_id, "run_date": run_date.isoformat(), "files": files}
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            (staging / SUCCESS_MARKER).touch()
            target = exports / run_date.isoformat()
            publish_folder(staging, target)
            point_latest(exports)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("exported %s to %s", ", ".join(settings.export.datasets), target)
        remove_old_exports(exports, settings.export.keep_runs, target, now=time.time())
    return target


def rerun(settings: Settings, run_date: date | None = None) -> Path:
    """Export a run date again from its gold rows, without rerunning the night (`crm export`); returns the folder.

    For a changed export configuration (e.g. the PII policy `export.pii`): the folder of `run_date` (default:
    the latest run date every exported dataset holds in gold) is replaced whole, as the night's export
    replaces it, and its manifest names the run that wrote those gold rows. Only rows that passed the
    night's gold quality gate are exported: the run log must record it.
    """
    with spark_session(settings, "export") as spark:
        lake = Lake(spark, settings.lake_location)
        day = run_date or latest_gold_date(lake, settings.export.datasets)
        run_id = gold_run_id(lake, settings.export.datasets, day)
        if not runlog.stage_succeeded(settings, run_id, QUALITY_GATE):
            raise ValueError(
                f"gold rows for {day} come from run {run_id}, whose quality gate ({QUALITY_GATE}) the "
                f"run log (crm status) does not record as passed: they are not exported; "
                f"run the night again: crm run --date {day}"
            )
        return run(day, settings, run_id)


def latest_gold_date(lake: Lake, datasets: list[str]) -> date:
    """The latest run date (`as_of`) that every dataset's gold table holds; ValueError when there is none."""
    common: set[date] | None = None
    for dataset in datasets:
        held = set(gold_dates(lake, dataset))
        common = held if common is None else common & held
    if not common:
        raise ValueError(
            f"gold holds no run date of {', '.join(datasets)} (export.datasets) in {lake.location.spark_uri('gold')}; "
            f"run the night first: crm run --date YYYY-MM-DD"
        )
    return max(common)


def gold_dates(lake: Lake, dataset: str) -> list[date]:
    """The run dates (`as_of` partitions) a gold table holds; none when the table does not exist."""
    if not lake.exists("gold", dataset):
        return []
    return [row.as_of for row in lake.read("gold", dataset).select("as_of").distinct().collect()]


def gold_run_id(lake: Lake, datasets: list[str], run_date: date) -> str:
    """The run that wrote the gold rows of `run_date` of every dataset; ValueError when a dataset has none or
    they come from different runs (a later night for the date that did not finish)."""
    runs = {dataset: gold_run_ids(lake, dataset, run_date) for dataset in datasets}
    missing = [dataset for dataset, run_ids in runs.items() if not run_ids]
    if missing:
        raise ValueError(
            f"gold holds no rows of {', '.join(missing)} for {run_date}; run the night for it first: crm run --date {run_date}"
        )
    found = sorted({run_id for run_ids in runs.values() for run_id in run_ids})
    if len(found) > 1:
        by_dataset = "; ".join(f"{dataset}: {', '.join(run_ids)}" for dataset, run_ids in runs.items())
        raise ValueError(
            f"gold rows for {run_date} come from {len(found)} runs ({by_dataset}): a night for {run_date} "
            f"did not finish; run it again: crm run --date {run_date}"
        )
    return found[0]


def gold_run_ids(lake: Lake, dataset: str, run_date: date) -> list[str]:
    """The runs whose rows a gold table holds for `run_date`; none when the table does not exist."""
    if not lake.exists("gold", dataset):
        return []
    rows = lake.read("gold", dataset).where(F.col("as_of") == F.lit(run_date)).select("run_id").distinct()
    return sorted(row.run_id for row in rows.collect())


def write_dataset(lake: Lake, dataset: str, run_date: date, policy: Mapping[str, str], folder: Path) -> dict[str, dict]:
    """Write one dataset's CSV, Parquet and row schema into `folder`; returns their manifest entries by file name."""
    table = contract_table(dataset)
    # The files have the CRM table's columns, in its order (less what the PII policy drops).
    columns = [column.name for column in table.columns]
    order = [column.name for column in table.primary_key.columns] or columns
    rows = lake.read("gold", dataset).where(F.col("as_of") == F.lit(run_date)).select(*columns).orderBy(*order)
    data = with_pii_policy(rows.toArrow(), policy)
    schema_file = f"{SCHEMAS}/{dataset}.schema.json"
    about = {"dataset": dataset, "pii": dict(policy), "schema": schema_file}
    files = {
        f"{dataset}.csv": {**write_csv(data, folder / f"{dataset}.csv"), "format": "csv", **about},
        f"{dataset}.parquet": {**write_parquet(data, folder / f"{dataset}.parquet"), "format": "parquet", **about},
        schema_file: write_json(dataset_schema(dataset, policy), folder / schema_file),
    }
    if dataset == CAMPAIGNS:
        files.update(write_campaign_files(data, folder, about))
    return files


def write_campaign_files(data: pa.Table, folder: Path, about: dict) -> dict[str, dict]:
    """Per campaign, the customers to contact (its treatment group) in `campaigns/<campaign>.csv|parquet`:
    what a marketing tool loads as the campaign's list. Every campaign of the night gets its files, even
    with no one to contact."""
    (folder / "campaigns").mkdir(exist_ok=True)
    files = {}
    for campaign in sorted(set(data.column("campaign").to_pylist())):
        rows = data.filter(pc.and_(pc.equal(data["campaign"], campaign), pc.equal(data["audience_group"], "treatment")))
        for kind, writer in (("csv", write_csv), ("parquet", write_parquet)):
            name = f"campaigns/{campaign}.{kind}"
            files[name] = {**writer(rows, folder / name), "format": kind, **about, "campaign": campaign}
    return files


def contract_table(dataset: str) -> Table:
    """The CRM table whose columns an exported dataset has; an unknown dataset is a configuration error."""
    tables = crm_metadata(None).tables
    if dataset not in tables:
        raise ValueError(f"export.datasets: unknown dataset {dataset!r}; expected one of {', '.join(sorted(tables))}")
    return tables[dataset]


# ---- PII ---------------------------------------------------------------------------------------------


def with_pii_policy(table: pa.Table, policy: Mapping[str, str]) -> pa.Table:
    """`table` with the policy applied: `sha256` columns hashed (`pii_sha256`), `drop` columns left out."""
    for column, rule in policy.items():
        if rule == "drop":
            table = table.drop_columns([column])
        elif rule == "sha256":
            hashed = pa.array([pii_sha256(value) for value in table.column(column).to_pylist()], pa.string())
            table = table.set_column(table.schema.get_field_index(column), column, hashed)
    return table


def pii_sha256(value: str | None) -> str | None:
    """Hex SHA-256 of the trimmed, lower-cased value (UTF-8), as ad platforms match e-mail addresses; blank: null."""
    if value is None or not value.strip():
        return None
    return hashlib.sha256(value.strip().lower().encode("utf-8")).hexdigest()


# ---- files -------------------------------------------------------------------------------------------


def write_csv(table: pa.Table, path: Path) -> dict:
    """Write a pyarrow Table as UTF-8 CSV with a header; returns its manifest entry."""
    columns = table.column_names
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for batch in table.to_batches(max_chunksize=50_000):
            for row in batch.to_pylist():
                writer.writerow([csv_field(row[name]) for name in columns])
    return file_entry(table, path)


def csv_field(value: object) -> object:
    """A value as the CSV writes it: null empty, booleans true/false, timestamps ISO 8601 with their offset."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    return value  # dates are YYYY-MM-DD and decimals keep their scale as they are


def write_parquet(table: pa.Table, path: Path) -> dict:
    """Write a pyarrow Table as Parquet with its types (decimals, dates, UTC timestamps); returns its manifest entry."""
    pq.write_table(table, path, compression="snappy")
    return file_entry(table, path)


def file_entry(table: pa.Table, path: Path) -> dict:
    """A data file's manifest entry: rows, columns, sha256 and size in bytes."""
    return {"rows": table.num_rows, "columns": table.column_names, "sha256": sha256_of(path), "bytes": path.stat().st_size}


def write_json(document: dict, path: Path) -> dict:
    """Write a JSON Schema document; returns its manifest entry."""
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return {"format": "json-schema", "sha256": sha256_of(path), "bytes": path.stat().st_size}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---- JSON Schemas ------------------------------------------------------------------------------------


def dataset_schema(dataset: str, policy: Mapping[str, str]) -> dict:
    """JSON Schema (draft 2020-12) of one row of the dataset's files, from its CRM table and the PII policy.

    A row as JSON: null for an empty CSV field, decimals as text with their scale (`"40.00"`, exact), dates
    as `YYYY-MM-DD`, timestamps as ISO 8601 with their UTC offset.
    """
    table = contract_table(dataset)
    columns = [column for column in table.columns if policy.get(column.name) != "drop"]
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"urn:shop-crm:export:{SCHEMA_VERSION}:{dataset}",
        "title": f"{dataset} (export schema {SCHEMA_VERSION})",
        "description": f"{table.comment}. One row of {dataset}.csv and {dataset}.parquet.",
        "type": "object",
        "properties": {column.name: column_schema(column, policy.get(column.name, "plain")) for column in columns},
        "required": [column.name for column in columns],
        "additionalProperties": False,
    }


def column_schema(column: Column, rule: str) -> dict:
    """One column's JSON Schema: its type, nullability and comment, as the export writes it."""
    kind, description = column.type, column.comment or ""
    if rule == "sha256":
        spec = {"type": "string", "pattern": SHA256_PATTERN}
        description += "; exported as the hex SHA-256 of the trimmed, lower-cased value (export.pii)"
    elif isinstance(kind, Boolean):
        spec = {"type": "boolean"}
    elif isinstance(kind, Integer):
        spec = {"type": "integer"}
    elif isinstance(kind, Float):
        spec = {"type": "number"}
    elif isinstance(kind, Numeric):
        whole = kind.precision - kind.scale
        spec = {"type": "string", "pattern": rf"^-?[0-9]{{1,{whole}}}\.[0-9]{{{kind.scale}}}$"}
        description += f' (decimal({kind.precision},{kind.scale}) as text, e.g. "40.{"0" * kind.scale}")'
    elif isinstance(kind, DateTime):
        spec = {"type": "string", "format": "date-time"}
    elif isinstance(kind, Date):
        spec = {"type": "string", "format": "date"}
    elif isinstance(kind, String):
        spec = {"type": "string", **({"maxLength": kind.length} if kind.length else {})}
    else:
        raise TypeError(f"{column.table.name}.{column.name}: no JSON Schema type for {kind!r}")
    if column.nullable:
        spec["type"] = [spec["type"], "null"]
    return {"description": description, **spec}


def manifest_schema() -> dict:
    """JSON Schema (draft 2020-12) of `manifest.json`."""
    sha256 = {"type": "string", "pattern": SHA256_PATTERN, "description": "SHA-256 of the file's bytes, hex"}
    size = {"type": "integer", "minimum": 0, "description": "size of the file in bytes"}
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"urn:shop-crm:export:{SCHEMA_VERSION}:manifest",
        "title": f"manifest.json (export schema {SCHEMA_VERSION})",
        "description": "What one export folder holds: every file but manifest.json and _SUCCESS, with its checksum.",
        "type": "object",
        "properties": {
            "schema_version": {"const": SCHEMA_VERSION, "description": "version of this contract"},
            "run_id": {"type": "string", "minLength": 1, "description": "the pipeline run that wrote the folder"},
            "run_date": {"type": "string", "format": "date", "description": "the business date exported (as_of)"},
            "files": {
                "type": "object",
                "description": "per file, by its path relative to the folder",
                "additionalProperties": {"oneOf": [{"$ref": "#/$defs/data_file"}, {"$ref": "#/$defs/schema_file"}]},
                "minProperties": 1,
            },
        },
        "required": ["schema_version", "run_id", "run_date", "files"],
        "additionalProperties": False,
        "$defs": {
            "data_file": {
                "type": "object",
                "description": "one dataset in one format; its CSV and Parquet files hold the same rows",
                "properties": {
                    "format": {"enum": ["csv", "parquet"]},
                    "dataset": {"type": "string", "description": "the CRM table whose columns the file has"},
                    "rows": {"type": "integer", "minimum": 0, "description": "data rows (CSV: without the header)"},
                    "columns": {
                        "type": "array",
                        "items": {"type": "string"},
                        "minItems": 1,
                        "uniqueItems": True,
                        "description": "the file's columns, in order",
                    },
                    "sha256": sha256,
                    "bytes": size,
                    "pii": {
                        "type": "object",
                        "additionalProperties": {"enum": list(PII_POLICIES)},
                        "description": "PII policy applied, column -> policy; columns not listed are plain",
                    },
                    "schema": {"type": "string", "description": "JSON Schema of one row, relative to the folder"},
                    "campaign": {
                        "type": "string",
                        "description": "campaigns/<campaign>.*: the campaign whose treatment group (whom to contact) the file holds",
                    },
                },
                "required": ["format", "dataset", "rows", "columns", "sha256", "bytes", "pii", "schema"],
                "additionalProperties": False,
            },
            "schema_file": {
                "type": "object",
                "description": "a JSON Schema in schemas/",
                "properties": {"format": {"const": "json-schema"}, "sha256": sha256, "bytes": size},
                "required": ["format", "sha256", "bytes"],
                "additionalProperties": False,
            },
        },
    }


# ---- publishing and retention ------------------------------------------------------------------------


@contextmanager
def exclusive(exports: Path) -> Iterator[None]:
    """Hold the exports folder's lock (flock on the folder itself): one export at a time writes there.

    The kernel releases it when the holder dies, so a killed export never blocks the next one.
    """
    handle = os.open(exports, os.O_RDONLY)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another export in %s to finish", exports)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)


def remove_leftovers_of(exports: Path, run_date: date) -> None:
    """Remove what a killed export of `run_date` left (its staging folder); only called under the lock."""
    for prefix in (STAGING_PREFIX, RETIRED_PREFIX):
        for leftover in exports.glob(f"{prefix}{run_date.isoformat()}-*"):
            shutil.rmtree(leftover, ignore_errors=True)
            log.info("removed %s, left by an earlier export of %s that did not finish", leftover.name, run_date)


def publish_folder(staging: Path, target: Path) -> None:
    """Move a complete folder into place; an earlier export of the same date is replaced whole."""
    if target.exists():
        retired = retire(target)
        staging.rename(target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        staging.rename(target)


def retire(folder: Path) -> Path:
    """Rename a dated folder to a hidden name (atomic) so that deleting it never shows a partial dated folder."""
    retired = folder.with_name(f"{RETIRED_PREFIX}{folder.name}-{uuid.uuid4().hex[:8]}")
    folder.rename(retired)
    return retired


def dated_folders(exports: Path) -> list[Path]:
    """The export folders named by a run date, newest first."""
    found = []
    for folder in exports.iterdir():
        try:
            date.fromisoformat(folder.name)
        except ValueError:
            continue
        if folder.is_dir() and not folder.is_symlink():
            found.append(folder)
    return sorted(found, key=lambda folder: folder.name, reverse=True)


def point_latest(exports: Path) -> None:
    """Point `exports/latest` at the newest complete export (atomic symlink swap)."""
    newest = next(folder for folder in dated_folders(exports) if (folder / SUCCESS_MARKER).exists())
    link = exports / f"{LINK_PREFIX}{uuid.uuid4().hex[:8]}"
    link.symlink_to(newest.name)
    os.replace(link, exports / "latest")


def remove_old_exports(exports: Path, keep_runs: int, current: Path, now: float) -> list[str]:
    """Keep the newest `keep_runs` dated folders, the one `latest` points at and `current`; remove the rest.

    Also removes hidden leftovers of killed runs older than `LEFTOVER_MIN_AGE_SECONDS` (`now`: Unix seconds).
    Returns the names removed.
    """
    latest = exports / "latest"
    protected = {current.resolve(), *([latest.resolve()] if latest.is_symlink() else [])}
    removed = []
    for folder in dated_folders(exports)[keep_runs:]:
        if folder.resolve() in protected:
            continue
        shutil.rmtree(retire(folder), ignore_errors=True)
        removed.append(folder.name)
    for prefix in (STAGING_PREFIX, RETIRED_PREFIX, LINK_PREFIX):
        for leftover in exports.glob(f"{prefix}*"):
            if now - leftover.lstat().st_mtime < LEFTOVER_MIN_AGE_SECONDS:
                continue
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
            removed.append(leftover.name)
    if removed:
        log.info("export retention (export.keep_runs=%d): removed %s", keep_runs, ", ".join(removed))
    return removed
