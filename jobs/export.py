"""export: gold -> `<data>/exports/<run_date>/`, the files marketing tools read.

Per dataset a CSV file, plus `manifest.json` (schema version, run id, run date, per file: rows, columns and
sha256). The folder is written under a temporary name and renamed when complete, then `_SUCCESS` marks it;
`exports/latest` points at the newest complete run date and moves last. A reader that waits for
`_SUCCESS` (or follows `latest`) never sees a partial export.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
import uuid
from datetime import date
from pathlib import Path

from pyspark.sql import functions as F

from jobs.config import Settings
from jobs.crm_schema import crm_metadata
from jobs.lake import Lake
from jobs.spark import spark_session

log = logging.getLogger(__name__)

#: 2.1: customer_scores.csv added (its churn columns are empty while no churn model can be trained yet,
#: its value columns while the shop has no repeat buyer); 2.0: customer_segments.csv columns changed.
SCHEMA_VERSION = "2.1"
SUCCESS_MARKER = "_SUCCESS"
MANIFEST = "manifest.json"


def run(run_date: date, settings: Settings, run_id: str) -> Path:
    """Export the run date's gold datasets; returns the export folder."""
    exports = settings.exports_dir
    exports.mkdir(parents=True, exist_ok=True)
    staging = exports / f".tmp-{run_date.isoformat()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        files = {}
        with spark_session(settings, "export") as spark:
            lake = Lake(spark, settings.lake_dir)
            for dataset in settings.export.datasets:
                # The file has the CRM table's columns, in its order: one documented contract for both.
                columns = [column.name for column in contract_table(dataset).columns]
                rows = lake.read("gold", dataset).where(F.col("as_of") == F.lit(run_date)).select(*columns)
                files[f"{dataset}.csv"] = write_csv(rows.orderBy("customer_id").toArrow(), staging / f"{dataset}.csv")
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "run_id": run_id,
            "run_date": run_date.isoformat(),
            "files": files,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        target = exports / run_date.isoformat()
        publish_folder(staging, target)
        (target / SUCCESS_MARKER).touch()
        point_latest(exports, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("exported %s to %s", ", ".join(settings.export.datasets), target)
    return target


def contract_table(dataset: str):
    """The CRM table whose columns an exported dataset has; an unknown dataset is a configuration error."""
    tables = crm_metadata(None).tables
    if dataset not in tables:
        raise ValueError(f"export.datasets: unknown dataset {dataset!r}; expected one of {', '.join(sorted(tables))}")
    return tables[dataset]


def write_csv(table, path: Path) -> dict:
    """Write a pyarrow Table as UTF-8 CSV with a header; returns its manifest entry."""
    columns = table.column_names
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for batch in table.to_batches(max_chunksize=50_000):
            for row in batch.to_pylist():
                writer.writerow(["" if row[name] is None else row[name] for name in columns])
    return {"rows": table.num_rows, "columns": columns, "sha256": sha256_of(path), "bytes": path.stat().st_size}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def publish_folder(staging: Path, target: Path) -> None:
    """Move a complete folder into place; an earlier export of the same date is replaced whole."""
    if target.exists():
        retired = target.with_name(f".old-{target.name}-{uuid.uuid4().hex[:8]}")
        target.rename(retired)
        staging.rename(target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        staging.rename(target)


def point_latest(exports: Path, target: Path) -> None:
    """Point `exports/latest` at the newest complete export (atomic symlink swap)."""
    newest = max(
        (folder for folder in exports.iterdir() if (folder / SUCCESS_MARKER).exists() and not folder.is_symlink()),
        key=lambda folder: folder.name,
    )
    link = exports / f".latest-{uuid.uuid4().hex[:8]}"
    link.symlink_to(newest.name)
    os.replace(link, exports / "latest")
