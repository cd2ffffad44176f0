"""The export contract: CSV and Parquet with the same rows, a manifest whose checksums and JSON Schemas hold,
the PII policy, an atomic `latest` that survives a killed export, retention, and configuration errors."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from jsonschema import Draft202012Validator, ValidationError
from pyspark.sql.types import StructType

from core.config import ConfigError, load_config
from core.crm_schema import columns_of, crm_metadata
from core.lake import Lake
from core.types import canonical_schema
from jobs import export

REPO = Path(__file__).resolve().parent.parent
D1, D2, D3 = date(2026, 11, 24), date(2026, 11, 25), date(2026, 11, 26)
UTC = timezone.utc
PROFILE_PII = {"email": "sha256", "first_name": "drop", "last_name": "drop", "phone": "drop", "address_line1": "drop"}


# ---- a small gold lake -------------------------------------------------------------------------------


def spark_schema(table: str) -> StructType:
    """The gold table's Spark schema, from the CRM table's column types."""
    return canonical_schema(crm_metadata(None).tables[table])


def segment_rows(as_of: date, run_id: str) -> list[dict]:
    common = {"as_of": as_of, "run_id": run_id, "changed_at": as_of}
    return [
        {
            **common,
            "customer_id": 1,
            "recency_days": 5,
            "frequency": 4,
            "monetary": Decimal("120.50"),
            "r_score": 5,
            "f_score": 5,
            "m_score": 4,
            "rfm_code": "554",
            "segment": "Champions",
            "previous_segment": "Loyal",
            "cluster_id": 2,
        },
        {
            **common,
            "customer_id": 2,
            "recency_days": 80,
            "frequency": 1,
            "monetary": Decimal("19.99"),
            "r_score": 2,
            "f_score": 1,
            "m_score": 1,
            "rfm_code": "211",
            "segment": "At risk",
            "previous_segment": None,
            "cluster_id": 0,
        },
        {
            **common,
            "customer_id": 3,
            "recency_days": None,
            "frequency": 0,
            "monetary": Decimal("0.00"),
            "r_score": None,
            "f_score": None,
            "m_score": None,
            "rfm_code": None,
            "segment": "Prospects",
            "previous_segment": None,
            "cluster_id": None,
        },
    ]


def score_rows(as_of: date, run_id: str) -> list[dict]:
    common = {"as_of": as_of, "run_id": run_id}
    return [
        {
            **common,
            "customer_id": 1,
            "churn_probability": 0.125,
            "churn_risk": "low",
            "churn_reasons": "recent purchase",
            "p_alive": 0.93,
            "expected_orders_30d": 0.4,
            "expected_orders_90d": 1.1,
            "expected_orders_365d": 3.9,
            "expected_order_value": Decimal("31.20"),
            "clv_12m": Decimal("36.51"),
            "clv_12m_low": Decimal("20.00"),
            "clv_12m_high": Decimal("55.75"),
            "next_order_date": date(2026, 12, 20),
            "churn_model_version": "crm_churn/1",
            "clv_model_run": "0f3a",
        },
        {
            **common,
            "customer_id": 2,
            "churn_probability": None,
            "churn_risk": None,
            "churn_reasons": None,
            "p_alive": None,
            "expected_orders_30d": None,
            "expected_orders_90d": None,
            "expected_orders_365d": None,
            "expected_order_value": None,
            "clv_12m": None,
            "clv_12m_low": None,
            "clv_12m_high": None,
            "next_order_date": None,
            "churn_model_version": None,
            "clv_model_run": None,
        },
    ]


def profile_rows(as_of: date, run_id: str) -> list[dict]:
    common = {
        "as_of": as_of,
        "run_id": run_id,
        "language": "sv",
        "city": "Lund",
        "postal_code": "22100",
        "country": "SE",
        "reviews": 0,
        "avg_rating": None,
        "inquiries": 1,
        "open_inquiries": 0,
        "open_cart_value": Decimal("0.00"),
        "cluster_description": None,
    }
    return [
        {
            **common,
            "customer_id": 1,
            "email": "  Anna.Berg@Example.COM ",
            "first_name": "Anna",
            "last_name": "Berg",
            "phone": "+46 70 123 45 67",
            "accepts_marketing": True,
            "address_line1": "Storgatan 1",
            "registered_at": datetime(2025, 3, 1, 9, 30, tzinfo=UTC),
            "first_order_at": datetime(2025, 3, 2, 12, 0, tzinfo=UTC),
            "last_order_at": datetime(2026, 11, 21, 18, 5, tzinfo=UTC),
            "orders": 4,
            "total_spent": Decimal("120.50"),
            "avg_order_value": Decimal("30.13"),
            "segment": "Champions",
            "cluster_id": 2,
        },
        {
            **common,
            "customer_id": 2,
            "email": None,
            "first_name": "Bo",
            "last_name": None,
            "phone": None,
            "accepts_marketing": False,
            "address_line1": None,
            "registered_at": datetime(2026, 1, 5, 8, 0, tzinfo=UTC),
            "first_order_at": None,
            "last_order_at": None,
            "orders": 0,
            "total_spent": Decimal("0.00"),
            "avg_order_value": None,
            "segment": "Prospects",
            "cluster_id": None,
        },
    ]


def campaign_rows(as_of: date, run_id: str) -> list[dict]:
    common = {"as_of": as_of, "run_id": run_id, "channel": "email"}
    return [
        {
            **common,
            "campaign": "win_back",
            "customer_id": 1,
            "audience_group": "treatment",
            "suppression_reason": None,
            "audience_rank": 1,
            "offer": "WINBACK15",
        },
        {
            **common,
            "campaign": "win_back",
            "customer_id": 2,
            "audience_group": "suppressed",
            "suppression_reason": "unsubscribed",
            "audience_rank": None,
            "offer": "WINBACK15",
        },
        {
            **common,
            "campaign": "vip",
            "customer_id": 3,
            "audience_group": "control",
            "suppression_reason": None,
            "audience_rank": 1,
            "offer": None,
        },
    ]


def offer_rows(as_of: date, run_id: str) -> list[dict]:
    return [
        {
            "customer_id": 1,
            "coupon": "summer_15pct",
            "expected_uplift": 0.08,
            "expected_incremental_revenue": Decimal("12.50"),
            "expected_cost": Decimal("3.10"),
            "uplift_model_run": "0f1e2d3c",
            "as_of": as_of,
            "run_id": run_id,
        }
    ]


def recommendation_rows(as_of: date, run_id: str) -> list[dict]:
    common = {"as_of": as_of, "run_id": run_id}
    return [
        {**common, "customer_id": 1, "rank": 1, "product_id": 7, "score": 0.61, "reason": "similar_customers"},
        {**common, "customer_id": 1, "rank": 2, "product_id": 9, "score": 0.42, "reason": "similar_customers"},
        {**common, "customer_id": 3, "rank": 1, "product_id": 7, "score": 0.05, "reason": "popular"},
    ]


def activity_rows(as_of: date, run_id: str) -> list[dict]:
    from features.activity import ACTIVITY_COLUMNS

    quiet = {name: 0 if kind == "bigint" else None for name, kind, _ in ACTIVITY_COLUMNS}
    return [
        {
            **quiet,
            "customer_id": 1,
            "views_7d": 4,
            "views_30d": 9,
            "visits_7d": 2,
            "visits_30d": 5,
            "browse_abandoned_products": 2,
            "browse_abandoned_product_ids": "7,9",
            "as_of": as_of,
            "run_id": run_id,
        },
        {**quiet, "customer_id": 3, "as_of": as_of, "run_id": run_id},
    ]


GOLD = {
    "customer_segments": segment_rows,
    "customer_scores": score_rows,
    "customer_profile": profile_rows,
    "campaign_audiences": campaign_rows,
    "coupon_offers": offer_rows,
    "recommendations": recommendation_rows,
    "customer_activity": activity_rows,
}
#: The datasets exported by default, as error messages list them.
DEFAULT_DATASETS = "customer_segments, customer_scores, campaign_audiences, coupon_offers, recommendations, customer_activity"


def write_gold(spark, settings, dates: list[date]) -> None:
    """Gold customer_segments, customer_scores and customer_profile for each date, one `as_of` partition each."""
    lake = Lake(spark, settings.lake_dir)
    for as_of in dates:
        for table, rows in GOLD.items():
            frame = spark.createDataFrame(rows(as_of, f"run-{as_of}"), spark_schema(table)).select(*columns_of(table))
            lake.replace_partition(frame, "gold", table, {"as_of": as_of})


def settings_in(folder: Path, **export_options):
    """The test configuration with its data root in `folder` and some `export.*` keys set (validated)."""
    environ = {**os.environ, "CRM_DATA_DIR": str(folder)}
    environ.update({f"CRM__EXPORT__{key.upper()}": json.dumps(value) for key, value in export_options.items()})
    return load_config(environ=environ)


# ---- reading an export as its consumer would ---------------------------------------------------------


def schema_of(folder: Path, name: str) -> dict:
    return json.loads((folder / export.SCHEMAS / f"{name}.schema.json").read_text(encoding="utf-8"))


def validator(schema: dict) -> Draft202012Validator:
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def csv_rows(path: Path, schema: dict) -> list[dict]:
    """A CSV file's rows as JSON values, typed by the row schema (an empty field is null)."""

    def typed(text: str, spec: dict):
        kinds = spec["type"] if isinstance(spec["type"], list) else [spec["type"]]
        if text == "":
            return None
        if "integer" in kinds:
            return int(text)
        if "number" in kinds:
            return float(text)
        if "boolean" in kinds:
            return {"true": True, "false": False}[text]
        return text

    with path.open(encoding="utf-8", newline="") as handle:
        return [{name: typed(text, schema["properties"][name]) for name, text in row.items()} for row in csv.DictReader(handle)]


def parquet_rows(path: Path) -> list[dict]:
    """A Parquet file's rows as JSON values: decimals as text with their scale, dates and timestamps ISO 8601."""

    def as_json(value):
        if isinstance(value, Decimal):
            return str(value)
        if isinstance(value, (date, datetime)):
            return value.isoformat()
        return value

    return [{name: as_json(value) for name, value in row.items()} for row in pq.read_table(path).to_pylist()]


def assert_complete(folder: Path) -> dict:
    """The folder has `_SUCCESS`, and every file but the manifest and `_SUCCESS` is listed with its checksum."""
    assert (folder / export.SUCCESS_MARKER).exists()
    manifest = json.loads((folder / export.MANIFEST).read_text(encoding="utf-8"))
    on_disk = {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}
    assert on_disk - {export.MANIFEST, export.SUCCESS_MARKER} == set(manifest["files"])
    for name, entry in manifest["files"].items():
        data = (folder / name).read_bytes()
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (entry["sha256"], entry["bytes"]), name
    return manifest


# ---- tests -------------------------------------------------------------------------------------------


def test_an_export_writes_csv_and_parquet_with_the_same_rows_a_valid_manifest_and_the_pii_policy(spark, tmp_path):
    settings = settings_in(tmp_path, datasets=list(GOLD), pii={"customer_profile": PROFILE_PII})
    write_gold(spark, settings, [D1])

    folder = export.run(D1, settings, "run-1")

    assert folder == settings.exports_dir / D1.isoformat()
    assert (settings.exports_dir / "latest").resolve() == folder.resolve()
    manifest = assert_complete(folder)
    validator(json.loads((folder / export.MANIFEST_SCHEMA).read_text(encoding="utf-8"))).validate(manifest)
    assert manifest["schema_version"] == export.SCHEMA_VERSION == "3.3"
    assert (manifest["run_id"], manifest["run_date"]) == ("run-1", D1.isoformat())
    assert sorted(manifest["files"]) == sorted(
        [export.MANIFEST_SCHEMA]
        + [f"{dataset}.{kind}" for dataset in GOLD for kind in ("csv", "parquet")]
        + [f"campaigns/{campaign}.{kind}" for campaign in ("vip", "win_back") for kind in ("csv", "parquet")]
        + [f"schemas/{dataset}.schema.json" for dataset in GOLD]
    )
    # Per campaign its treatment group alone, the list a marketing tool loads (vip has only a control).
    for campaign, customers in (("win_back", [1]), ("vip", [])):
        for kind in ("csv", "parquet"):
            entry = manifest["files"][f"campaigns/{campaign}.{kind}"]
            assert (entry["campaign"], entry["dataset"], entry["rows"]) == (campaign, "campaign_audiences", len(customers))
        rows = parquet_rows(folder / "campaigns" / f"{campaign}.parquet")
        assert [row["customer_id"] for row in rows] == customers
        assert csv_rows(folder / "campaigns" / f"{campaign}.csv", schema_of(folder, "campaign_audiences")) == rows

    for dataset, rows in GOLD.items():
        schema = schema_of(folder, dataset)
        policy = PROFILE_PII if dataset == "customer_profile" else {}
        columns = [name for name in columns_of(dataset) if policy.get(name) != "drop"]
        from_csv = csv_rows(folder / f"{dataset}.csv", schema)
        from_parquet = parquet_rows(folder / f"{dataset}.parquet")
        assert from_csv == from_parquet
        assert len(from_csv) == len(rows(D1, "run-1"))
        for row in from_csv:
            validator(schema).validate(row)
        for kind in ("csv", "parquet"):
            entry = manifest["files"][f"{dataset}.{kind}"]
            assert entry["format"] == kind and entry["dataset"] == dataset and entry["pii"] == policy
            assert entry["columns"] == columns and entry["rows"] == len(from_csv)
            assert entry["schema"] == f"schemas/{dataset}.schema.json"
        assert list(schema["properties"]) == columns

    segments = pq.read_table(folder / "customer_segments.parquet")
    assert str(segments.schema.field("monetary").type) == "decimal128(18, 2)"
    assert str(segments.schema.field("as_of").type) == "date32[day]"
    assert parquet_rows(folder / "customer_segments.parquet")[0]["monetary"] == "120.50"

    profile = {row["customer_id"]: row for row in parquet_rows(folder / "customer_profile.parquet")}
    assert profile[1]["email"] == hashlib.sha256(b"anna.berg@example.com").hexdigest()
    assert profile[2]["email"] is None
    assert not set(profile[1]) & {"first_name", "last_name", "phone", "address_line1"}
    assert profile[1]["accepts_marketing"] is True and profile[1]["registered_at"] == "2025-03-01T09:30:00+00:00"
    assert b"Anna" not in (folder / "customer_profile.csv").read_bytes()
    # The schema refuses a plain address where the hash belongs.
    with pytest.raises(ValidationError, match="does not match"):
        validator(schema_of(folder, "customer_profile")).validate({**profile[1], "email": "anna.berg@example.com"})


#: The child export: it writes the first data file of D2's export, says so, and hangs until it is killed.
KILLED_EXPORT = textwrap.dedent("""
    import os, sys, time
    from datetime import date
    from pathlib import Path

    from jobs import export
    from core.config import load_config

    marker, run_date = Path(sys.argv[1]), date.fromisoformat(sys.argv[2])
    write_csv = export.write_csv

    def write_csv_then_hang(table, path):
        entry = write_csv(table, path)
        marker.with_suffix(".tmp").write_text(str(path))
        os.replace(marker.with_suffix(".tmp"), marker)  # the test sees the marker whole or not at all
        time.sleep(600)
        return entry

    export.write_csv = write_csv_then_hang
    export.run(run_date, load_config(), "run-killed")
""")


def test_an_export_killed_midway_leaves_latest_on_the_previous_run_and_a_rerun_completes(spark, tmp_path):
    settings = settings_in(tmp_path / "data")
    write_gold(spark, settings, [D1, D2])
    first = export.run(D1, settings, "run-1")
    before = {path: path.read_bytes() for path in first.rglob("*") if path.is_file()}

    marker = tmp_path / "first-file-written"
    with (tmp_path / "child.log").open("wb") as log:
        child = subprocess.Popen(
            [sys.executable, "-c", KILLED_EXPORT, str(marker), D2.isoformat()],
            cwd=REPO,
            env={**os.environ, "CRM_DATA_DIR": str(settings.data_dir)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 600
            while not marker.exists():
                if child.poll() is not None:
                    pytest.fail(f"the export ended before it was killed:\n{(tmp_path / 'child.log').read_text()[-4000:]}")
                assert time.monotonic() < deadline, "the child export wrote no file in 10 minutes"
                time.sleep(0.2)
        finally:
            child.send_signal(signal.SIGKILL)  # by its pid; a no-op if it already ended
            child.wait()
    assert child.returncode == -signal.SIGKILL

    exports = settings.exports_dir
    staging = Path(marker.read_text()).parent
    assert staging.parent == exports and staging.name.startswith(f".tmp-{D2.isoformat()}-") and staging.exists()
    assert (exports / "latest").resolve() == first.resolve()
    assert not (exports / D2.isoformat()).exists()
    assert {path: path.read_bytes() for path in first.rglob("*") if path.is_file()} == before
    assert_complete(first)

    second = export.run(D2, settings, "run-2")

    assert (exports / "latest").resolve() == second.resolve() == (exports / D2.isoformat()).resolve()
    assert json.loads((second / export.MANIFEST).read_text())["run_id"] == "run-2"
    assert_complete(second)
    assert not staging.exists()
    assert sorted(path.name for path in exports.iterdir()) == [D1.isoformat(), D2.isoformat(), "latest"]


def test_retention_keeps_the_newest_runs_and_removes_old_leftovers_only(spark, tmp_path):
    settings = settings_in(tmp_path, keep_runs=2)
    write_gold(spark, settings, [D1, D2, D3])
    exports = settings.exports_dir
    exports.mkdir(parents=True)
    stale, young = exports / ".tmp-2026-11-01-0badf00d", exports / ".tmp-2026-11-30-5ca1ab1e"
    stale.mkdir()
    young.mkdir()
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))

    for run_date in (D1, D2, D3):
        export.run(run_date, settings, f"run-{run_date}")

    assert sorted(path.name for path in exports.iterdir()) == [young.name, D2.isoformat(), D3.isoformat(), "latest"]
    assert (exports / "latest").resolve() == (exports / D3.isoformat()).resolve()

    # A backfill of an older date is kept although it is not among the newest two: it is what the run produced.
    export.run(D1, settings, "run-backfill")
    assert sorted(path.name for path in exports.iterdir() if not path.name.startswith(".")) == [
        D1.isoformat(),
        D2.isoformat(),
        D3.isoformat(),
        "latest",
    ]
    assert (exports / "latest").resolve() == (exports / D3.isoformat()).resolve()


@pytest.mark.parametrize(
    ("pii", "message"),
    [
        pytest.param(
            {"customer_segments": {"emial": "sha256"}},
            r"export\.pii\.customer_segments\.emial: unknown column; expected a column of customer_segments: "
            r"customer_id, ",
            id="unknown-column",
        ),
        pytest.param(
            {"customer_segments": {"segment": "md5"}},
            r"export\.pii\.customer_segments\.segment: unknown policy 'md5'; expected plain, sha256 or drop",
            id="unknown-policy",
        ),
        pytest.param(
            {"customer_profile": {"email": "sha256"}},
            r"export\.pii\.customer_profile: unknown dataset \(not in export\.datasets\); expected one of "
            r"customer_segments, customer_scores",
            id="dataset-not-exported",
        ),
        pytest.param(
            {"customer_segments": {"customer_id": "sha256"}},
            r"export\.pii\.customer_segments\.customer_id: sha256 hashes text, but customer_id is BIGINT; "
            r"expected plain or drop",
            id="hash-of-a-number",
        ),
    ],
)
def test_a_wrong_pii_policy_is_a_configuration_error_naming_the_key(pii, message):
    with pytest.raises(ConfigError, match=r"CRM__EXPORT__PII: export\.pii: .*" + message):
        load_config(environ={"CRM__EXPORT__PII": json.dumps(pii)})


def test_keep_runs_below_one_and_an_unknown_dataset_are_configuration_errors():
    with pytest.raises(ConfigError, match=r"CRM__EXPORT__KEEP_RUNS: export\.keep_runs: .*greater than or equal to 1"):
        load_config(environ={"CRM__EXPORT__KEEP_RUNS": "0"})
    with pytest.raises(ConfigError, match=r"export\.datasets: .*unknown dataset\(s\) \['customer_segmnets'\]"):
        load_config(environ={"CRM__EXPORT__DATASETS": "[customer_segmnets]"})


# ---- crm export: a run date again from gold ----------------------------------------------------------


def crm_export(monkeypatch, folder: Path, *args: str, **export_options):
    """`crm export ARGS` in this process (click's test runner), with the data root in `folder` and some
    `export.*` keys set through the environment, as an operator would."""
    from click.testing import CliRunner

    from cli.main import main

    monkeypatch.setenv("CRM_DATA_DIR", str(folder))
    for key, value in export_options.items():
        monkeypatch.setenv(f"CRM__EXPORT__{key.upper()}", json.dumps(value))
    return CliRunner().invoke(main, ["export", *args])


def manifest_of(folder: Path) -> dict:
    return json.loads((folder / export.MANIFEST).read_text(encoding="utf-8"))


def passed_the_gate(settings, *run_dates: date) -> None:
    """What the night's validate_gold task writes to the run log when the gold rows of `run-<date>` pass."""
    from core import runlog

    for day in run_dates:
        attempt = runlog.Attempt(f"run-{day}", export.QUALITY_GATE, 1, "crm_nightly", day)
        now = datetime.now(timezone.utc)
        runlog.record(settings, attempt, "success", now, now, summary={"passed": True})


def test_crm_export_writes_a_date_again_from_gold_with_a_changed_pii_policy_and_the_run_id_of_its_night(spark, tmp_path, monkeypatch):
    datasets = ["customer_segments", "customer_scores", "customer_profile"]
    write_gold(spark, settings_in(tmp_path), [D1, D2])
    passed_the_gate(settings_in(tmp_path), D1, D2)
    exports = settings_in(tmp_path).exports_dir
    names_plain = {**PROFILE_PII, "first_name": "plain", "last_name": "plain", "phone": "plain", "address_line1": "plain"}
    first = crm_export(monkeypatch, tmp_path, "--date", D2.isoformat(), datasets=datasets, pii={"customer_profile": names_plain})
    assert first.exit_code == 0, first.output
    assert first.stdout.strip() == str(exports / D2.isoformat())
    assert b"Anna" in (exports / D2.isoformat() / "customer_profile.csv").read_bytes()

    # The operator decides that names and phone numbers stay out of the files, and exports the latest date again.
    again = crm_export(monkeypatch, tmp_path, pii={"customer_profile": PROFILE_PII})

    assert again.exit_code == 0, again.output
    folder = exports / D2.isoformat()
    assert again.stdout.strip() == str(folder)
    manifest = assert_complete(folder)
    validator(json.loads((folder / export.MANIFEST_SCHEMA).read_text(encoding="utf-8"))).validate(manifest)
    assert (manifest["run_id"], manifest["run_date"]) == (f"run-{D2}", D2.isoformat())  # gold's, not a new one
    assert manifest["files"]["customer_profile.csv"]["pii"] == PROFILE_PII
    assert b"Anna" not in (folder / "customer_profile.csv").read_bytes()
    assert not {"first_name", "phone"} & set(parquet_rows(folder / "customer_profile.parquet")[0])
    assert (exports / "latest").resolve() == folder.resolve()

    # An older date gets the run id of its own night; `latest` stays on the newest date.
    older = crm_export(monkeypatch, tmp_path, "--date", D1.isoformat())
    assert older.exit_code == 0, older.output
    assert manifest_of(exports / D1.isoformat())["run_id"] == f"run-{D1}"
    assert (exports / "latest").resolve() == folder.resolve()
    assert sorted(path.name for path in exports.iterdir()) == [D1.isoformat(), D2.isoformat(), "latest"]


def test_crm_export_without_gold_rows_for_the_date_fails_naming_it_and_the_night_to_run(spark, tmp_path, monkeypatch):
    empty = crm_export(monkeypatch, tmp_path)
    assert empty.exit_code == 1
    assert f"error: gold holds no run date of {DEFAULT_DATASETS} (export.datasets)" in empty.stderr
    assert "crm run --date YYYY-MM-DD" in empty.stderr

    settings = settings_in(tmp_path)
    write_gold(spark, settings, [D1])
    ungated = crm_export(monkeypatch, tmp_path, "--date", D1.isoformat())
    assert ungated.exit_code == 1
    assert (
        f"error: gold rows for {D1} come from run run-{D1}, whose quality gate (validate_gold) the run log "
        f"(crm status) does not record as passed: they are not exported; run the night again: "
        f"crm run --date {D1}"
    ) in ungated.stderr
    passed_the_gate(settings, D1)
    missing = crm_export(monkeypatch, tmp_path, "--date", D3.isoformat())
    assert missing.exit_code == 1
    assert (f"error: gold holds no rows of {DEFAULT_DATASETS} for {D3}; run the night for it first: crm run --date {D3}") in missing.stderr
    assert "Traceback" not in missing.output

    # A later night for D1 that rewrote the segments but failed before the scores: the rows of two runs.
    segments = spark.createDataFrame(segment_rows(D1, "run-unfinished"), spark_schema("customer_segments"))
    Lake(spark, settings.lake_dir).replace_partition(
        segments.select(*columns_of("customer_segments")), "gold", "customer_segments", {"as_of": D1}
    )
    mixed = crm_export(monkeypatch, tmp_path, "--date", D1.isoformat())
    assert mixed.exit_code == 1
    assert (
        f"gold rows for {D1} come from 2 runs (customer_segments: run-unfinished; customer_scores: run-{D1}; "
        f"campaign_audiences: run-{D1}; coupon_offers: run-{D1}; recommendations: run-{D1}; "
        f"customer_activity: run-{D1}): "
        f"a night for {D1} did not finish; run it again: crm run --date {D1}"
    ) in mixed.stderr
    assert not settings.exports_dir.exists()
