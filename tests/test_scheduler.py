"""Nights through Airflow as in production (`crm airflow`): the scheduler, the DAG processor, the triggerer
and the API server on a PostgreSQL metadata database of their own (under the data root), each task a process
of its own (LocalExecutor), runs triggered through the REST API v2 with a JWT token.

The shop and the CRM database are PostgreSQL databases with a password, handed to the tasks only as the
Airflow connections `crm_shop` and `crm_db` (`AIRFLOW_CONN_*`). One Airflow serves the module; its two
nights (a 30-customer shop) are triggered at once: the second waits for the first (max_active_runs=1),
then one of its tasks is killed with SIGKILL and Airflow's retry completes it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import text

from core.db import engine
from tests.conftest import REPO, run_crm
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

    def run(self, run_id: str) -> dict:
        return self.call("GET", f"/api/v2/dags/crm_nightly/dagRuns/{run_id}")

    def wait_until_done(self, run_id: str, timeout_s: float = 1200) -> dict:
        deadline = time.monotonic() + timeout_s
        while (run := self.run(run_id))["state"] not in ("success", "failed"):
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} still {run['state']} after {timeout_s} s")
            time.sleep(3)
        return run

    def task_instances(self, run_id: str) -> dict[str, dict]:
        answer = self.call("GET", f"/api/v2/dags/crm_nightly/dagRuns/{run_id}/taskInstances?limit=100")
        return {ti["task_id"]: ti for ti in answer["task_instances"]}


@pytest.fixture(scope="module")
def airflow(postgres, tmp_path_factory):
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
        # A killed task is tried again after 5 s, not Airflow's 300; only the runs the test triggers run.
        "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "5",
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
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
    """Two runs of the same run date, triggered at once through the API: (first run id, second run id)."""
    api = airflow[0]
    wait_for(lambda: _dag_parsed(api), "the DAG processor to parse crm_nightly", timeout_s=240)
    assert api.call("PATCH", "/api/v2/dags/crm_nightly", {"is_paused": False})["is_paused"] is False
    runs = []
    for name in ("first", "second"):
        body = {"dag_run_id": f"api_{name}", "logical_date": None, "conf": {"run_date": SMALL_SHOP_DATE}}
        triggered = api.call("POST", "/api/v2/dags/crm_nightly/dagRuns", body)
        print(json.dumps(triggered, indent=2))
        runs.append(triggered["dag_run_id"])
    return tuple(runs)


def _dag_parsed(api: Api) -> bool:
    try:
        return api.call("GET", "/api/v2/dags/crm_nightly")["dag_id"] == "crm_nightly"
    except urllib.error.HTTPError:
        return False


def test_a_night_triggered_through_the_api_runs_under_the_scheduler_and_the_next_waits(airflow, nights):
    api, root, crm_url, password, crm_env = airflow
    first, second = nights
    wait_for(lambda: api.run(first)["state"] == "running", "the first run to start", timeout_s=120)
    assert api.run(second)["state"] == "queued"  # max_active_runs=1

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
    assert status.splitlines()[0].startswith(f"crm_nightly {first} for {SMALL_SHOP_DATE}: success")

    logs = [path for path in (root / "airflow" / "logs").rglob("*") if path.is_file()]
    assert any("dag_id=crm_nightly" in str(path) for path in logs)
    extract_log = next(path for path in logs if "run_id=api_first/task_id=extract" in str(path)).read_text()
    assert "CRM database: postgresql://crm:***@" in extract_log and "from Airflow connection crm_db" in extract_log
    leaking = [str(path) for path in logs if password in path.read_text(errors="replace")]
    assert not leaking, f"the CRM database's password is in {leaking}"


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


def crm_rows(crm_url: str, table: str) -> list[dict]:
    with engine(crm_url).connect() as connection:
        return [dict(row._mapping) for row in connection.execute(text(f"SELECT * FROM crm.{table} ORDER BY customer_id"))]


def _without_run(row: dict) -> dict:
    return {key: value for key, value in row.items() if key != "run_id"}
