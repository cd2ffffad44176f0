"""The nightly DAG end to end, on small generated shops, the way users and the scheduler run it.

Three runs of the same 500-customer shop (same seed) go at once, each in its own data root:
- SQLite shop, every task in its own process (`airflow tasks test`), as under the scheduler: data passes
  between tasks only through the lake;
- PostgreSQL shop, `crm run --date` (Airflow's dag.test), CRM tables in PostgreSQL schema `crm`;
- MariaDB shop, `crm run --date`, CRM tables in PostgreSQL too.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.parquet as pq
import pytest
from sqlalchemy import create_engine, text

from conftest import REPO, night_started_with_the_session, nightly_dag, run_crm, session_environ, session_night
from core.private import PRIVATE_UMASK

if TYPE_CHECKING:
    from datetime import datetime

    import pandas as pd
    from pyspark.sql import DataFrame

pytestmark = pytest.mark.e2e

CUSTOMERS = 500
#: Longest a night (or one task of it) may take in these tests before it counts as hung.
NIGHT_TIMEOUT_S = 3600
SEED = 7
RUN_DATE = date(2026, 11, 26)


def night_tasks() -> tuple[str, ...]:
    """The DAG's task ids in an order that keeps its dependencies, without the Spark server's setup and teardown."""
    return tuple(task.task_id for task in nightly_dag().task_group.topological_sort() if task.task_id not in ("spark_up", "spark_down"))


def crm_env(data_dir: Path, shop_url: str | None = None, db_url: str | None = None) -> dict[str, str]:
    env = {"CRM_ENV": "test", "CRM_DATA_DIR": str(data_dir)}
    if shop_url:
        env["CRM_SHOP_URL"] = shop_url
    if db_url:
        env["CRM_DB_URL"] = db_url
    return env


def generate(env: dict[str, str]) -> None:
    run_crm("generate-shop", "--customers", str(CUSTOMERS), "--seed", str(SEED), "--end-date", RUN_DATE.isoformat(), env=env)


def run_tasks_in_separate_processes(env: dict[str, str], log: Path) -> None:
    """Each task of the nightly DAG in a process of its own, in DAG order (as the scheduler would)."""
    from cli.orchestrate import airflow_environment, logical_date_for
    from core.config import load_config

    # Without the session's shared server: this night starts and stops its own, as the DAG does in production.
    full_env = {key: value for key, value in {**session_environ(), **env}.items() if key != "CRM__SPARK__REMOTE"}
    settings = load_config(environ=full_env)
    airflow_env = {**full_env, **airflow_environment(settings), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    Path(airflow_env["AIRFLOW_HOME"]).mkdir(mode=0o700, parents=True, exist_ok=True)
    with log.open("w") as out:
        # Airflow's own commands run with the umask `eval "$(crm airflow-env)"` sets in the shell that starts it.
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            env=airflow_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=True,
            cwd=REPO,
            umask=PRIVATE_UMASK,
        )

        def run_task(task: str) -> None:
            result = subprocess.run(
                [sys.executable, "-m", "airflow", "tasks", "test", "crm_nightly", task, logical_date_for(RUN_DATE).isoformat()],
                env=airflow_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                timeout=NIGHT_TIMEOUT_S,
                umask=PRIVATE_UMASK,
            )
            if result.returncode != 0:
                raise AssertionError(f"task {task} failed; see {log}")

        # The night's Spark server: started by the setup task, used by every task's own process, stopped by
        # the teardown task whatever happened.
        run_task("spark_up")
        try:
            for task in night_tasks():
                run_task(task)
        finally:
            run_task("spark_down")


@night_started_with_the_session("nightly_runs")
def run_the_three_nights(tmp_path_factory, postgres, mariadb) -> dict:
    """Run the three nightlies concurrently; returns their data roots and URLs."""
    base = tmp_path_factory.mktemp("nightly")
    postgres.create_database("shop")
    postgres.create_database("crm")
    mariadb.create_database("shop")
    runs = {
        "sqlite": crm_env(base / "sqlite"),
        "postgresql": crm_env(base / "postgresql", postgres.url("shop"), postgres.url("crm")),
        "mariadb": crm_env(base / "mariadb", mariadb.url("shop"), postgres.url("crm")),
    }
    # The PostgreSQL and MariaDB runs share one CRM database: give each its own schema.
    runs["postgresql"]["CRM__CRM__SCHEMA_NAME"] = "crm"
    runs["mariadb"]["CRM__CRM__SCHEMA_NAME"] = "crm_from_mariadb"
    # Browsing events: NDJSON files in the SQLite run's landing folder, the shop's events table in the others.
    for kind in ("postgresql", "mariadb"):
        runs[kind].update({"CRM__GENERATOR__EVENTS": "table", "CRM__EVENTS__SOURCE": "table"})
    errors: dict[str, BaseException] = {}

    def work(kind: str) -> None:
        try:
            generate(runs[kind])
            if kind == "sqlite":
                run_tasks_in_separate_processes(runs[kind], base / "sqlite-tasks.log")
            else:
                # Three nights share two cores here: a night takes minutes, and far longer on a loaded machine.
                result = run_crm("run", "--date", RUN_DATE.isoformat(), env=runs[kind], timeout=NIGHT_TIMEOUT_S)
                (base / f"{kind}-summary.txt").write_text(result.stdout)
        except BaseException as error:  # reported below, per run
            errors[kind] = error

    threads = [threading.Thread(target=work, args=(kind,)) for kind in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, "\n\n".join(f"{kind}: {error}" for kind, error in errors.items())
    return {"base": base, **runs}


@pytest.fixture(scope="module")
def nightly_runs(request):
    """The three nightlies' data roots and URLs (started with the session: tests/conftest.py)."""
    return session_night(request, "nightly_runs")


def truth(run: dict[str, str]) -> dict:
    return json.loads((Path(run["CRM_DATA_DIR"]) / "truth" / "summary.json").read_text())


def crm_rows(run: dict[str, str], table: str, order_by: str = "customer_id") -> list[dict]:
    url = run.get("CRM_DB_URL") or f"sqlite:///{run['CRM_DATA_DIR']}/crm.sqlite"
    table = f"{run['CRM__CRM__SCHEMA_NAME']}.{table}" if "CRM__CRM__SCHEMA_NAME" in run else table
    with create_engine(url).connect() as connection:
        rows = connection.execute(text(f"SELECT * FROM {table} ORDER BY {order_by}")).mappings().all()
    return [dict(row) for row in rows]


def crm_segments(run: dict[str, str]) -> list[dict]:
    return crm_rows(run, "customer_segments")


def segment_counts(rows: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["segment"]] = counts.get(row["segment"], 0) + 1
    return counts


def test_every_customer_is_published_with_a_segment_and_the_run_id(nightly_runs):
    rows = crm_segments(nightly_runs["sqlite"])
    assert len(rows) == CUSTOMERS
    assert all(row["segment"] for row in rows)
    assert {row["as_of"] for row in rows} in ({RUN_DATE}, {RUN_DATE.isoformat()})
    assert len({row["run_id"] for row in rows}) == 1
    buyers = [row for row in rows if row["frequency"] > 0]
    assert buyers and all(1 <= row["r_score"] <= 5 and row["rfm_code"] for row in buyers)
    assert all(row["segment"] == "Prospects" for row in rows if row["frequency"] == 0)


def shop_emails(run: dict[str, str]) -> list[str]:
    """Every e-mail address of the run's shop customers."""
    url = run.get("CRM_SHOP_URL") or f"sqlite:///{run['CRM_DATA_DIR']}/shop.sqlite"
    with create_engine(url).connect() as connection:
        return [email for (email,) in connection.execute(text("SELECT email FROM customers WHERE email <> ''"))]


def files_holding(root: Path, texts: list[str]) -> list[str]:
    """The files under `root` that hold any of `texts`: `grep -r` for plain and SQLite files; Parquet files
    (compressed, so grep would miss a value) read as data."""
    patterns = root.parent / f"{root.name}-patterns.txt"
    patterns.write_text("\n".join(texts) + "\n")
    grep = subprocess.run(["grep", "-rlaF", "-f", str(patterns), str(root)], capture_output=True, text=True)
    assert grep.returncode in (0, 1), grep.stderr
    found = set(grep.stdout.split())
    for path in root.rglob("*.parquet"):
        content = str(pq.read_table(path).to_pylist())
        if any(text in content for text in texts):
            found.add(str(path))
    return sorted(str(Path(path).relative_to(root)) for path in found)


def test_the_data_root_is_private_and_customers_data_is_only_in_the_lake_data_and_the_databases(nightly_runs):
    for kind in ("sqlite", "postgresql", "mariadb"):
        root = Path(nightly_runs[kind]["CRM_DATA_DIR"])
        # Symbolic links (exports/latest) have no mode of their own.
        shared = subprocess.run(["find", str(root), "-perm", "/go=rwx", "!", "-type", "l"], capture_output=True, text=True, check=True)
        assert shared.stdout == "", f"{kind}: readable or writable by group or others:\n{shared.stdout[:3000]}"
        emails = shop_emails(nightly_runs[kind])
        assert len(emails) > CUSTOMERS * 0.9
        holding = files_holding(root, emails)
        # Lake data files, the shop itself (a SQLite shop in the data root), the CRM database, the generator's
        # ground truth of the demo shop: where customers' data is meant to be. Nowhere else: no Delta log.
        allowed = re.compile(r"lake/(bronze|silver|gold)/(?!.*_delta_log/).*\.parquet|shop\.sqlite|crm\.sqlite|truth/.*")
        assert [path for path in holding if not allowed.fullmatch(path)] == [], kind
        assert any(path.startswith("lake/gold/customer_profile/") for path in holding), f"{kind}: the test found no e-mail at all"


def test_the_same_seed_gives_the_same_segments_from_sqlite_postgresql_and_mariadb(nightly_runs):
    sqlite_rows = crm_segments(nightly_runs["sqlite"])
    expected = [(row["customer_id"], row["rfm_code"], row["segment"]) for row in sqlite_rows]
    for kind in ("postgresql", "mariadb"):
        rows = crm_segments(nightly_runs[kind])
        assert segment_counts(rows) == segment_counts(sqlite_rows), kind
        assert [(row["customer_id"], row["rfm_code"], row["segment"]) for row in rows] == expected, kind


def test_every_planted_bad_row_is_quarantined_with_its_rule(nightly_runs, spark):
    from pyspark.sql import functions as F

    from core.lake import Lake

    for kind in ("sqlite", "mariadb"):
        run = nightly_runs[kind]
        lake = Lake(spark, Path(run["CRM_DATA_DIR"]) / "lake")
        found: dict[str, dict[str, int]] = {}
        for layer, name in lake.tables():
            if layer == "silver" and name.startswith("_quarantine/"):
                table = name.split("/", 1)[1]
                for row in lake.read(layer, name).where(F.col("run_date") == RUN_DATE).groupBy("rule").count().collect():
                    found.setdefault(table, {})[row["rule"]] = row["count"]
        events = found.pop("events")
        assert found == truth(run)["bad_rows"], kind
        assert events == {"unknown_event_type": truth(run)["events"]["bad"]["unknown_event_type"]}, kind


def test_browsing_events_land_once_and_each_session_is_attributed_to_whoever_logged_in(nightly_runs, spark):
    """Event files (the SQLite run) and the shop's events table (PostgreSQL, MariaDB), against the generator's
    truth: every good event once in silver (the re-sent copies dropped, the unknown types quarantined),
    every event of a session that logged in attributed to its owner, none of a session that never did."""
    import pyarrow.parquet as pq
    from pyspark.sql import functions as F

    from core.lake import Lake

    for kind in ("sqlite", "postgresql", "mariadb"):
        run = nightly_runs[kind]
        facts = truth(run)["events"]
        assert facts["output"] == ("files" if kind == "sqlite" else "table")
        silver = Lake(spark, Path(run["CRM_DATA_DIR"]) / "lake").read("silver", "events")
        good = facts["written"] - facts["duplicates"] - facts["bad"]["unknown_event_type"]
        assert silver.count() == silver.select("event_id").distinct().count() == good, kind
        sessions = pq.read_table(Path(run["CRM_DATA_DIR"]) / "truth" / "event_sessions.parquet").to_pandas()
        owners = spark.createDataFrame(
            sessions[["session_id", "customer_id", "logged_in"]].rename(columns={"customer_id": "owner"}).astype({"owner": "float64"})
        )
        events = silver.join(owners, "session_id")
        assert events.count() == good, kind  # every session is in the truth
        logged_in = events.where("logged_in")
        assert logged_in.where(F.col("customer_id").isNull() | (F.col("customer_id") != F.col("owner"))).count() == 0
        stitched = logged_in.where(F.col("identified_by") == "session").count()
        assert 0 < stitched <= facts["anonymous_before_login"], kind
        assert events.where(~F.col("logged_in") & F.col("customer_id").isNotNull()).count() == 0, kind
    activity = crm_rows(nightly_runs["sqlite"], "customer_activity")
    assert len(activity) == CUSTOMERS and sum(row["visits_30d"] > 0 for row in activity) > CUSTOMERS / 4
    assert all(row["views_30d"] >= row["views_7d"] >= 0 for row in activity)


def test_silver_holds_every_good_row_once(nightly_runs, spark):
    from core.lake import Lake

    run = nightly_runs["sqlite"]
    lake = Lake(spark, Path(run["CRM_DATA_DIR"]) / "lake")
    facts = truth(run)
    for table, rows in facts["rows"].items():
        bad = sum(facts["bad_rows"].get(table, {}).values())
        silver = lake.read("silver", table)
        assert silver.count() == rows - bad, table
        assert silver.select("id").distinct().count() == rows - bad, table


def test_every_lake_table_counts_the_same_in_spark_and_delta_rs(nightly_runs, spark):
    import pyarrow.parquet as pq
    from deltalake import DeltaTable

    from core.crm_schema import crm_metadata
    from core.lake import Lake

    run = nightly_runs["sqlite"]
    lake = Lake(spark, Path(run["CRM_DATA_DIR"]) / "lake")
    tables = lake.tables()
    gold = {name for layer, name in tables if layer == "gold"}
    assert gold == {"customer_features", *crm_metadata(None).tables}, "a gold table per CRM table, and the features"
    # bronze + watermarks + events + landing-file ledger, silver + applied + parents checked + events + event
    # batches, quarantine (of events too), gold
    assert len(tables) == 14 + 15 + 12 + len(gold)
    for layer, name in tables:
        delta_rs = DeltaTable(lake.path(layer, name))
        # Files of the current snapshot read by pyarrow (delta-rs' own to_pandas can abort at exit).
        rows_by_files = sum(pq.ParquetFile(uri.removeprefix("file://")).metadata.num_rows for uri in delta_rs.file_uris())
        assert rows_by_files == lake.read(layer, name).count(), f"{layer}/{name}"


def test_export_matches_its_manifest_and_latest_points_at_it(nightly_runs):
    exports = Path(nightly_runs["sqlite"]["CRM_DATA_DIR"]) / "exports"
    folder = exports / RUN_DATE.isoformat()
    assert (folder / "_SUCCESS").exists()
    assert (exports / "latest").resolve() == folder.resolve()
    manifest = json.loads((folder / "manifest.json").read_text())
    import pyarrow.parquet as pq
    from jsonschema import Draft202012Validator

    from core.crm_schema import columns_of
    from jobs.export import SCHEMA_VERSION

    assert manifest["run_date"] == RUN_DATE.isoformat() and manifest["schema_version"] == SCHEMA_VERSION
    datasets = ("customer_segments", "customer_scores", "campaign_audiences", "coupon_offers", "recommendations", "customer_activity")
    campaigns = sorted({row["campaign"] for row in crm_rows(nightly_runs["sqlite"], "campaign_audiences", "campaign")})
    assert campaigns, "no campaign qualified anyone on the test shop"
    assert sorted(manifest["files"]) == sorted(
        [f"{dataset}.{kind}" for dataset in datasets for kind in ("csv", "parquet")]
        + [f"campaigns/{campaign}.{kind}" for campaign in campaigns for kind in ("csv", "parquet")]
        + [f"schemas/{name}.schema.json" for name in ("manifest", *datasets)]
    )
    on_disk = {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}
    assert on_disk == {*manifest["files"], "manifest.json", "_SUCCESS"}
    for name, entry in manifest["files"].items():
        data = (folder / name).read_bytes()
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (entry["sha256"], entry["bytes"]), name
    Draft202012Validator(json.loads((folder / "schemas/manifest.schema.json").read_text())).validate(manifest)
    for dataset, rows in (("customer_segments", CUSTOMERS), ("customer_scores", len(crm_rows(nightly_runs["sqlite"], "customer_scores")))):
        for kind in ("csv", "parquet"):
            entry = manifest["files"][f"{dataset}.{kind}"]
            assert (entry["format"], entry["dataset"], entry["pii"]) == (kind, dataset, {})
            assert entry["columns"] == columns_of(dataset) and entry["rows"] == rows
            assert entry["schema"] == f"schemas/{dataset}.schema.json"
        assert (folder / f"{dataset}.csv").read_text().count("\n") == rows + 1
        assert pq.read_table(folder / f"{dataset}.parquet").column_names == columns_of(dataset)
        assert pq.read_metadata(folder / f"{dataset}.parquet").num_rows == rows
    assert not [path for path in exports.iterdir() if path.name.startswith(".")]


def test_each_campaign_goes_from_its_yaml_to_its_export_file(nightly_runs, spark):
    """The shipped conf/campaigns/*.yaml, through the night: every customer the audience condition selects
    is in the campaign's rows (contacted, held out or suppressed with a reason), no one else; its export
    file holds exactly the treatment group; the control group is about its share."""
    import csv as csv_module

    from core.lake import Lake
    from jobs.campaigns import customer_view
    from models.campaigns import load_campaigns

    run = nightly_runs["sqlite"]
    settings = settings_of(run)
    view = customer_view(Lake(spark, settings.lake_dir), RUN_DATE)
    rows = crm_rows(run, "campaign_audiences", "campaign, customer_id")
    folder = settings.exports_dir / RUN_DATE.isoformat()
    contacted: set[int] = set()
    for campaign in load_campaigns(settings.conf_dir / settings.campaigns.folder):
        mine = [row for row in rows if row["campaign"] == campaign.name]
        selected = {row.customer_id for row in view.where(campaign.audience).select("customer_id").collect()}
        assert {row["customer_id"] for row in mine} == selected, campaign.name
        assert all((row["suppression_reason"] is None) == (row["audience_group"] != "suppressed") for row in mine)
        treatment = {row["customer_id"] for row in mine if row["audience_group"] == "treatment"}
        assert not treatment & contacted, f"{campaign.name}: a customer in two campaigns on one night"
        contacted |= treatment | {row["customer_id"] for row in mine if row["audience_group"] == "control"}
        if not mine:
            continue
        with (folder / "campaigns" / f"{campaign.name}.csv").open(encoding="utf-8", newline="") as handle:
            exported = list(csv_module.DictReader(handle))
        assert {int(row["customer_id"]) for row in exported} == treatment, campaign.name
        assert {(row["audience_group"], row["channel"], row["offer"]) for row in exported} <= {
            ("treatment", campaign.channel, campaign.offer or "")
        }
    assert {row["audience_group"] for row in rows} >= {"treatment", "suppressed"}


def test_crm_campaigns_checks_the_files_and_shows_whom_each_selects(nightly_runs, tmp_path):
    """`crm campaigns` against the night's customer view: one line per shipped campaign with its count; a
    file with a misspelt field stops it, naming the file and the field."""
    from models.campaigns import load_campaigns

    run = nightly_runs["sqlite"]
    result = run_crm("campaigns", "--date", RUN_DATE.isoformat(), env=run)
    names = [campaign.name for campaign in load_campaigns(REPO / "conf" / "campaigns")]
    assert f"{len(names)} campaign(s)" in result.stdout and f"({CUSTOMERS:,} customers)" in result.stdout
    assert all(any(name in line and " selected" in line for line in result.stdout.splitlines()) for name in names)

    (tmp_path / "win_back.yaml").write_text("description: d\naudiance: segment = 'Lost'\n")
    bad = run_crm("campaigns", env={**run, "CRM__CAMPAIGNS__FOLDER": str(tmp_path)}, check=False)
    assert bad.returncode == 1
    assert "win_back.yaml" in bad.stderr and "audiance" in bad.stderr and "Traceback" not in bad.stderr


def test_a_rerun_of_the_same_date_gives_the_same_lake_crm_rows_and_export(nightly_runs, spark, monkeypatch):
    """Every task of the night again, for the same date: same rows everywhere, nothing appended twice.

    The DAG's own task functions run here, in this process, on the test session's Spark server.
    """
    from types import SimpleNamespace

    from core.config import load_config
    from core.lake import Lake

    run = nightly_runs["postgresql"]
    settings = load_config(environ={**os.environ, **run})
    lake = Lake(spark, settings.lake_dir)
    export_file = settings.exports_dir / RUN_DATE.isoformat() / "customer_segments.csv"
    history = {"customer_segment_history": "customer_id, valid_from", "segment_summary_history": "as_of, segment"}
    before = {
        "crm": crm_segments(run),
        "scores": crm_rows(run, "customer_scores"),
        "export": export_file.read_text(),
        "lake": {table: lake.read(*table).count() for table in lake.tables()},
        "history": {table: crm_rows(run, table, order) for table, order in history.items()},
        **{table: crm_rows(run, table, order) for table, order in TARGETING_TABLES.items()},
    }

    for name, value in run.items():
        monkeypatch.setenv(name, value)
    night = nightly_dag()
    for task_id in night_tasks():
        context = {
            "run_id": "rerun-1",
            "dag_run": SimpleNamespace(conf={"run_date": RUN_DATE.isoformat()}),
            "ti": SimpleNamespace(task_id=task_id, try_number=1, dag_id=night.dag_id),
        }
        night.get_task(task_id).python_callable(**context)

    after_crm = crm_segments(run)
    assert {row["run_id"] for row in after_crm} == {"rerun-1"}
    # Which run wrote a row (run_id, and the MLflow run the uplift models were logged in) is the rerun's own.
    provenance = ("run_id", "uplift_model_run")
    without_run_id = lambda rows: [{k: v for k, v in row.items() if k not in provenance} for row in rows]  # noqa: E731
    assert without_run_id(after_crm) == without_run_id(before["crm"])
    assert without_run_id(crm_rows(run, "customer_scores")) == without_run_id(before["scores"])
    for table, order in TARGETING_TABLES.items():
        assert without_run_id(crm_rows(run, table, order)) == without_run_id(before[table]), table
    for table, order in history.items():
        assert before["history"][table], f"{table} is empty"
        assert without_run_id(crm_rows(run, table, order)) == without_run_id(before["history"][table]), table
    assert {table: lake.read(*table).count() for table in lake.tables()} == before["lake"]
    strip = lambda text: [line.rsplit(",", 1)[0] for line in text.splitlines()]  # noqa: E731  (last column: run_id)
    assert strip(export_file.read_text()) == strip(before["export"])


# ---- insights, offers, recommendations ---------------------------------------------------------------------

#: The model outputs a rerun must reproduce, with their order (ALS, the text models and uplift are seeded).
TARGETING_TABLES = {
    "recommendations": "customer_id, rank",
    "category_propensity": "customer_id, rank",
    "customer_activity": "customer_id",
    "coupon_offers": "customer_id",
    "inquiry_triage": "inquiry_id",
    "review_insights": "product_id, aspect",
    "customer_satisfaction": "customer_id",
}
MODEL_CHECKS = ("review_sentiment", "inquiry_triage", "coupon_uplift", "product_recommendations", "category_propensity")


def test_the_night_publishes_insights_offers_and_recommendations_and_lists_their_model_checks(nightly_runs):
    """Every customer gets recommend.top_n recommendations; offers stay within the budget, one per customer;
    every inquiry is triaged; the summary lists each model's holdout figure beside its baseline."""
    from core.config import load_config

    run = nightly_runs["postgresql"]
    settings = load_config(environ={**os.environ, **run})
    top_n = settings.recommend.top_n
    recommendations = crm_rows(run, "recommendations", "customer_id, rank")
    per_customer: dict[int, list[int]] = {}
    for row in recommendations:
        per_customer.setdefault(row["customer_id"], []).append(row["rank"])
    assert len(per_customer) == CUSTOMERS
    assert all(ranks == list(range(1, top_n + 1)) for ranks in per_customer.values())
    assert {row["reason"] for row in recommendations} == {"similar_customers", "popular"}

    offers = crm_rows(run, "coupon_offers")
    assert offers, "no coupon offer on the test shop"
    assert sum(float(row["expected_cost"]) for row in offers) <= settings.uplift.budget
    assert all(row["expected_uplift"] >= settings.uplift.min_expected_uplift for row in offers)
    assert all(float(row["expected_incremental_revenue"]) > 0 for row in offers)

    triaged = crm_rows(run, "inquiry_triage", "inquiry_id")
    with create_engine(run["CRM_SHOP_URL"]).connect() as connection:
        inquiries = connection.execute(text("SELECT count(*) FROM inquiries")).scalar()
    assert 0 < len(triaged) <= inquiries
    assert len(crm_rows(run, "category_propensity", "customer_id, rank")) == CUSTOMERS * settings.recommend.top_categories
    assert crm_rows(run, "review_insights", "product_id, aspect")
    assert crm_rows(run, "customer_satisfaction")

    summary = (nightly_runs["base"] / "postgresql-summary.txt").read_text()
    for model in MODEL_CHECKS:
        assert any(line.strip().startswith(model) and " against " in line for line in summary.splitlines()), model


# ---- predictive scores and the churn model --------------------------------------------------------------


def test_every_buyer_is_scored_by_the_champion_that_the_first_night_trained(nightly_runs):
    """No champion existed, so the first night trained one (version 1) and scored every buyer with it."""
    import numpy as np
    import pandas as pd
    from mlflow import MlflowClient
    from sklearn.metrics import roc_auc_score

    from core.config import load_config
    from models import churn, tracking

    run = nightly_runs["sqlite"]
    scores = pd.DataFrame(crm_rows(run, "customer_scores")).set_index("customer_id")
    buyers = {row["customer_id"] for row in crm_segments(run) if row["frequency"] > 0}
    assert set(scores.index) == buyers
    settings = load_config(environ={**os.environ, **run})
    # The registry too: MlflowClient otherwise takes the registry URI set last in this process (mlflow.set_registry_uri).
    client = MlflowClient(settings.mlflow.tracking_uri, settings.mlflow.tracking_uri)
    champion = tracking.champion(client, settings.mlflow.churn_model)
    # The night publishes what the training run found better calibrated: the classifier's probability or BG/NBD's.
    published = champion.tags["published_churn"]
    assert set(scores["churn_model_version"]) == {churn.published_label(published, "crm_churn/1")}
    assert scores["clv_model_run"].nunique() == 1
    assert scores["churn_probability"].between(0, 1).all() and scores["p_alive"].between(0, 1).all()
    assert set(scores["churn_risk"]) <= {"low", "medium", "high"}
    clv = scores[["clv_12m_low", "clv_12m_high"]].astype(float).dropna()
    # Null only for a repeat buyer whose net repeat spend is not positive (credit notes): Gamma-Gamma leaves them out.
    assert len(clv) > 0.9 * len(scores) and (clv["clv_12m_low"] <= clv["clv_12m_high"]).all()
    assert (scores["expected_orders_30d"] <= scores["expected_orders_90d"]).all()
    assert (scores["expected_orders_90d"] <= scores["expected_orders_365d"]).all()
    if published == churn.CLASSIFIER:
        assert scores["churn_reasons"].str.contains(r"\(typical ").mean() > 0.9
    else:  # BG/NBD has no per-feature reasons
        assert scores["churn_reasons"].isna().all()

    # Against the generator's truth: P(alive) and churn probability separate the customers who are still
    # alive at the end from those who dropped out.
    truth = pd.read_parquet(Path(run["CRM_DATA_DIR"]) / "truth" / "customers.parquet").set_index("customer_id")
    alive = truth.loc[scores.index, "is_alive_at_end"].to_numpy()
    # (P(alive) ranks weakly: BG/NBD gives every single-purchase customer P(alive) = 1.)
    assert roc_auc_score(alive, scores["p_alive"]) > 0.6
    assert roc_auc_score(alive, scores["expected_orders_365d"]) > 0.75
    assert roc_auc_score(~alive, scores["churn_probability"]) > 0.75

    assert str(champion.version) == "1"
    training = client.get_run(champion.run_id)
    assert training.data.tags["decision"] == "first model: champion"
    assert {"challenger_roc_auc", "challenger_brier", "p_alive_baseline_roc_auc", "p_alive_baseline_brier"} <= set(training.data.metrics)
    assert np.isfinite(training.data.metrics["challenger_roc_auc"])
    assert {"champion_ece", "bgnbd_no_purchase_ece"} <= set(training.data.metrics) and training.data.tags["published_churn"] == published


def test_the_training_dag_keeps_the_champion_when_the_challenger_is_no_better(nightly_runs):
    """`crm train` runs crm_training through Airflow; on the same data the challenger equals the champion,
    so it cannot beat it by the margin: a new version, not promoted."""
    from mlflow import MlflowClient

    from core.config import load_config
    from models import tracking

    run = nightly_runs["sqlite"]
    result = run_crm("train", "--date", RUN_DATE.isoformat(), env=run)
    assert "not promoted: roc_auc" in result.stdout, result.stdout
    assert "p_alive_baseline" in result.stdout
    settings = load_config(environ={**os.environ, **run})
    # The registry too: MlflowClient otherwise takes the registry URI set last in this process (mlflow.set_registry_uri).
    client = MlflowClient(settings.mlflow.tracking_uri, settings.mlflow.tracking_uri)
    assert str(tracking.champion(client, settings.mlflow.churn_model).version) == "1"
    assert client.get_model_version(settings.mlflow.churn_model, "2").tags["decision"].startswith("not promoted")


# ---- night 2: incremental extraction on the PostgreSQL and MariaDB shops --------------------------------

NIGHT2 = date(2026, 11, 27)


def settings_of(run: dict[str, str]):
    from core.config import load_config

    return load_config(environ={**os.environ, **run})


def change_the_shop(url: str, lake, high: dict[str, "datetime"]) -> dict[str, int]:
    """Inserts, updates, a hard delete, an invalid e-mail and an update committed late; returns the ids."""
    from datetime import datetime, timedelta

    from pyspark.sql import functions as F
    from sqlalchemy import delete, func, insert, select, update

    from core import shop_schema as s

    old = high["orders"] - timedelta(days=30)
    settled = (
        lake.read("silver", "orders").where((F.col("status") == "delivered") & (F.col("updated_at") < old)).orderBy("id").limit(2).collect()
    )
    item = lake.read("silver", "order_items").where(F.col("order_id") == settled[0]["id"]).orderBy("id").first()
    # A customer with orders, none of them the two above: its e-mail goes bad, its orders stay.
    owners = [row["customer_id"] for row in settled]
    customer = {
        "id": lake.read("silver", "orders").where(~F.col("customer_id").isin(owners)).orderBy(F.col("id").desc()).first()["customer_id"]
    }
    morning = datetime.combine(NIGHT2, datetime.min.time()) + timedelta(hours=9)
    with create_engine(url).begin() as connection:
        new_customer = connection.execute(select(func.max(s.customers.c.id))).scalar() + 1
        new_order = connection.execute(select(func.max(s.orders.c.id))).scalar() + 1
        new_item = connection.execute(select(func.max(s.order_items.c.id))).scalar() + 1
        connection.execute(
            insert(s.customers).values(
                id=new_customer,
                email=f"new.customer{new_customer}@example.com",
                first_name="New",
                last_name="Customer",
                language="en",
                country="GB",
                accepts_marketing=True,
                created_at=morning,
                updated_at=morning,
            )
        )
        connection.execute(
            insert(s.orders).values(
                id=new_order,
                customer_id=new_customer,
                status="placed",
                total_amount=42,
                currency="CNY",
                created_at=morning,
                updated_at=morning,
            )
        )
        connection.execute(
            insert(s.order_items).values(
                id=new_item,
                order_id=new_order,
                product_id=item["product_id"],
                quantity=2,
                unit_price=21,
                created_at=morning,
                updated_at=morning,
            )
        )
        connection.execute(update(s.orders).where(s.orders.c.id == settled[0]["id"]).values(status="returned", updated_at=morning))
        # Committed after night 1 read the table, but stamped 30 minutes before its watermark.
        connection.execute(
            update(s.orders)
            .where(s.orders.c.id == settled[1]["id"])
            .values(status="cancelled", updated_at=high["orders"] - timedelta(minutes=30))
        )
        connection.execute(delete(s.order_items).where(s.order_items.c.id == item["id"]))
        connection.execute(update(s.customers).where(s.customers.c.id == customer["id"]).values(email="not-an-email", updated_at=morning))
    return {
        "new_customer": new_customer,
        "new_order": new_order,
        "new_item": new_item,
        "returned": settled[0]["id"],
        "late": settled[1]["id"],
        "deleted_item": item["id"],
        "bad_email": customer["id"],
    }


def watermarks(lake, batch: date) -> dict[str, "datetime"]:
    from pyspark.sql import functions as F

    rows = lake.read("bronze", "_watermarks").where(F.col("batch_id") == batch.isoformat()).collect()
    return {row["table"]: row["high_watermark"] for row in rows}


def rows_updated_after(url: str, low: dict[str, "datetime"]) -> dict[str, int]:
    from sqlalchemy import func, select

    from core import shop_schema as s

    with create_engine(url).connect() as connection:
        return {
            name: connection.execute(
                select(func.count()).where(s.metadata.tables[name].c.updated_at > low[name]).select_from(s.metadata.tables[name])
            ).scalar()
            for name in s.SHOP_TABLES
        }


def bronze_batch(lake, batch: date) -> dict[str, dict[str, int]]:
    from pyspark.sql import functions as F

    from core import shop_schema

    found = {}
    for name in shop_schema.SHOP_TABLES:
        rows = lake.read("bronze", name).where(F.col("_batch_id") == batch.isoformat()).groupBy("_op").count().collect()
        found[name] = {row["_op"]: row["count"] for row in rows}
    return found


def run_killed_midway(job: str, run: dict[str, str], watched: str, log: Path) -> bool:
    """Run `jobs.<job>` for NIGHT2 in a child process and SIGKILL it (JVM included) once a file matching
    `watched` (a glob under the lake) is written; returns whether it was killed before it ended.

    The child works on one table at a time, so the kill comes with tables still to do."""
    import glob
    import signal
    import time

    lake_dir = Path(run["CRM_DATA_DIR"]) / "lake"
    before = set(glob.glob(str(lake_dir / watched)))
    code = (
        f"from datetime import date; from core.config import load_config; import jobs.{job} as job; "
        f"job.run(date.fromisoformat('{NIGHT2.isoformat()}'), load_config(), 'killed-{job}')"
    )
    with log.open("w") as out:
        child = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=REPO,
            env={**os.environ, **run, "CRM__SPARK__PARALLEL_TABLES": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 600
        while child.poll() is None and time.monotonic() < deadline:
            if set(glob.glob(str(lake_dir / watched))) - before:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
                return True
            time.sleep(0.02)
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            raise AssertionError(f"{job} neither wrote {watched} nor ended in 10 minutes; see {log}")
    return False


def silver_tables(lake) -> dict[str, "DataFrame"]:
    from core import shop_schema

    return {name: lake.read("silver", name) for name in shop_schema.SHOP_TABLES}


def assert_same_rows(left: dict, right: dict) -> None:
    for name, frame in left.items():
        other = right[name].select(*frame.columns)
        assert frame.exceptAll(other).count() == 0 and other.exceptAll(frame).count() == 0, name


@pytest.fixture(scope="module")
def night_two(nightly_runs, spark, tmp_path_factory):
    """Change the PostgreSQL and MariaDB shops the same way, then run night 2 (extract, clean) on both.

    On PostgreSQL each job is first killed (SIGKILL) halfway through its writes and then rerun.
    """
    from datetime import datetime, timedelta

    from core.lake import Lake
    from jobs import clean, extract, features, score

    logs = tmp_path_factory.mktemp("night-two")
    outcome = {}
    for kind in ("postgresql", "mariadb"):
        run = nightly_runs[kind]
        settings = settings_of(run)
        lake = Lake(spark, settings.lake_dir)
        high = watermarks(lake, RUN_DATE)
        changes = change_the_shop(settings.shop.url, lake, high)
        overlap = timedelta(minutes=settings.extract.overlap_minutes)
        expected = rows_updated_after(settings.shop.url, {name: value - overlap for name, value in high.items()})
        everything = rows_updated_after(settings.shop.url, {name: datetime(1970, 1, 1) for name in high})
        record = {"changes": changes, "expected_reads": expected, "high": high, "shop_rows": everything}
        if kind == "postgresql":
            versions = {name: lake.version("bronze", name) for name in ("_watermarks", *expected)}
            record["extract_killed"] = run_killed_midway(
                "extract", run, f"bronze/*/_batch_id={NIGHT2.isoformat()}/*.parquet", logs / "extract.log"
            )
            record["after_extract_kill"] = {
                "watermarks_version": lake.version("bronze", "_watermarks"),
                "versions_before": versions,
                "batch": bronze_batch(lake, NIGHT2),
            }
        record["extract"] = extract.run(NIGHT2, settings, f"night2-{kind}")
        record["batch"] = bronze_batch(lake, NIGHT2)
        if kind == "postgresql":
            record["silver_version_before_clean"] = lake.version("silver", "orders")
            record["clean_killed"] = run_killed_midway("clean", run, "silver/orders/*.parquet", logs / "clean.log")
            record["silver_version_after_kill"] = lake.version("silver", "orders")
        record["clean"] = clean.run(NIGHT2, settings, f"night2-{kind}")
        if kind == "mariadb":  # the second night's features and scores: movement since night 1
            features.run(NIGHT2, settings, f"night2-{kind}")
            score.run(NIGHT2, settings, f"night2-{kind}")
        outcome[kind] = record
    return outcome


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_night_two_reads_only_the_rows_changed_since_the_watermark(night_two, kind):
    record = night_two[kind]
    batch, expected = record["batch"], record["expected_reads"]
    assert {name: ops.get("U", 0) for name, ops in batch.items()} == expected
    assert {name: ops.get("D", 0) for name, ops in batch.items() if ops.get("D")} == {"order_items": 1}
    # What was read is the handful of changes (and the overlap), not the tables.
    assert 0 < sum(expected.values()) < 0.03 * sum(record["shop_rows"].values())
    assert expected["orders"] >= 3  # the insert, the update and the late update
    assert all(mode["mode"] == "incremental" for mode in record["extract"].values())


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_night_two_silver_is_the_shops_current_state(nightly_runs, night_two, spark, kind):
    from pyspark.sql import functions as F

    from core.lake import Lake

    changes = night_two[kind]["changes"]
    lake = Lake(spark, settings_of(nightly_runs[kind]).lake_dir)
    orders = {row["id"]: row for row in lake.read("silver", "orders").collect()}
    assert orders[changes["returned"]]["status"] == "returned"
    assert orders[changes["late"]]["status"] == "cancelled"  # committed late, caught by the overlap
    assert orders[changes["new_order"]]["total_amount"] == 42
    items = {row["id"] for row in lake.read("silver", "order_items").select("id").collect()}
    assert changes["new_item"] in items and changes["deleted_item"] not in items
    customers = {row["id"]: row for row in lake.read("silver", "customers").collect()}
    assert changes["new_customer"] in customers
    # A malformed e-mail costs the field, not the customer: nulled, quarantined as a field, orders kept.
    assert customers[changes["bad_email"]]["email"] is None and customers[changes["bad_email"]]["first_name"]
    quarantine = lake.read("silver", "_quarantine/customers").where(F.col("run_date") == NIGHT2)
    assert [(row["id"], row["rule"], row["column"]) for row in quarantine.collect()] == [(changes["bad_email"], "invalid_email", "email")]
    orphans = lake.read("silver", "_quarantine/orders").where((F.col("run_date") == NIGHT2) & (F.col("rule") == "orphan"))
    assert not [row["reason"] for row in orphans.collect() if row["reason"].startswith(f"customer_id = {changes['bad_email']}:")]
    assert any(row["customer_id"] == changes["bad_email"] for row in orders.values())


def test_incremental_silver_equals_a_full_reload_of_the_same_shop(nightly_runs, night_two, spark, tmp_path):
    from core.lake import Lake
    from jobs import clean, extract

    run = nightly_runs["postgresql"]
    settings = settings_of(run)
    reload = settings.model_copy(update={"data_dir": tmp_path})
    extract.run(NIGHT2, reload, "full-reload", full=True)
    clean.run(NIGHT2, reload, "full-reload")
    incremental = silver_tables(Lake(spark, settings.lake_dir))
    assert_same_rows(incremental, silver_tables(Lake(spark, reload.lake_dir)))
    # The same seed and the same changes give the same silver from MariaDB.
    assert_same_rows(incremental, silver_tables(Lake(spark, settings_of(nightly_runs["mariadb"]).lake_dir)))


def test_a_killed_extract_leaves_the_watermarks_and_no_partial_batch(night_two):
    record = night_two["postgresql"]
    assert record["extract_killed"], "extract ended before the test could kill it"
    after = record["after_extract_kill"]
    assert after["watermarks_version"] == after["versions_before"]["_watermarks"]
    expected = record["expected_reads"]
    for name, ops in after["batch"].items():
        # Each table has either none or all of its batch: a Delta commit is all or nothing.
        assert ops.get("U", 0) in (0, expected[name]), name


def test_a_killed_clean_leaves_silver_at_its_previous_version_until_the_rerun(night_two):
    record = night_two["postgresql"]
    assert record["clean_killed"], "clean ended before the test could kill it"
    assert record["silver_version_after_kill"] in (record["silver_version_before_clean"], record["silver_version_before_clean"] + 1)
    assert record["clean"]["orders"]["mode"] == "incremental"


# ---- the same shop as MongoDB documents (FerretDB): night 1, then night 2 ---------------------------------


def silver_counts_of_night_one(lake) -> dict[str, int]:
    """Rows per silver table after night 1 (Delta time travel to before night 2, if night 2 has run)."""
    from pyspark.sql import functions as F

    from core import shop_schema

    before = {}
    if lake.exists("silver", "_applied"):
        before = {
            row["table"]: row["version_before"]
            for row in lake.read("silver", "_applied").where(F.col("batch_id") == NIGHT2.isoformat()).collect()
        }
    return {name: lake.read("silver", name, version=before.get(name)).count() for name in shop_schema.SHOP_TABLES}


def gold_segment_counts(lake, as_of: date) -> dict[str, int]:
    from pyspark.sql import functions as F

    rows = lake.read("gold", "customer_segments").where(F.col("as_of") == as_of).groupBy("segment").count().collect()
    return {row["segment"]: row["count"] for row in rows}


def change_the_document_shop(url: str, high: dict[str, "datetime"]) -> dict[str, object]:
    """Night 2's changes, made the way a document shop's application makes them: inserts, updates (one
    stamped inside the overlap window), a deleted order, an item taken out of an order, a new item pushed
    into an existing order, and an order whose customerId is a string (a wrong type in a required field)."""
    from datetime import datetime, timedelta

    from core.db import document_database as connect

    morning = datetime.combine(NIGHT2, datetime.min.time()) + timedelta(hours=9)
    with connect(url) as shop:
        settled = [
            order
            for order in shop.orders.find({"status": "delivered"}).sort("_id", 1)
            if order["updatedAt"] < high["orders"] - timedelta(days=30) and len(order.get("items", [])) >= 2
        ][:4]
        assert len(settled) == 4, "the shop has settled orders with two items or more"
        returned, late, grown, gone = settled
        new_customer = shop.customers.find_one(sort=[("_id", -1)])["_id"] + 1
        new_order = shop.orders.find_one(sort=[("_id", -1)])["_id"] + 1
        new_item = max(item["_id"] for order in shop.orders.find({}, {"items": 1}) for item in order.get("items", [])) + 1
        product = grown["items"][0]["productId"]
        shop.customers.insert_one(
            {
                "_id": new_customer,
                "email": f"new.customer{new_customer}@example.com",
                "firstName": "New",
                "lastName": "Customer",
                "language": "en",
                "country": "GB",
                "acceptsMarketing": True,
                "createdAt": morning,
                "updatedAt": morning,
                "addresses": [],
            }
        )
        shop.orders.insert_one(
            {
                "_id": new_order,
                "customerId": new_customer,
                "status": "placed",
                "totalAmount": 42.0,
                "currency": "CNY",
                "createdAt": morning,
                "updatedAt": morning,
                "items": [
                    {"_id": new_item, "productId": product, "quantity": 2, "unitPrice": 21.0, "createdAt": morning, "updatedAt": morning}
                ],
            }
        )
        shop.orders.update_one({"_id": returned["_id"]}, {"$set": {"status": "returned", "updatedAt": morning}})
        # Committed after night 1 read the collection, but stamped 30 minutes before its watermark.
        shop.orders.update_one({"_id": late["_id"]}, {"$set": {"status": "cancelled", "updatedAt": high["orders"] - timedelta(minutes=30)}})
        shop.orders.update_one(
            {"_id": grown["_id"]},
            {
                "$push": {
                    "items": {
                        "_id": new_item + 1,
                        "productId": product + 1,
                        "quantity": 1,
                        "unitPrice": 9.5,
                        "createdAt": morning,
                        "updatedAt": morning,
                    }
                },
                "$set": {"updatedAt": morning},
            },
        )
        pulled = returned["items"][-1]["_id"]
        # The element itself: FerretDB 1.24 does not evaluate a $pull condition (it matches nothing).
        shop.orders.update_one({"_id": returned["_id"]}, {"$pull": {"items": returned["items"][-1]}})
        shop.orders.delete_one({"_id": gone["_id"]})
        shop.orders.insert_one(
            {
                "_id": new_order + 1,
                "customerId": "C-0042",
                "status": "placed",
                "totalAmount": 10.0,
                "currency": "CNY",
                "createdAt": morning,
                "updatedAt": morning,
                "items": [],
            }
        )
    return {
        "new_customer": new_customer,
        "new_order": new_order,
        "new_items": {new_item, new_item + 1},
        "returned": returned["_id"],
        "late": late["_id"],
        "grown": grown["_id"],
        "pulled_item": pulled,
        "deleted_order": gone["_id"],
        "deleted_items": {item["_id"] for item in gone["items"]},
        "wrong_type": new_order + 1,
    }


def documents_changed_after(url: str, settings, low: dict[str, "datetime"]) -> dict[str, int]:
    """Per table, how many documents of its collection are stamped after `low` (what night 2 must read)."""
    from core.db import document_database as connect
    from core.mapping import watermark_field
    from jobs.extract import source_mapping

    mapping = source_mapping(settings)
    with connect(url) as shop:
        return {
            name: shop[source.source].count_documents({watermark_field(mapping, source): {"$gt": low[name]}})
            for name, source in mapping.tables.items()
        }


@pytest.fixture(scope="module")
def mongodb_nights(nightly_runs, ferretdb, spark, tmp_path_factory):
    """The test shop's seed as documents in FerretDB: night 1 (extract, clean, features, score), then the
    document changes and night 2 (extract, clean), then a full reload of the changed shop beside it."""
    from datetime import timedelta

    from core.lake import Lake
    from jobs import clean, extract, features, score

    ferretdb.create_database("shop")
    run = crm_env(tmp_path_factory.mktemp("mongodb"), ferretdb.url("shop"))
    generate(run)
    settings = settings_of(run)
    lake = Lake(spark, settings.lake_dir)
    record = {"run": run, "night1": extract.run(RUN_DATE, settings, "mongodb-night1")}
    clean.run(RUN_DATE, settings, "mongodb-night1")
    features.run(RUN_DATE, settings, "mongodb-night1")
    score.run(RUN_DATE, settings, "mongodb-night1")
    record["silver_night1"] = silver_counts_of_night_one(lake)
    record["segments_night1"] = gold_segment_counts(lake, RUN_DATE)

    high = watermarks(lake, RUN_DATE)
    record["changes"] = change_the_document_shop(settings.shop.url, high)
    overlap = timedelta(minutes=settings.extract.overlap_minutes)
    record["expected_documents"] = documents_changed_after(
        settings.shop.url, settings, {name: value - overlap for name, value in high.items()}
    )
    record["all_documents"] = documents_changed_after(settings.shop.url, settings, {name: datetime_min() for name in high})
    record["night2"] = extract.run(NIGHT2, settings, "mongodb-night2")
    record["clean2"] = clean.run(NIGHT2, settings, "mongodb-night2")
    reload = settings.model_copy(update={"data_dir": tmp_path_factory.mktemp("mongodb-reload")})
    extract.run(NIGHT2, reload, "mongodb-full-reload", full=True)
    clean.run(NIGHT2, reload, "mongodb-full-reload")
    record["lake"], record["reload_lake"] = settings.lake_dir, reload.lake_dir
    return record


def datetime_min():
    from datetime import datetime

    return datetime(1970, 1, 1)


def test_the_same_seed_gives_the_same_silver_and_segments_from_sqlite_postgresql_and_mongodb(nightly_runs, mongodb_nights, spark):
    from core.lake import Lake

    counts = {kind: silver_counts_of_night_one(Lake(spark, settings_of(nightly_runs[kind]).lake_dir)) for kind in ("sqlite", "postgresql")}
    assert mongodb_nights["silver_night1"] == counts["sqlite"] == counts["postgresql"]
    segments = segment_counts(crm_segments(nightly_runs["sqlite"]))
    assert mongodb_nights["segments_night1"] == segments == segment_counts(crm_segments(nightly_runs["postgresql"]))
    # Night 1 read every document once: a collection holding an embedded table is read once per table.
    night1 = mongodb_nights["night1"]
    assert night1["order_items"]["documents"] == night1["orders"]["documents"] == night1["orders"]["changed"]
    facts = truth(mongodb_nights["run"])
    assert facts["not_written"] == {"order_items": facts["bad_rows"]["order_items"]["orphan"]}


def test_mongodb_night_two_reads_only_the_documents_changed_since_the_watermark(mongodb_nights):
    night2, expected = mongodb_nights["night2"], mongodb_nights["expected_documents"]
    assert {name: counts["documents"] for name, counts in night2.items()} == expected
    assert all(counts["mode"] == "incremental" for counts in night2.values())
    # The handful of changed documents (and the overlap window), not the collections.
    assert expected["orders"] >= 5  # the new order, the wrong-typed one, the returned, grown and late orders
    assert 0 < sum(expected.values()) < 0.03 * sum(mongodb_nights["all_documents"].values())
    # Deleted documents and items taken out of an array are found by the key reconcile.
    assert night2["orders"]["deleted"] == 1
    assert night2["order_items"]["deleted"] == 1 + len(mongodb_nights["changes"]["deleted_items"])


def test_mongodb_night_two_silver_is_the_shops_current_state(mongodb_nights, spark):

    from core.lake import Lake

    changes = mongodb_nights["changes"]
    lake = Lake(spark, mongodb_nights["lake"])
    orders = {row["id"]: row for row in lake.read("silver", "orders").collect()}
    assert orders[changes["returned"]]["status"] == "returned"
    assert orders[changes["late"]]["status"] == "cancelled"  # stamped inside the overlap window
    assert orders[changes["new_order"]]["total_amount"] == 42
    assert changes["deleted_order"] not in orders and changes["wrong_type"] not in orders
    items = {row["id"]: row for row in lake.read("silver", "order_items").collect()}
    assert changes["new_items"] <= set(items)
    assert {items[key]["order_id"] for key in changes["new_items"]} == {changes["new_order"], changes["grown"]}
    assert changes["pulled_item"] not in items and not changes["deleted_items"] & set(items)
    assert changes["new_customer"] in {row["id"] for row in lake.read("silver", "customers").select("id").collect()}
    # Incremental silver equals a full reload of the changed shop.
    assert_same_rows(silver_tables(lake), silver_tables(Lake(spark, mongodb_nights["reload_lake"])))


def test_a_document_with_a_wrong_type_in_a_required_field_is_quarantined_naming_the_field(mongodb_nights, spark):
    from pyspark.sql import functions as F

    from core.lake import Lake

    lake = Lake(spark, mongodb_nights["lake"])
    quarantined = (
        lake.read("silver", "_quarantine/orders")
        .where((F.col("run_date") == NIGHT2) & (F.col("id") == mongodb_nights["changes"]["wrong_type"]))
        .collect()
    )
    assert [row["rule"] for row in quarantined] == ["wrong_type"]
    assert quarantined[0]["reason"] == (
        "orders (collection orders): orders.customer_id (field customerId) = 'C-0042': a str, expected an integer, ObjectId or UUID key"
    )


# ---- RFM, segments and clusters ------------------------------------------------------------------------------


def silver_frame(run: dict[str, str], table: str) -> "pd.DataFrame":
    """A silver table read with delta-rs (no Spark), as pandas."""
    from deltalake import DeltaTable

    return DeltaTable(str(Path(run["CRM_DATA_DIR"]) / "lake" / "silver" / table)).to_pyarrow_table().to_pandas()


def pandas_rfm(run: dict[str, str], as_of: date) -> "pd.DataFrame":
    """RFM scores and segments of every customer from silver, in plain pandas (the documented rules)."""
    import pandas as pd
    from test_rfm import reference_scores  # the rank formula in pandas, shared with the unit tests

    from core.config import REPO_ROOT
    from models.rfm import SegmentRules

    settings = settings_of(run)
    cutoff = pd.Timestamp(as_of + timedelta(days=1), tz="UTC")
    customers = silver_frame(run, "customers")
    customers = customers[customers["created_at"] < cutoff][["id"]].rename(columns={"id": "customer_id"})
    orders = silver_frame(run, "orders")
    orders = orders[orders["created_at"] < cutoff]
    # A purchase at as_of: a purchase status now, or any status reached after as_of (then still in progress);
    # a negative total is a credit note: no purchase, taken off the money (net, the default). Guest orders
    # (no customer) belong to nobody.
    counted = orders[
        (orders["status"].isin(settings.rfm.scored_statuses) | (orders["updated_at"] >= cutoff)) & orders["customer_id"].notna()
    ]
    purchases = counted[counted["total_amount"] >= 0]
    per_customer = (
        purchases.groupby("customer_id")
        .agg(purchase_count=("id", "size"), last=("created_at", "max"))
        .join(counted.groupby("customer_id").agg(total_spent=("total_amount", "sum")), how="outer")
        .reset_index()
    )
    frame = customers.merge(per_customer, on="customer_id", how="left")
    frame["recency_days"] = (pd.Timestamp(as_of) - frame["last"].dt.tz_localize(None).dt.normalize()).dt.days
    scored = frame.set_index("customer_id").join(reference_scores(frame))  # non-buyers: no scores
    rules = SegmentRules.load(REPO_ROOT / "conf" / settings.rfm.segments_file)
    scored["segment"] = [
        rules.no_purchase_segment if pd.isna(r) else rules.segment_for(int(r), int(f), int(m))
        for r, f, m in zip(scored["r_score"], scored["f_score"], scored["m_score"])
    ]
    return scored.astype({name: "Int64" for name in ("r_score", "f_score", "m_score")})


def test_rfm_scores_and_segments_equal_a_pandas_reference_customer_for_customer(nightly_runs):
    import pandas as pd

    reference = pandas_rfm(nightly_runs["sqlite"], RUN_DATE)
    columns = ["r_score", "f_score", "m_score", "segment"]
    expected = {
        customer: tuple(None if pd.isna(value) else value for value in values)
        for customer, values in zip(reference.index, reference[columns].astype(object).itertuples(index=False))
    }
    published = {row["customer_id"]: tuple(row[column] for column in columns) for row in crm_segments(nightly_runs["sqlite"])}
    assert published == expected
    assert len({values[-1] for values in published.values()}) >= 8  # a real spread, not one segment


def test_editing_the_segment_rule_table_changes_the_segments_without_a_code_change(nightly_runs, spark, tmp_path, monkeypatch):
    import shutil

    import yaml

    from core.config import REPO_ROOT, load_config
    from jobs import score

    source = Path(nightly_runs["sqlite"]["CRM_DATA_DIR"]) / "lake"
    for layer, table in (("gold", "customer_features"), ("silver", "customers"), ("silver", "addresses")):
        shutil.copytree(source / layer / table, tmp_path / "data" / "lake" / layer / table)
    conf = tmp_path / "conf"
    shutil.copytree(REPO_ROOT / "conf", conf)
    rules = yaml.safe_load((conf / "segments.yaml").read_text())
    # Marketing's edit: Champions become "VIP" and take r 4-5 (was 5) with f 4-5.
    rules["segments"][0].update({"name": "VIP", "r": [4, 5]})
    (conf / "segments.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    monkeypatch.setenv("CRM_CONF_DIR", str(conf))
    settings = load_config(environ={**os.environ, "CRM_DATA_DIR": str(tmp_path / "data")})

    counts = score.run(RUN_DATE, settings, "edited-rules")

    rows = score.current(score.Lake(spark, settings.lake_dir), "customer_segments", RUN_DATE).collect()
    vip = {row.customer_id for row in rows if row.segment == "VIP"}
    assert "Champions" not in counts and counts["VIP"] == len(vip) > 0
    assert vip == {row.customer_id for row in rows if row.r_score is not None and row.r_score >= 4 and row.f_score >= 4}
    before = {row["customer_id"]: row for row in crm_segments(nightly_runs["sqlite"])}
    assert sum(1 for row in before.values() if row["segment"] == "Champions") < len(vip)
    assert all(before[row.customer_id]["rfm_code"] == row.rfm_code for row in rows)  # same scores, new names


def test_night_two_segments_know_night_ones_and_the_movement_adds_up(nightly_runs, night_two, spark, tmp_path):
    from pyspark.sql import functions as F

    from core.lake import Lake

    lake = Lake(spark, settings_of(nightly_runs["mariadb"]).lake_dir)
    segments = lake.read("gold", "customer_segments")
    night_one = {r.customer_id: r for r in segments.where(F.col("as_of") == RUN_DATE).collect()}
    night_two_rows = segments.where(F.col("as_of") == NIGHT2).collect()
    assert night_two_rows
    for row in night_two_rows:
        before = night_one.get(row.customer_id)
        assert row.previous_segment == (before.segment if before else None)
        assert row.changed_at == (before.changed_at if before and before.segment == row.segment else NIGHT2)
    moved = {
        (r.from_segment, r.to_segment): r.customers for r in lake.read("gold", "segment_movement").where(F.col("as_of") == NIGHT2).collect()
    }
    expected: dict = {}
    for row in night_two_rows:
        expected[(row.previous_segment, row.segment)] = expected.get((row.previous_segment, row.segment), 0) + 1
    assert moved == expected
    assert sum(count for (old, new), count in moved.items() if old != new) > 0  # a day passed: some moved
    # Publishing both nights keeps each customer's stays: the open one is night two's segment, and a move
    # closed the old one at night two (in a CRM database of its own: the nightly one keeps night one).
    from core import migrate
    from core.crm_schema import columns_of, crm_metadata
    from jobs import publish

    url = f"sqlite:///{tmp_path}/stays.sqlite"
    migrate.upgrade(url, None)
    published = crm_metadata(None).tables["customer_segments"]
    for day in (RUN_DATE, NIGHT2):
        rows = segments.where(F.col("as_of") == day).select(*columns_of("customer_segments")).toArrow()
        publish.replace_tables(create_engine(url), published.metadata, {published: rows}, day)
    with create_engine(url).connect() as connection:
        stays = [
            dict(row)
            for row in connection.execute(text("SELECT * FROM customer_segment_history ORDER BY customer_id, valid_from")).mappings()
        ]
    open_stays = {r["customer_id"]: r["segment"] for r in stays if r["valid_to"] is None}
    assert open_stays == {row.customer_id: row.segment for row in night_two_rows}
    closed = {(r["customer_id"], r["segment"]) for r in stays if str(r["valid_to"]) == NIGHT2.isoformat()}
    gone = night_one.keys() - {row.customer_id for row in night_two_rows}  # deleted in the shop
    assert closed == {
        (row.customer_id, row.previous_segment)
        for row in night_two_rows
        if row.previous_segment is not None and row.previous_segment != row.segment
    } | {(customer_id, night_one[customer_id].segment) for customer_id in gone}


def test_cluster_ids_stay_with_their_centroids_from_night_to_night(nightly_runs, night_two, spark):
    import numpy as np
    from pyspark.sql import functions as F

    from core.lake import Lake
    from jobs.score import as_measures
    from models.clusters import CLUSTER_FEATURES, from_units

    lake = Lake(spark, settings_of(nightly_runs["mariadb"]).lake_dir)
    clusters = as_measures(lake.read("gold", "customer_clusters"), "customer_clusters")  # the CRM's column names back to the measures
    centroids = {night: {r.cluster_id: r for r in clusters.where(F.col("as_of") == night).collect()} for night in (RUN_DATE, NIGHT2)}
    assert set(centroids[RUN_DATE]) == set(centroids[NIGHT2])  # same k: the same ids, nothing renumbered

    def position(row) -> "np.ndarray":  # where k-means sees the centroid (log scale for skewed features)
        return from_units(np.array([[getattr(row, name) for name in CLUSTER_FEATURES]]))[0]

    for cluster_id, before in centroids[RUN_DATE].items():
        nearest = min(centroids[NIGHT2].values(), key=lambda other: float(((position(other) - position(before)) ** 2).sum()))
        assert nearest.cluster_id == cluster_id


#: The young shop's night: features, predict and the gold gate (which raises on a failed expectation).
YOUNG_NIGHT = """
import json, sys
from datetime import date
from jobs import features, insights, offers, predict, recommend, validate
from core.config import load_config

settings, day = load_config(), date.fromisoformat(sys.argv[1])
features.run(day, settings, "young-shop")
result = predict.run(day, settings, "young-shop")
result["later_jobs"] = {job.__name__: job.run(day, settings, "young-shop") for job in (recommend, insights, offers)}
validate.run(day, settings, "young-shop", "gold", ["customer_features", "customer_scores", *recommend.TABLES,
                                                   *insights.TABLES, offers.TABLE])
print(json.dumps(result, default=str))
"""


def test_a_young_shop_is_scored_without_the_churn_model_it_cannot_train_yet(nightly_runs, tmp_path):
    """A shop with less history than training needs (2 x churn.horizon_days) still gets its value scores:
    the churn columns stay null, the result says why, and the gold gate passes."""
    import shutil

    import pandas as pd
    from deltalake import DeltaTable

    from core.config import load_config
    from features.customer import INPUT_TABLES

    source = Path(nightly_runs["sqlite"]["CRM_DATA_DIR"]) / "lake" / "silver"
    for table in (*INPUT_TABLES, "coupons"):
        shutil.copytree(source / table, tmp_path / "data" / "lake" / "silver" / table)
    settings = load_config(environ={**os.environ, "CRM_ENV": "test", "CRM_DATA_DIR": str(tmp_path / "data")})
    created = DeltaTable(str(source / "orders")).to_pandas(columns=["created_at"])["created_at"]
    young = (created.min() + pd.Timedelta(days=settings.churn.horizon_days)).date()  # < 2 x horizon of history

    # The jobs in a process of their own, as Airflow tasks run them (a fresh JVM, not the tests' long-lived
    # session, whose memory the earlier tests have used).
    script = tmp_path / "young_night.py"  # a file, not `python -c`: Great Expectations cannot be imported under -c
    script.write_text(YOUNG_NIGHT)
    night = subprocess.run(
        [sys.executable, str(script), young.isoformat()],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "CRM_ENV": "test", "CRM_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(REPO)},
    )
    assert night.returncode == 0, night.stderr[-3000:]
    result = json.loads(night.stdout.strip().splitlines()[-1])

    assert result["churn_model"] is None and not result["trained_first"]
    assert "no churn model yet" in result["degraded"]["churn"] and "2 x churn.horizon_days" in result["degraded"]["churn"]
    scores = DeltaTable(str(tmp_path / "data" / "lake" / "gold" / "customer_scores")).to_pandas()
    assert len(scores) == result["customers"] > 0
    assert scores["churn_probability"].isna().all() and scores["churn_risk"].isna().all()
    if "value" not in result["degraded"]:  # repeat buyers already: the value models are fitted
        assert (scores["clv_12m"].astype(float) >= 0).all()
        # 90 days of history may not show anyone leaving yet: then P(alive) is null and the summary says why.
        if "p_alive" in result["degraded"]:
            assert scores["p_alive"].isna().all() and "does not show customers leaving" in result["degraded"]["p_alive"]
        else:
            assert scores["p_alive"].between(0, 1).all()
    # The later models say what they could not do yet, and still write what they can (the gate passed above).
    later = result["later_jobs"]
    assert "2 x recommend.holdout_days" in later["jobs.recommend"]["degraded"]["category_propensity"]
    assert "recommendations_evaluation" in later["jobs.recommend"]["degraded"]
    assert later["jobs.recommend"]["rows"]["recommendations"] > 0
    assert "no personal-coupon campaign ended" in later["jobs.offers"]["degraded"]["offers"]


def test_the_run_log_has_every_stage_of_the_night_with_its_time_and_outcome(nightly_runs):
    """`crm run` (PostgreSQL shop) left one successful row per task in the CRM table pipeline_runs."""
    import json as json_module

    rows = [
        row
        for row in crm_rows(nightly_runs["postgresql"], "pipeline_runs", order_by="started_at")
        if row["run_date"] == RUN_DATE and row["dag_id"] == "crm_nightly"
    ]
    by_run: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_run.setdefault(row["run_id"], {})[row["stage"]] = row
    tasks = night_tasks()
    # The setup and teardown write the run log too, as the Airflow UI lists them (crm status ends a night with spark_down).
    complete = [stages for stages in by_run.values() if set(stages) == {*tasks, "spark_up", "spark_down"}]
    assert complete, f"no run with all of {tasks}: {[sorted(stages) for stages in by_run.values()]}"
    stages = complete[0]
    assert all(row["state"] == "success" and row["error"] is None for row in stages.values())
    assert all(stages[task]["seconds"] > 0 for task in tasks)
    for layer in ("bronze", "silver", "gold"):
        assert json_module.loads(stages[f"validate_{layer}"]["summary"])["passed"] is True
    assert json_module.loads(stages["publish"]["summary"])["customer_segments"] == CUSTOMERS
    order = [row["stage"] for row in sorted(stages.values(), key=lambda row: row["started_at"])]
    assert order[0] == "spark_up" and order[-1] == "spark_down"
    assert order[1] == "extract" and order[-2] in ("publish", "export", "report")


def test_the_night_writes_its_run_report(nightly_runs):
    """The `report` task's page for the run date, with every section (tests/test_report.py renders one in Chromium)."""
    page = (Path(nightly_runs["sqlite"]["CRM_DATA_DIR"]) / "reports" / RUN_DATE.isoformat() / "index.html").read_text()
    for section in ("overview", "segments", "scores", "clv", "calibration", "quality", "changes"):
        assert f'<section id="{section}"' in page, section
    assert RUN_DATE.isoformat() in page and page.count('data-plot="') >= 4


def test_the_night_runs_on_one_spark_server_that_its_dag_starts_and_stops(nightly_runs):
    """Every Spark task of a night is a client of one night server (core/spark_server.py): started by `spark_up`,
    stopped by `spark_down`; no task started a JVM of its own, even with each task in its own process. With
    `spark.remote` (the PostgreSQL and MariaDB nights, on the test session's shared server) the night starts none."""
    sqlite_dir = Path(nightly_runs["sqlite"]["CRM_DATA_DIR"])
    servers = sorted((sqlite_dir / "logs").glob("spark-server-*.log"))
    assert len(servers) == 1, servers
    server_log = servers[0].read_text()
    assert "ready on port" in server_log
    assert not (sqlite_dir / "spark" / "server.json").exists(), "the night's server was not stopped"
    # Each task of the SQLite night ran in its own `airflow tasks test` process: none of them started Spark
    # (a local JVM prints its log4j profile line), and the Spark jobs of every task ran in the one server.
    tasks_log = (nightly_runs["base"] / "sqlite-tasks.log").read_text()
    assert "Using Spark's default log4j profile" not in tasks_log
    assert server_log.count("Using Spark's default log4j profile") == 1
    # spark_up's result names the server; its token (a password to the night's Spark) shows masked only.
    assert "night Spark server sc://localhost:" in tasks_log and ";token=***" in tasks_log
    assert not re.search(r";token=(?!\*\*\*)", tasks_log + server_log)
    for kind in ("postgresql", "mariadb"):
        data_dir = Path(nightly_runs[kind]["CRM_DATA_DIR"])
        assert not list((data_dir / "logs").glob("spark-server-*.log")), f"{kind}: started a server of its own"
        assert not (data_dir / "spark" / "server.json").exists(), kind
