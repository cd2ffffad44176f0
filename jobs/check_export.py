"""check_export: what a marketing tool would receive from `exports/<run_date>/`, read as the export contract
tells a reader to (docs/export-contract.md, "Reading it safely"): only a complete folder (`_SUCCESS`), a
manifest of this major version, every file's size and SHA-256 as the manifest states them.

The job of the example consumer DAG `crm_export_check`, which the nightly's `export` asset triggers; a sync to
a mailing tool starts where this ends, from files known to be the ones the night wrote.
"""

from __future__ import annotations

import json
import logging
from datetime import date
from pathlib import Path

from core.config import Settings
from jobs.export import MANIFEST, SCHEMA_VERSION, SUCCESS_MARKER, sha256_of

log = logging.getLogger(__name__)


class ExportCheckError(RuntimeError):
    """The export folder is incomplete or not what its manifest says; the message names the file."""


def run(run_date: date, settings: Settings, run_id: str) -> dict:
    """Check `exports/<run_date>/`; returns the run that wrote it, the files checked and the rows per dataset."""
    folder = settings.exports_dir / run_date.isoformat()
    manifest = read_manifest(folder, run_date)
    for name, entry in sorted(manifest["files"].items()):
        check_file(folder / name, entry)
    rows = {
        entry["dataset"]: entry["rows"]
        for name, entry in manifest["files"].items()
        if entry.get("format") == "csv" and "campaign" not in entry
    }
    log.info(
        "exports/%s: %d files as the manifest of run %s states them; rows %s", run_date, len(manifest["files"]), manifest["run_id"], rows
    )
    return {"run_date": run_date.isoformat(), "export_run_id": manifest["run_id"], "files_checked": len(manifest["files"]), "rows": rows}


def read_manifest(folder: Path, run_date: date) -> dict:
    """The manifest of a complete export folder of `run_date`, of this major schema version."""
    if not (folder / SUCCESS_MARKER).exists():
        raise ExportCheckError(f"{folder}: no {SUCCESS_MARKER}; the export of {run_date} is missing or incomplete")
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    major = SCHEMA_VERSION.split(".")[0]
    if str(manifest.get("schema_version", "")).split(".")[0] != major:
        raise ExportCheckError(f"{folder / MANIFEST}: schema_version {manifest.get('schema_version')!r}; expected {major}.x")
    if manifest.get("run_date") != run_date.isoformat():
        raise ExportCheckError(f"{folder / MANIFEST}: run_date {manifest.get('run_date')!r}; expected {run_date}")
    return manifest


def check_file(path: Path, entry: dict) -> None:
    """Raise unless `path` has the size (bytes) and SHA-256 its manifest entry states."""
    if not path.is_file():
        raise ExportCheckError(f"{path}: listed in the manifest, missing")
    if path.stat().st_size != entry["bytes"] or sha256_of(path) != entry["sha256"]:
        raise ExportCheckError(f"{path}: {path.stat().st_size} bytes, not the {entry['bytes']} bytes and SHA-256 the manifest states")
