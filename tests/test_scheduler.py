"""Nights through Airflow as in production (`crm airflow`): the scheduler, the DAG processor, the triggerer
and the API server on a PostgreSQL metadata database of their own (under the data root), each task a process
of its own (LocalExecutor), runs triggered through the REST API v2 with a JWT token.

The shop and the CRM database are PostgreSQL databases with a password, handed to the tasks only as the
Airflow connections `crm_shop` and `crm_db` (`AIRFLOW_CONN_*`). One Airflow serves the module; its two
nights (a 30-customer shop) are triggered at once: the second waits for the first (max_active_runs=1),
then one of its tasks is killed with SIGKILL and Airflow's retry completes it. The first is a backfill (a
logical date two weeks back) that sends no late-night alert. Under the same scheduler: the shipped consumer
DAG `crm_export_check` runs from each night's export asset event, `crm status` shows each task as the REST API
does, and the weekly training DAG waits for Sunday while a run triggered through the API registers a model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import text

from cli.orchestrate import logical_date_for
from core.db import engine
from tests.conftest import REPO, run_crm
from tests.test_alerts import Webhook
from tests.test_cli import SMALL_SHOP_DATE, lock_record, wait_for

#: The night's tasks (the DAG's), each of which must end in success.
NIGHT_TASKS = 18


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Api:
    """The REST API v2 of a running Airflow, as a client: a JWT token from /auth/token on every request."""

    def __init__(self, base: str, password: str):
        self.base = base
        self.token = self.call("POST", "/auth/token", {"username": "admin", "password": password}, auth=False)["access_token"]

    def call(self, method: str, path: str, body: dict | None = None, auth: bool = True):
        request = urllib.request.Request(
            self.base + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {self.token}"} if auth else {})},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read() or b"null")

    def run(self, run_id: str, dag_id: str = "crm_nightly") -> dict:
        return self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")

    def wait_until_done(self, run_id: str, timeout_s: float = 1200, dag_id: str = "crm_nightly") -> dict:
        deadline = time.monotonic() + timeout_s
        while (run := self.run(run_id, dag_id))["state"] not in ("success", "failed"):
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} still {run['state']} after {timeout_s} s")
            time.sleep(3)
        return run

    def task_instances(self, run_id: str, dag_id: str = "crm_nightly") -> dict[str, dict]:
        answer = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100")
        return {ti["task_id"]: ti for ti in answer["task_instances"]}

    def returned(self, dag_id: str, run_id: str, task_id: str):
        """What the task returned (its XCom `return_value`), as the UI shows it."""
        return self.call(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value?deserialize=true"
        )["value"]


@pytest.fixture(scope="module")
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


@pytest.fixture(scope="module")
def airflow(postgres, tmp_path_factory, webhook):
    """`crm airflow` on a fresh data root, its shop and CRM databases given only as Airflow connections; yields
    (API client, data root, CRM URL, its password, the environment of `crm` commands)."""
    for database in ("sched_shop", "sched_crm"):
        postgres.create_database(database)
    shop_url, crm_url = postgres.url("sched_shop"), postgres.url("sched_crm")
    run_crm("generate-shop", "--customers", "30", "--end-date", SMALL_SHOP_DATE, "--url", shop_url)
    # The metadata PostgreSQL runs as the postgres user when the tests run as root: a data root it can reach.
    root = Path(tempfile.mkdtemp(prefix="crm-sched-", dir="/tmp"))
    root.chmod(0o711)
    api_port = free_port()
    environment = {
        **{key: value for key, value in os.environ.items() if key not in ("CRM_SHOP_URL", "CRM_DB_URL")},
        "CRM_DATA_DIR": str(root),
        "CRM__AIRFLOW__API_PORT": str(api_port),
        "CRM__AIRFLOW__METADATA_PORT": str(free_port()),
        # Credentials only as connections, in the two forms Airflow reads from the environment (URI, JSON).
        "AIRFLOW_CONN_CRM_SHOP": shop_url.replace("postgresql+psycopg2://", "postgresql://"),
        "AIRFLOW_CONN_CRM_DB": json.dumps(
            {
                "conn_type": "postgres",
                "host": postgres.host,
                "port": postgres.port,
                "login": postgres.user,
                "password": postgres.password,
                "schema": "sched_crm",
            }
        ),
        # A killed task is tried again after 5 s, not Airflow's 300.
        "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "5",
        # The scheduler creates runs (the consumer's from asset events, the training's weekly ones), but no nightly
        # of its own: unpaused with catchup off, it would run today's 02:00 night at once beside the test's.
        "CRM__AIRFLOW__NIGHTLY_SCHEDULE": "",
        "CRM__AIRFLOW__ALERT_WEBHOOK_URL": webhook.url,
    }
    log = (tmp_path_factory.mktemp("crm-airflow") / "crm-airflow.log").open("w")
    started = time.monotonic()
    server = subprocess.Popen([str(Path(sys.executable).with_name("crm")), "airflow"], env=environment, cwd=REPO, stdout=log, stderr=log)
    try:
        wait_for(lambda: (root / "airflow" / "passwords.json").exists() and _answers(api_port), "the API server", timeout_s=240)
        print(f"crm airflow up in {time.monotonic() - started:.1f} s")
        password = json.loads((root / "airflow" / "passwords.json").read_text())["admin"]
        yield (
            Api(f"http://127.0.0.1:{api_port}", password),
            root,
            crm_url,
            postgres.password,
            {"CRM_DATA_DIR": str(root), "CRM_DB_URL": crm_url},
        )
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=5) as answer:
            return answer.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def nights(airflow):
    """Two runs of the same run date, triggered at once through the API: (first run id, second run id).

    The first is a backfill: its logical date is the night's own, two weeks back. The consumer of the exports
    is unpaused first, so each night's export queues a run of it."""
    api = airflow[0]
    for dag_id in ("crm_nightly", "crm_export_check"):
        wait_for(lambda: _dag_parsed(api, dag_id), f"the DAG processor to parse {dag_id}", timeout_s=240)
        assert api.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})["is_paused"] is False
    runs = []
    for name, logical_date in (("first", logical_date_for(date.fromisoformat(SMALL_SHOP_DATE)).isoformat()), ("second", None)):
        body = {"dag_run_id": f"api_{name}", "logical_date": logical_date, "conf": {"run_date": SMALL_SHOP_DATE}}
        triggered = api.call("POST", "/api/v2/dags/crm_nightly/dagRuns", body)
        print(json.dumps(triggered, indent=2))
        runs.append(triggered["dag_run_id"])
    return tuple(runs)


def _dag_parsed(api: Api, dag_id: str) -> bool:
    try:
        return api.call("GET", f"/api/v2/dags/{dag_id}")["dag_id"] == dag_id
    except urllib.error.HTTPError:
        return False


def test_a_night_triggered_through_the_api_runs_under_the_scheduler_and_the_next_waits(airflow, nights, webhook):
    api, root, crm_url, password, crm_env = airflow
    first, second = nights
    wait_for(lambda: api.run(first)["state"] == "running", "the first run to start", timeout_s=120)
    assert api.run(second)["state"] == "queued"  # max_active_runs=1
    # A backfill (a logical date two weeks back) is not late at once: its deadline runs from when it was queued
    # (Airflow removes a run's deadlines when it ends: look while it runs).
    queued_at = datetime.fromisoformat(api.run(first)["queued_at"])
    deadlines = api.call("GET", f"/ui/dags/crm_nightly/dagRuns/{first}/deadlines")["deadlines"]  # the UI's own view
    print(json.dumps(deadlines, indent=2))
    assert [(datetime.fromisoformat(d["deadline_time"]), d["missed"]) for d in deadlines] == [(queued_at + timedelta(minutes=300), False)]

    started = time.monotonic()
    assert api.wait_until_done(first)["state"] == "success", api.task_instances(first)
    print(f"first night: {time.monotonic() - started:.0f} s after it started running")
    tries = {task: (ti["state"], ti["try_number"]) for task, ti in api.task_instances(first).items()}
    # Each on its first try: a new data root's MLflow store is created before the parallel tasks (spark_up).
    assert tries == {task: ("success", 1) for task in tries} and len(tries) == NIGHT_TASKS

    segments = crm_rows(crm_url, "customer_segments")
    with engine(crm_url.replace("sched_crm", "sched_shop")).connect() as shop:
        customers = shop.execute(text("SELECT count(*) FROM customers")).scalar()
    assert len(segments) == customers and {row["as_of"].isoformat() for row in segments} == {SMALL_SHOP_DATE}
    assert {row["run_id"] for row in segments} == {first}
    status = run_crm("status", env=crm_env).stdout
    print(status)
    # The second night may have begun already (its spark_up is in the run log): find the first's block.
    assert any(line.startswith(f"crm_nightly {first} for {SMALL_SHOP_DATE}: success") for line in status.splitlines())

    logs = [path for path in (root / "airflow" / "logs").rglob("*") if path.is_file()]
    assert any("dag_id=crm_nightly" in str(path) for path in logs)
    extract_log = next(path for path in logs if "run_id=api_first/task_id=extract" in str(path)).read_text()
    assert "CRM database: postgresql://crm:***@" in extract_log and "from Airflow connection crm_db" in extract_log
    leaking = [str(path) for path in logs if password in path.read_text(errors="replace")]
    assert not leaking, f"the CRM database's password is in {leaking}"
    assert webhook.received == []  # the backfill sent no night_late (nor any task a task_failed)


def test_a_task_killed_mid_run_is_retried_by_airflow_and_the_night_completes_with_the_same_rows(airflow, nights):
    api, root, crm_url, _, _ = airflow
    first, second = nights
    assert api.wait_until_done(first)["state"] == "success"
    before = crm_rows(crm_url, "customer_segments")

    wait_for(
        lambda: lock_record(root).get("run_id") == second and lock_record(root).get("task") == "clean", "the second night's clean", 900
    )
    time.sleep(2)  # into its MERGE
    killed = lock_record(root)
    os.kill(killed["pid"], signal.SIGKILL)

    assert api.wait_until_done(second)["state"] == "success", api.task_instances(second)
    clean = api.task_instances(second)["clean"]
    assert clean["state"] == "success" and clean["try_number"] == 2
    after = crm_rows(crm_url, "customer_segments")
    assert [_without_run(row) for row in after] == [_without_run(row) for row in before]
    assert {row["run_id"] for row in after} == {second}


def test_crm_status_shows_every_task_of_each_night_as_airflow_does(airflow, nights):
    """`crm status` (the run log) and the UI (the REST API's task instances) agree on the task set, each state and
    the killed task's second try."""
    api, _, _, _, crm_env = airflow
    first, second = nights
    assert api.wait_until_done(second)["state"] == "success"
    status = run_crm("status", "--runs", "10", env=crm_env).stdout
    print(status)
    shown = status_by_run(status)
    for run_id in nights:
        in_airflow = {task: (ti["state"], ti["try_number"]) for task, ti in api.task_instances(run_id).items()}
        assert shown[run_id] == in_airflow, run_id
        assert len(in_airflow) == NIGHT_TASKS and {state for state, _ in in_airflow.values()} == {"success"}
    assert shown[second]["clean"] == ("success", 2)


def status_by_run(status: str) -> dict[str, dict[str, tuple[str, int]]]:
    """`crm status` read back: per run id, per task, (state, try number)."""
    runs: dict[str, dict[str, tuple[str, int]]] = {}
    for line in status.splitlines():
        if not line.startswith(" "):
            current = runs.setdefault(line.split()[1], {})
        else:
            tried = re.search(r"\(try (\d+)\)$", line)
            current[line.split()[0]] = (line.split()[1], int(tried.group(1)) if tried else 1)
    return runs


def test_each_export_runs_the_consumer_dag_from_its_asset_event_with_the_nights_run_date(airflow, nights):
    """dags/crm_export_check.py, unpaused before the nights: the scheduler runs it from the export's asset event
    (no one triggers it), and it checks that night's folder, whose date it took from the event's extra."""
    api, root, crm_url, _, _ = airflow
    first, second = nights
    assert api.wait_until_done(second)["state"] == "success"

    def consumer_runs() -> list[dict]:
        return api.call("GET", "/api/v2/dags/crm_export_check/dagRuns?limit=20")["dag_runs"]

    def events_of(run_id: str) -> list[dict]:
        return api.call("GET", f"/api/v2/dags/crm_export_check/dagRuns/{run_id}/upstreamAssetEvents")["asset_events"]

    def every_export_consumed() -> bool:
        runs = consumer_runs()
        if any(run["state"] not in ("success", "failed") for run in runs):
            return False
        return {event["source_run_id"] for run in runs for event in events_of(run["dag_run_id"])} == {first, second}

    wait_for(every_export_consumed, "the consumer runs of both nights' exports", timeout_s=300)
    with engine(crm_url.replace("sched_crm", "sched_shop")).connect() as shop:
        customers = shop.execute(text("SELECT count(*) FROM customers")).scalar()
    for run in consumer_runs():
        events = events_of(run["dag_run_id"])
        checked = api.returned("crm_export_check", run["dag_run_id"], "check_export")
        print(run["dag_run_id"], run["run_type"], json.dumps(checked))
        assert (run["run_type"], run["state"], run["logical_date"]) == ("asset_triggered", "success", None)
        assert {(event["uri"], event["source_task_id"], event["extra"]["run_date"]) for event in events} == {
            ("shop-crm://exports/", "export", SMALL_SHOP_DATE)
        }
        assert checked["run_date"] == SMALL_SHOP_DATE and checked["export_run_id"] in {event["source_run_id"] for event in events}
        assert checked["rows"]["customer_segments"] == customers and checked["files_checked"] > 20


def test_the_weekly_training_is_scheduled_for_sunday_and_a_run_triggered_through_the_api_registers_its_model(airflow, nights, webhook):
    from mlflow import MlflowClient

    from core.config import load_config
    from models import tracking

    api, root, _, _, _ = airflow
    assert api.wait_until_done(nights[1])["state"] == "success"
    assert api.call("PATCH", "/api/v2/dags/crm_training", {"is_paused": False})["is_paused"] is False
    now = datetime.now(timezone.utc)
    sunday = datetime.combine(now.date() + timedelta(days=(6 - now.weekday()) % 7), datetime.min.time(), timezone.utc) + timedelta(hours=4)
    sunday += timedelta(days=7) if sunday <= now else timedelta(0)  # the coming Sunday, 04:00 UTC

    def scheduled_runs() -> list[dict]:
        runs = api.call("GET", "/api/v2/dags/crm_training/dagRuns?limit=20")["dag_runs"]
        return [run for run in runs if run["run_type"] == "scheduled"]

    # With catchup off, unpausing runs the latest missed Sunday at once; the next run is the coming Sunday's.
    wait_for(lambda: scheduled_runs(), "the scheduler to run the latest missed Sunday", timeout_s=120)
    training = api.call("GET", "/api/v2/dags/crm_training")
    print({key: value for key, value in training.items() if key.startswith("next_dagrun")})
    assert [datetime.fromisoformat(run["logical_date"]) for run in scheduled_runs()] == [sunday - timedelta(days=7)]
    assert datetime.fromisoformat(training["next_dagrun_run_after"]) == sunday  # "0 4 * * 0"

    body = {"dag_run_id": "api_training", "logical_date": None, "conf": {"run_date": SMALL_SHOP_DATE}}
    api.call("POST", "/api/v2/dags/crm_training/dagRuns", body)
    done = api.wait_until_done("api_training", 1200, dag_id="crm_training")  # after the scheduled one (max_active_runs=1)
    assert done["state"] == "success", api.task_instances("api_training", "crm_training")
    assert [run["state"] for run in scheduled_runs()] == ["success"]
    decision = api.returned("crm_training", "api_training", "train_churn")
    print(json.dumps(decision, indent=2))

    settings = load_config(environ={**os.environ, "CRM_DATA_DIR": str(root)})
    client = MlflowClient(settings.mlflow.tracking_uri, settings.mlflow.tracking_uri)
    name, _, version = decision["challenger"].partition("/")
    assert client.get_model_version(name, version).tags["decision"] == decision["decision"]
    champion = tracking.version_label(tracking.champion(client, settings.mlflow.churn_model))
    assert (champion == decision["challenger"]) is decision["promoted"]

    # Alerts: none for the whole module (a killed try that Airflow retried alerts nobody), and the webhook's
    # token, which every component and task had in its environment, is in no log.
    assert webhook.received == []
    logs = [path for path in (root / "airflow" / "logs").rglob("*") if path.is_file()]
    assert not [str(path) for path in logs if Webhook.TOKEN in path.read_text(errors="replace")]


def crm_rows(crm_url: str, table: str) -> list[dict]:
    with engine(crm_url).connect() as connection:
        return [dict(row._mapping) for row in connection.execute(text(f"SELECT * FROM crm.{table} ORDER BY customer_id"))]


def _without_run(row: dict) -> dict:
    return {key: value for key, value in row.items() if key != "run_id"}
