"""Running the nightly DAG through Airflow from the command line, on a local AIRFLOW_HOME.

`crm run --date D` uses Airflow's own `dag.test()`: one DAG run with every task, with the run's state and
task logs in Airflow's metadata database (SQLite under the data root), where `airflow` commands after
`eval "$(crm airflow-env)"` find them. (`crm airflow`, Airflow as in production, keeps its own PostgreSQL
metadata database: cli/airflow_server.py.) The run happens in a child process whose output goes to `<data>/logs/`, so the terminal shows
progress and the summary, and a failure shows the end of the log.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import subprocess
import sys
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

from core import nightlock
from core.config import REPO_ROOT, Settings, load_config
from core.private import make_private_dir

DAGS_FOLDER = REPO_ROOT / "dags"


class PipelineRunError(RuntimeError):
    """The DAG run did not succeed; the message names the failed tasks and where their logs are."""


def airflow_environment(settings: Settings) -> dict[str, str]:
    """Environment variables that point Airflow at the project's DAGs and a local SQLite metadata DB."""
    home = Path(settings.airflow.home)
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        # SQLite metadata: one task at a time ("database is locked" otherwise).
        "AIRFLOW__CORE__PARALLELISM": "1",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        # Task logs quote what the jobs log: for this user alone, whatever the umask of the shell (core/private.py).
        "AIRFLOW__LOGGING__FILE_TASK_HANDLER_NEW_FOLDER_PERMISSIONS": "0o700",
        "AIRFLOW__LOGGING__FILE_TASK_HANDLER_NEW_FILE_PERMISSIONS": "0o600",
    }


def prepare_airflow(settings: Settings) -> dict[str, str]:
    """Set Airflow's environment in this process and create its metadata database when missing."""
    environment = airflow_environment(settings)
    os.environ.update(environment)
    make_private_dir(settings.data_dir)
    home = Path(environment["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    marker = home / ".migrated"
    if not marker.exists():
        result = subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"], env={**os.environ, **environment}, capture_output=True, text=True
        )
        if result.returncode != 0:
            raise PipelineRunError(f"airflow db migrate failed in {home}:\n{result.stderr[-3000:]}")
        marker.touch()
    return environment


def logical_date_for(run_date: date) -> datetime:
    """The scheduled start of the night that processes `run_date`: 02:00 UTC the day after."""
    return datetime.combine(run_date + timedelta(days=1), time(2, 0), tzinfo=timezone.utc)


def run_nightly(settings: Settings, run_date: date, full: bool = False) -> str:
    """Run the nightly DAG for `run_date` through Airflow; returns the run id or raises PipelineRunError.

    `full` reloads every shop table whole instead of the changes since the last night.
    """
    return run_dag(settings, settings.airflow.dag_id, run_date, {"full": full})


def run_training(settings: Settings, run_date: date) -> str:
    """Run the training DAG (churn challenger, champion decision) for `run_date`; returns the run id."""
    return run_dag(settings, settings.airflow.training_dag_id, run_date, {})


def run_dag(settings: Settings, dag_id: str, run_date: date, conf: dict) -> str:
    """One run of a project DAG for `run_date` through `dag.test()`; returns the run id or raises PipelineRunError."""
    prepare_airflow(settings)
    # deferred: Airflow reads AIRFLOW_HOME and its config when imported, which prepare_airflow has just set
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.state import DagRunState, TaskInstanceState

    bag = DagBag(dag_folder=str(DAGS_FOLDER / f"{dag_id}.py"))
    if bag.import_errors:
        raise PipelineRunError(f"DAG import errors: {bag.import_errors}")
    dag = bag.get_dag(dag_id)
    if dag is None:
        raise PipelineRunError(f"no DAG {dag_id!r} in {DAGS_FOLDER / f'{dag_id}.py'}")
    # An interactive run reports a failure at once; the scheduler's runs keep the DAG's retries.
    for task in dag.tasks:
        task.retries = 0
    # No deadline alert either: no triggerer runs beside dag.test(), and dag.test() of Airflow 3.3 cannot end
    # a run of a DAG with one (it looks the alert up by the alert itself instead of its id: AttributeError).
    dag.deadline = None
    dag_run = dag.test(logical_date=logical_date_for(run_date), run_conf={"run_date": run_date.isoformat(), **conf})
    ran = [ti.task_id for ti in dag_run.get_task_instances() if ti.state == TaskInstanceState.SUCCESS]
    if dag_run.state == DagRunState.SUCCESS and not ran:
        raise PipelineRunError(
            f"DAG run {dag_run.run_id} for {run_date} ran no task (is {run_date} before the "
            f"DAG's start_date?); logs under {Path(settings.airflow.home) / 'logs'}"
        )
    if dag_run.state != DagRunState.SUCCESS:
        failed = [ti.task_id for ti in dag_run.get_task_instances() if ti.state == TaskInstanceState.FAILED]
        raise PipelineRunError(
            f"DAG run {dag_run.run_id} for {run_date} ended {dag_run.state}; failed task(s): {', '.join(failed) or '?'}; "
            f"logs under {Path(settings.airflow.home) / 'logs'}"
        )
    return dag_run.run_id


def run_nightly_logged(settings: Settings, run_date: date, full: bool = False, training: bool = False) -> tuple[str, Path]:
    """Run the nightly (or, with `training`, the training DAG) for `run_date` in a child process logging to
    `<data>/logs/`; returns (run id, log)."""
    logs = settings.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    log = logs / f"{'training' if training else 'nightly'}-{run_date.isoformat()}-{stamp}.log"
    result_file = log.with_suffix(".json")
    flags = [*(["--full"] if full else []), *(["--training"] if training else [])]
    with log.open("w", encoding="utf-8") as out:
        # The child holds the data root's lock with this process (a night lives while either runs) and dies
        # with it: a killed `crm run` leaves no night running behind its back.
        child = subprocess.run(
            [sys.executable, "-m", "cli.orchestrate", run_date.isoformat(), str(result_file), *flags, f"--parent={os.getpid()}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            pass_fds=nightlock.held_fds(),
        )
    outcome = json.loads(result_file.read_text()) if result_file.exists() else {}
    result_file.unlink(missing_ok=True)
    if child.returncode != 0 or "run_id" not in outcome:
        reason = outcome.get("error") or f"the run exited with code {child.returncode}"
        causes = _exceptions_in(log.read_text(encoding="utf-8", errors="replace"))
        cause = f"\ncause: {causes[-1]}" if causes else ""
        raise PipelineRunError(f"{reason}{cause}\nfull log: {log}")
    return outcome["run_id"], log


def _exceptions_in(text: str) -> list[str]:
    """The 'SomeError: message' lines of Python tracebacks in a log, in order."""
    pattern = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception)): (.+)$")
    return [line.strip() for line in text.splitlines() if pattern.match(line.strip())]


def _main(argv: list[str]) -> int:
    """Child process entry: run the nightly (or with --training the training) DAG for argv[0] (a date);
    write {"run_id"} or {"error"} to argv[1]."""
    run_date, result_file = date.fromisoformat(argv[0]), Path(argv[1])
    parent = next((int(arg.removeprefix("--parent=")) for arg in argv[2:] if arg.startswith("--parent=")), None)
    if parent is not None:
        _die_with(parent)
    try:
        settings = load_config()
        if "--training" in argv[2:]:
            run_id = run_training(settings, run_date)
        else:
            run_id = run_nightly(settings, run_date, full="--full" in argv[2:])
    except PipelineRunError as error:
        result_file.write_text(json.dumps({"error": str(error)}))
        return 1
    result_file.write_text(json.dumps({"run_id": run_id}))
    return 0


def _die_with(parent: int) -> None:
    """Be killed when the parent process ends (Linux's PR_SET_PDEATHSIG), or end now if it has already."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:
        sys.exit(1)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
