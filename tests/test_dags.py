"""DAG integrity: every DAG file imports fast and cleanly, with docs, retries and no cycles; the nightly's assets."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from core.config import REPO_ROOT

DAG_FILES = sorted((REPO_ROOT / "dags").glob("*.py"))


@pytest.fixture(scope="module")
def dag_bag(tmp_path_factory):
    import os

    from cli.orchestrate import prepare_airflow
    from core.config import load_config

    prepare_airflow(load_config("test"))
    from airflow.dag_processing.dagbag import DagBag

    assert os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    # The tests read the parsed DAGs from `.dags`: `get_dag` also asks the metadata database, which Airflow
    # may have bound to another home when an earlier test of the session imported it first.
    return DagBag(dag_folder=str(REPO_ROOT / "dags"))


def test_dag_files_import_without_errors(dag_bag):
    assert dag_bag.import_errors == {}
    assert {"crm_nightly", "crm_training", "crm_export_check"} <= set(dag_bag.dag_ids)


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda path: path.name)
def test_each_dag_file_imports_in_under_two_seconds(path):
    # A fresh interpreter with Airflow already imported: the DAG file's own import time is what counts.
    code = (
        f"import time, runpy, airflow.sdk; start = time.perf_counter(); runpy.run_path({str(path)!r}); print(time.perf_counter() - start)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    seconds = float(result.stdout.strip().splitlines()[-1])
    assert seconds < 2.0, f"{path.name} takes {seconds:.2f} s to import"


def test_dags_have_no_cycles_and_every_task_has_docs_and_retries(dag_bag):
    for dag in dag_bag.dags.values():
        dag.check_cycle()  # raises on a cycle
        assert dag.doc_md, f"{dag.dag_id}: no doc_md"
        assert dag.max_active_runs == 1, f"{dag.dag_id}: writers to the lake must not overlap"
        assert dag.catchup is False
        for task in dag.tasks:
            assert task.retries >= 1, f"{dag.dag_id}.{task.task_id}: no retries"
            assert task.doc_md or task.doc, f"{dag.dag_id}.{task.task_id}: no docs"


def test_nightly_runs_the_jobs_in_data_flow_order(dag_bag):
    dag = dag_bag.dags["crm_nightly"]
    upstream = {task.task_id: sorted(task.upstream_task_ids) for task in dag.tasks}
    assert upstream == {
        "spark_up": [],
        "extract": ["spark_up"],
        "validate_bronze": ["extract"],
        "clean": ["validate_bronze"],
        "events": ["clean"],
        "validate_silver": ["events"],
        "features": ["validate_silver"],
        "score": ["features"],
        "predict": ["features"],
        "recommend": ["features"],
        "insights": ["predict"],
        "offers": ["predict"],
        "campaigns": ["insights", "offers", "recommend", "score"],
        "validate_gold": ["campaigns"],
        "publish": ["validate_gold"],
        "export": ["validate_gold"],
        "report": ["validate_gold"],
        "spark_down": ["export", "publish", "report", "spark_up"],
    }
    # The night's Spark server is a setup/teardown pair: spark_down runs however the night ends.
    assert dag.get_task("spark_up").is_setup and dag.get_task("spark_down").is_teardown


def test_a_backfill_years_back_still_runs_the_tasks(dag_bag):
    """Airflow runs no task of a run whose logical date is before the DAG's start_date (and calls it a success)."""
    from datetime import date

    from cli.orchestrate import logical_date_for

    cdnow_calibration_end = date(1997, 9, 30)  # a real shop's history (CDNOW, docs/operating.md) starts before 2000
    for dag_id in ("crm_nightly", "crm_training"):
        dag = dag_bag.dags[dag_id]
        assert dag.start_date <= logical_date_for(cdnow_calibration_end), dag_id
        assert not dag.catchup  # a far start_date must not make the scheduler run every past night


def test_the_nightly_tasks_that_finish_data_declare_it_as_assets(dag_bag):
    from airflow.serialization.serialized_objects import DagSerialization

    from core import assets
    from core.crm_schema import crm_metadata

    nightly = dag_bag.dags["crm_nightly"]
    # What the scheduler sees: the DAG as serialized to the metadata database.
    scheduled = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(nightly))
    outlets = {task.task_id: sorted(outlet.uri for outlet in task.outlets) for task in scheduled.tasks if task.outlets}
    tables = sorted(crm_metadata(None).tables)
    assert outlets == {
        "validate_gold": sorted(f"shop-crm://gold/{table}" for table in ["customer_features", *tables]),
        "publish": [f"shop-crm://crm/{table}" for table in tables],
        "export": ["shop-crm://exports/"],  # Airflow normalises the URI (the asset's name stays shop-crm://exports)
    }
    for task_id in outlets:  # the events say which night they are of (see the real run below)
        assert nightly.get_task(task_id)._pre_execute_hook is assets.stamp_run_date, task_id
    # The training DAG stays on its weekly cron, not on the nightly's assets.
    training = dag_bag.dags["crm_training"].timetable
    assert (training.expression, training.asset_condition) == ("0 4 * * 0", None)


#: A DAG folder with stand-ins for the nightly's producing tasks (same outlets and hook, no job) and a DAG
#: scheduled on the exports, as the nightly's doc_md shows.
ASSET_DAGS = '''
from datetime import datetime, timezone

from airflow.sdk import dag, task

from core import assets

START = datetime(2000, 1, 1, tzinfo=timezone.utc)


@dag(dag_id="producer", schedule=None, start_date=START, catchup=False)
def producer():
    @task(outlets=assets.gold_tables(), pre_execute=assets.stamp_run_date)
    def validate_gold():
        """Stand-in: no job, only the nightly task's outlets and hook."""

    @task(outlets=assets.crm_tables(), pre_execute=assets.stamp_run_date)
    def publish():
        """Stand-in, as validate_gold."""

    @task(outlets=[assets.EXPORTS], pre_execute=assets.stamp_run_date)
    def export():
        """Stand-in, as validate_gold."""

    validate_gold() >> [publish(), export()]


@dag(dag_id="mailing_sync", schedule=[assets.EXPORTS], start_date=START, catchup=False)
def mailing_sync():
    @task
    def sync():
        """What a consumer does with the exports is not the point here: that it is queued is."""

    sync()


producer()
mailing_sync()
'''

#: Run the producer once with dag.test(); print its run id, the asset events and the queued consumer runs.
RUN_PRODUCER = """
import json, sys
from datetime import date

from sqlalchemy import select

from airflow import settings
from airflow.dag_processing.dagbag import DagBag
from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
from cli.orchestrate import logical_date_for

run_date = date.fromisoformat(sys.argv[2])
bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
dag_run = bag.get_dag("producer").test(logical_date=logical_date_for(run_date),
                                      run_conf={"run_date": run_date.isoformat()})
with settings.Session() as session:
    events = [{"uri": event.asset.uri, "name": event.asset.name, "task": event.source_task_id, "extra": event.extra}
              for event in session.scalars(select(AssetEvent))]
    queued = [[queue.target_dag_id, session.get(AssetModel, queue.asset_id).name]
              for queue in session.scalars(select(AssetDagRunQueue))]
print(json.dumps({"state": str(dag_run.state), "run_id": dag_run.run_id, "events": events, "queued": queued}))
"""


def test_a_producing_run_records_asset_events_with_its_run_date_and_queues_the_consumer(tmp_path):
    """A real run on a throwaway AIRFLOW_HOME (SQLite): the events land in Airflow's asset_event table."""
    from core import assets

    home, dags = tmp_path / "airflow", tmp_path / "dags"
    dags.mkdir()
    (dags / "asset_dags.py").write_text(ASSET_DAGS)
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            # Airflow queues runs only for DAGs that are not paused.
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        }
    )
    home.mkdir()
    migrate = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, cwd=REPO_ROOT, capture_output=True, text=True)
    assert migrate.returncode == 0, migrate.stderr[-4000:]
    result = subprocess.run(
        [sys.executable, "-c", RUN_PRODUCER, str(dags), "2026-11-26"], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])

    assert outcome["state"] == "success"
    made = {"validate_gold": assets.gold_tables(), "publish": assets.crm_tables(), "export": [assets.EXPORTS]}
    assert sorted((event["task"], event["name"]) for event in outcome["events"]) == sorted(
        (task_id, asset.name) for task_id, produced in made.items() for asset in produced
    )
    for event in outcome["events"]:
        assert event["extra"] == {"run_date": "2026-11-26", "run_id": outcome["run_id"]}, event
    assert outcome["queued"] == [["mailing_sync", "shop-crm://exports"]]


def test_the_nightly_has_a_deadline_alert_calling_late_night(dag_bag):
    from airflow.sdk import DeadlineReference

    deadline = dag_bag.dags["crm_nightly"].deadline
    alert = deadline[0] if isinstance(deadline, list) else deadline
    # From when the run was queued (the 02:00 night: late at 07:00 UTC), not from its logical date: a backfill of
    # an old date would be past its deadline the moment it is created.
    assert alert.reference == DeadlineReference.DAGRUN_QUEUED_AT
    assert alert.interval.total_seconds() == 300 * 60  # airflow.night_deadline_minutes of conf/base.yaml
    assert alert.callback.path == "core.alerts.late_night"


#: Parse the nightly's file alone; print its deadline's interval (s) and the import errors.
PARSE_NIGHTLY = """
import json, sys
from airflow.dag_processing.dagbag import DagBag

bag = DagBag(dag_folder=sys.argv[1])
dag = bag.dags.get("crm_nightly")
print(json.dumps({"interval_s": dag and dag.deadline[0].interval.total_seconds(),
                  "schedule": dag and getattr(dag.timetable, "expression", None),
                  "errors": list(bag.import_errors.values())}))
"""


@pytest.mark.parametrize("minutes", ["90", "soon"])
def test_the_deadline_and_schedule_are_read_from_the_configuration_when_the_dag_is_parsed(minutes):
    env = {**os.environ, "CRM__AIRFLOW__NIGHT_DEADLINE_MINUTES": minutes, "CRM__AIRFLOW__NIGHTLY_SCHEDULE": "30 3 * * *"}
    result = subprocess.run(
        [sys.executable, "-c", PARSE_NIGHTLY, str(REPO_ROOT / "dags" / "crm_nightly.py")],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    parsed = json.loads(result.stdout.strip().splitlines()[-1])
    if minutes == "90":
        assert parsed == {"interval_s": 90 * 60, "schedule": "30 3 * * *", "errors": []}
    else:  # an invalid value is the file's import error (Airflow's UI shows it), naming the variable and the key
        assert parsed["interval_s"] is None and parsed["schedule"] is None
        assert (
            "CRM__AIRFLOW__NIGHT_DEADLINE_MINUTES: airflow.night_deadline_minutes: Input should be a valid integer" in parsed["errors"][0]
        )


def test_the_export_check_consumer_is_scheduled_on_the_exports_asset(dag_bag):
    """The shipped consumer (dags/crm_export_check.py): run by Airflow on each export, checking that night's folder."""
    from airflow.serialization.serialized_objects import DagSerialization

    consumer = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag_bag.dags["crm_export_check"]))
    assert [asset.uri for _, asset in consumer.timetable.asset_condition.iter_assets()] == ["shop-crm://exports/"]
    assert [task.task_id for task in consumer.tasks] == ["check_export"]
