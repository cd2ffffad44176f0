"""The command line answers bad input with one clear message and a meaningful exit code."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

import pytest

from conftest import REPO, run_crm


def test_a_bad_date_is_a_usage_error_naming_the_option():
    result = run_crm("run", "--date", "2026-13-01", check=False)
    assert result.returncode == 2
    assert "--date: '2026-13-01' is not a date; expected YYYY-MM-DD" in result.stderr


def test_a_bad_setting_names_the_variable_and_key_without_a_traceback():
    result = run_crm("run", env={"CRM__SPARK__SHUFFLE_PARTITIONS": "abc"}, check=False)
    assert result.returncode == 1
    assert "CRM__SPARK__SHUFFLE_PARTITIONS: spark.shuffle_partitions" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_run_against_a_missing_shop_fails_naming_the_task_and_the_cause(tmp_path):
    result = run_crm(
        "run",
        "--date",
        "2026-11-20",
        env={"CRM_DATA_DIR": str(tmp_path), "CRM_SHOP_URL": f"sqlite:///{tmp_path}/missing.sqlite"},
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "failed task(s): extract" in result.stderr
    assert f"cause: core.mapping.SourceSchemaError: shop database sqlite:///{tmp_path}/missing.sqlite: no such SQLite file" in result.stderr
    assert not (tmp_path / "missing.sqlite").exists()
    assert not (tmp_path / "lake").exists()
    # The run log has the failed stage and why; nothing after it ran but the teardown, which runs anyway.
    status = run_crm("status", env={"CRM_DATA_DIR": str(tmp_path)})
    night, *stages = status.stdout.splitlines()
    assert night.startswith("crm_nightly ") and " for 2026-11-20: failed" in night
    assert [line.split()[:2] for line in stages] == [["spark_up", "success"], ["extract", "failed"], ["spark_down", "success"]]
    assert "missing.sqlite: no such SQLite file" in stages[1]


def test_doctor_names_what_is_missing_and_exits_1(tmp_path):
    result = run_crm(
        "doctor", "--quick", env={"CRM_DATA_DIR": str(tmp_path), "CRM_SHOP_URL": f"sqlite:///{tmp_path}/missing.sqlite"}, check=False
    )
    assert result.returncode == 1, result.stdout + result.stderr
    outcome, verdict = doctor_outcome(result)
    assert outcome == {
        "configuration": "ok",
        "campaigns": "ok",
        "data root": "ok",
        "shop database": "FAIL",
        "CRM database": "ok",
        "java": "ok",
        "spark server": "ok",  # the test session's shared Spark Connect server (spark.remote) answers
        "airflow": "ok",
        "mlflow": "ok",
        "disk": "ok",
        "private files": "ok",
    }, result.stdout
    assert "missing.sqlite: no such SQLite file" in result.stdout
    assert verdict == "1 check(s) failed" and "Traceback" not in result.stderr
    assert "the first publish creates it" in result.stdout and "the first churn training creates it" in result.stdout
    assert "its metadata database is created by the first night" in result.stdout
    assert sorted(path.name for path in tmp_path.iterdir()) == []  # checking creates nothing: no shop, CRM or MLflow store


def doctor_outcome(result) -> tuple[dict[str, str], str]:
    """`crm doctor`'s verdict per check (ok or FAIL) and its last line."""
    *checks, verdict = result.stdout.splitlines()
    return {line[4:].split("  ")[0].strip(): line[:4].strip() for line in checks}, verdict


def test_config_prints_the_settings_with_passwords_masked():
    result = run_crm(
        "config",
        env={
            "CRM_SHOP_URL": "mysql://reader:s3cret-shop@shop/shop",
            "CRM_DB_URL": "postgresql+psycopg2://writer:s3cret-crm@db/crm",
            "CRM__MLFLOW__TRACKING_URI": "postgresql://tracker:s3cret-mlflow@db/mlflow?sslmode=require",
            "CRM__SPARK__REMOTE": "sc://spark:15002/;token=s3cret-spark",
            "CRM__MLFLOW__ARTIFACT_ROOT": "s3://models/crm?X-Amz-Credential=s3cret-artifacts",
            "CRM__SPARK__EXTRA": "{spark.hadoop.fs.s3a.secret.key: s3cret-s3a, spark.ui.enabled: 'false'}",
        },
    )
    for shown in (
        "mysql://reader:***@shop/shop",
        "postgresql+psycopg2://writer:***@db/crm",
        "postgresql+psycopg2://tracker:***@db/mlflow?sslmode=require",  # the driver a plain URL gets
        "sc://spark:15002/;token=***",
        "s3://models/crm?X-Amz-Credential=***",
        "spark.hadoop.fs.s3a.secret.key: '***'",
        "spark.ui.enabled: 'false'",
    ):
        assert shown in result.stdout
    assert "s3cret" not in result.stdout


def test_the_doctor_warns_about_a_data_root_others_can_read_and_leaves_it_as_it_is(tmp_path):
    tmp_path.chmod(0o755)
    result = run_crm("doctor", "--quick", env={"CRM_DATA_DIR": str(tmp_path)}, check=False)
    line = next(line for line in result.stdout.splitlines() if line[4:].startswith(" private files"))
    assert line.startswith("warn") and "group r-x, others r-x" in line and f"chmod go-rwx {tmp_path}" in line
    assert tmp_path.stat().st_mode & 0o777 == 0o755


def test_what_the_crm_command_writes_is_private_whatever_the_callers_umask(tmp_path):
    root = tmp_path / "data"
    run_crm("generate-shop", "--customers", "20", "--events", "files", "--events-days", "2", env={"CRM_DATA_DIR": str(root)})
    assert root.stat().st_mode & 0o777 == 0o700
    written = [path for path in root.rglob("*")]
    assert any(path.name == "shop.sqlite" for path in written) and any(path.suffix == ".ndjson" for path in written)
    assert [f"{path} {path.stat().st_mode & 0o777:o}" for path in written if path.stat().st_mode & 0o077] == []


def test_a_backfill_runs_the_dates_in_order_and_stops_at_the_first_failure(tmp_path):
    result = run_crm(
        "run",
        "--from",
        "2026-11-20",
        "--to",
        "2026-11-22",
        env={"CRM_DATA_DIR": str(tmp_path), "CRM_SHOP_URL": f"sqlite:///{tmp_path}/missing.sqlite"},
        check=False,
    )
    assert result.returncode == 1
    assert "for 2026-11-20 (1/3)" in result.stderr
    assert "2026-11-21" not in result.stderr
    # The progress bar where stderr is no terminal: click prints only its label, once per night.
    head, bar, error, *cause, hint = result.stderr.splitlines()
    assert head == (
        f"backfill of 3 nights, 2026-11-20 to 2026-11-22, through Airflow (home {tmp_path / 'airflow'}; logs in {tmp_path / 'logs'}) ..."
    )
    assert bar == "crm_nightly for 2026-11-20 (1/3)"
    assert error.startswith("error: backfill stopped at 2026-11-20 (night 1 of 3): DAG run ")
    assert "failed task(s): extract" in error and "Traceback" not in result.stderr
    assert hint == ("the nights after it did not run; once it is fixed, go on with: crm run --from 2026-11-20 --to 2026-11-22")
    assert result.stdout == ""  # a line per finished night: none finished


def test_backfill_options_that_contradict_each_other_are_usage_errors():
    for args, message in [
        (("--from", "2026-11-20"), "--from and --to go together"),
        (("--from", "2026-11-22", "--to", "2026-11-20"), "--from 2026-11-22 is after --to 2026-11-20"),
        (("--date", "2026-11-20", "--from", "2026-11-20", "--to", "2026-11-21"), "either --date or --from/--to"),
    ]:
        result = run_crm("run", *args, check=False)
        assert result.returncode == 2 and message in result.stderr, args


def test_a_differently_named_shop_is_regenerated_only_with_replace(tmp_path):
    url = f"sqlite:///{tmp_path}/woo.sqlite"
    args = ("generate-shop", "--customers", "30", "--schema", "woocommerce", "--url", url, "--truth-dir", str(tmp_path / "truth"))
    run_crm(*args, env={"CRM_DATA_DIR": str(tmp_path)})
    again = run_crm(*args, env={"CRM_DATA_DIR": str(tmp_path)}, check=False)
    assert again.returncode == 1
    assert "wc_" in again.stderr and "--replace" in again.stderr and "Traceback" not in again.stderr
    replaced = run_crm(*args, "--replace", env={"CRM_DATA_DIR": str(tmp_path)})
    assert "wc_orders" in replaced.stdout


def test_status_says_what_each_model_and_the_campaigns_did():
    """`crm status` turns the model jobs' and the campaigns' summaries into one readable line each."""
    import json
    from datetime import date, datetime

    from core.runlog import render_status

    started = datetime(2026, 11, 27, 2, 0)

    def stage(name: str, summary) -> dict:
        return {
            "stage": name,
            "state": "success",
            "seconds": 12.0,
            "try_number": 1,
            "error": None,
            "summary": json.dumps(summary),
            "started_at": started,
            "finished_at": started,
            "dag_id": "crm_nightly",
            "run_date": date(2026, 11, 26),
        }

    text = render_status(
        [
            {
                "run_id": "night-1",
                "stages": [
                    stage(
                        "recommend",
                        {
                            "rows": {"recommendations": 50000},
                            "customers_by_reason": {"popular": 535},
                            "figures": {"als_recall_at_10": 0.1782, "popularity_recall_at_10": 0.111},
                            "degraded": {},
                        },
                    ),
                    stage(
                        "offers",
                        {
                            "offers": {"summer_15pct": 1257, "winback_20cny": 509},
                            "expected_cost": 19999.92,
                            "figures": {"qini": 0.09, "random_qini": 0.002},
                            "degraded": {},
                        },
                    ),
                    stage(
                        "insights",
                        {
                            "rows": {"review_alerts": 0},
                            "figures": {},
                            "degraded": {"reviews": "3 reviews: too few to learn sentiment from"},
                        },
                    ),
                    stage("campaigns", {"win_back": {"treatment": 2}, "vip": {"treatment": 164, "control": 9, "suppressed": 77}}),
                    stage(
                        "score",  # a figure that could not be computed is null in the run log (core.airflow_task)
                        {"rows": {"customer_segments": 70}, "figures": {"silhouette": None}, "degraded": {}},
                    ),
                ],
            }
        ]
    )
    lines = {line.split()[0]: line for line in text.splitlines()[1:]}
    assert "recommendations 50,000; als_recall_at_10 0.178, popularity_recall_at_10 0.111" in lines["recommend"]
    assert "1,766 offers; qini 0.090, random_qini 0.002" in lines["offers"]
    assert "review_alerts 0; degraded: reviews" in lines["insights"]
    assert "2 campaigns, to contact: win_back 2, vip 164" in lines["campaigns"]
    assert "customer_segments 70; silhouette n/a" in lines["score"]


def test_status_does_not_call_a_night_without_its_teardown_a_success():
    """Between two tasks, or when later tasks failed before they could write the run log (an invalid
    configuration), every recorded task succeeded; the night is still not a success until spark_down ran."""
    from datetime import date, datetime

    from core.runlog import UNFINISHED, render_status

    started = datetime(2026, 12, 4, 2, 0)

    def stage(name: str) -> dict:
        return {
            **dict(state="success", seconds=1.0, try_number=1, error=None, summary="{}", started_at=started, finished_at=started),
            **dict(stage=name, dag_id="crm_nightly", run_date=date(2026, 12, 3)),
        }

    partial = {"run_id": "night-2", "stages": [stage("spark_up"), stage("extract")]}
    whole = {"run_id": "night-1", "stages": [stage("spark_up"), stage("extract"), stage("spark_down")]}
    older = {"run_id": "night-0", "stages": [stage("extract")]}  # recorded before spark_up/down wrote the run log

    headlines = [line for line in render_status([partial, whole, older]).splitlines() if not line.startswith(" ")]
    assert headlines[0].startswith(f"crm_nightly night-2 for 2026-12-03: {UNFINISHED}")
    assert headlines[1].startswith("crm_nightly night-1 for 2026-12-03: success")
    assert headlines[2].startswith("crm_nightly night-0 for 2026-12-03: success")
    assert render_status([partial], live_run_id="night-2").splitlines()[0].startswith("crm_nightly night-2 for 2026-12-03: running")


def test_the_summary_names_what_the_night_could_not_compute_and_why():
    """A shop without reviews or categories: the run summary lists each task's `degraded` reasons."""
    import json

    from core.runlog import render_degraded

    stages = [
        {"stage": "events", "summary": json.dumps({"source": "none"})},
        {"stage": "predict", "summary": json.dumps({"figures": {"roc_auc": 0.8}, "degraded": {}})},
        {
            "stage": "insights",
            "summary": json.dumps({"rows": {}, "figures": {}, "degraded": {"reviews": "0 reviews: nothing to learn from"}}),
        },
        {"stage": "recommend", "summary": json.dumps({"degraded": {"category_propensity": "no product has a category"}})},
        {"stage": "features", "summary": json.dumps(23570)},
        {"stage": "publish", "summary": None},
    ]
    assert render_degraded(stages) == [
        "  insights   reviews: 0 reviews: nothing to learn from",
        "  recommend  category_propensity: no product has a category",
    ]


def test_crm_campaigns_check_names_each_bad_file_and_part_and_exits_1(tmp_path):
    """Without Spark or a lake: one line per campaign file, the bad ones with their field and the part that is
    not allowed; `crm doctor` fails its campaigns check with the same message."""
    (tmp_path / "vip.yaml").write_text("description: d\naudience: segment = 'Champions'\n")
    (tmp_path / "leak.yaml").write_text("description: d\naudience: reflect('java.lang.System', 'getenv', 'CRM_SHOP_URL') = ''\n")
    (tmp_path / "files.yaml").write_text("description: d\naudience: frequency > (SELECT count(*) FROM text.`/etc/passwd`)\n")
    env = {"CRM__CAMPAIGNS__FOLDER": str(tmp_path), "CRM_DATA_DIR": str(tmp_path / "data")}
    result = run_crm("campaigns", "check", env=env, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        f"ok   {tmp_path / 'vip.yaml'}",
        f"FAIL {tmp_path / 'files.yaml'}: audience: subqueries are not allowed ((SELECT COUNT(*) FROM text.`/etc/passwd`))",
        f"FAIL {tmp_path / 'leak.yaml'}: audience: function reflect is not allowed (allowed: abs, round, floor, ceil, least, greatest, "
        "coalesce, nullif, if, lower, upper, length, trim, substring, startswith, contains, find_in_set, date_add, date_sub, "
        "datediff, months_between, to_date, year, month, day, dayofweek)",
        f"3 campaign file(s) in {tmp_path}: 2 bad",
    ]
    assert "Traceback" not in result.stderr

    doctor = run_crm("doctor", "--quick", env=env, check=False)
    assert doctor.returncode == 1
    line = next(line for line in doctor.stdout.splitlines() if line[4:].startswith(" campaigns") or line[4:].startswith("campaigns"))
    assert line.startswith("FAIL") and "2 bad campaign file(s)" in line and f"{tmp_path / 'leak.yaml'}: audience: function reflect" in line


def test_crm_campaigns_check_passes_the_shipped_campaigns():
    result = run_crm("campaigns", "check")
    lines = result.stdout.splitlines()
    assert [line.split("/")[-1] for line in lines[:-1]] == [
        "browse_abandonment.yaml",
        "cart_reminder.yaml",
        "new_customer_nurture.yaml",
        "vip.yaml",
        "win_back.yaml",
    ]
    assert all(line.startswith("ok   ") for line in lines[:-1]) and lines[-1].endswith(": all good")


# ---- one night per data root, and a killed night ------------------------------------------------------------

SMALL_SHOP_DATE = "2026-11-20"


@pytest.fixture(scope="module")
def small_shop(tmp_path_factory) -> str:
    """A 30-customer SQLite shop (a few seconds to write), for nights that must get past `extract`."""
    folder = tmp_path_factory.mktemp("small-shop")
    url = f"sqlite:///{folder}/shop.sqlite"
    run_crm("generate-shop", "--customers", "30", "--end-date", SMALL_SHOP_DATE, "--url", url, env={"CRM_DATA_DIR": str(folder)})
    return url


def lock_record(root: Path) -> dict:
    try:
        return json.loads((root / "night.lock").read_text() or "{}")
    except (FileNotFoundError, ValueError):
        return {}


def wait_for(condition, what: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout_s} s for {what}")
        time.sleep(0.2)


def root_is_free(root: Path) -> bool:
    """Whether no process holds the data root's night lock (tried as a holder would)."""
    fd = os.open(root / "night.lock", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_a_second_night_on_the_same_root_refuses_naming_the_running_one_and_the_first_goes_on(tmp_path):
    # A shop that is missing: the first night is a real Airflow run that fails fast in extract, without Spark.
    env = {"CRM_DATA_DIR": str(tmp_path), "CRM_SHOP_URL": f"sqlite:///{tmp_path}/missing.sqlite"}
    first: dict = {}
    thread = threading.Thread(target=lambda: first.update(result=run_crm("run", "--date", "2026-11-20", env=env, check=False)))
    thread.start()
    wait_for(lambda: lock_record(tmp_path).get("pid"), "the first night to hold the data root")
    holder = lock_record(tmp_path)
    second = run_crm("run", "--date", "2026-11-21", env=env, check=False)
    thread.join()

    assert second.returncode == 1
    assert second.stdout == "" and second.stderr.splitlines() == [
        f"error: another night holds data root {tmp_path}: crm run (run date 2026-11-20, pid {holder['pid']} on "
        f"{socket.gethostname()}, since {holder['since']}); wait for it to end (crm run --wait waits), or stop that process first"
    ]
    # The first night ran undisturbed: it failed where its shop is missing, not on a run deleted under it.
    assert first["result"].returncode == 1
    assert "failed task(s): extract" in first["result"].stderr and "missing.sqlite: no such SQLite file" in first["result"].stderr
    status = run_crm("status", env=env).stdout.splitlines()
    assert [line for line in status if line.startswith("crm_nightly ")] == [status[0]]  # one night
    assert " for 2026-11-20: failed" in status[0]
    assert root_is_free(tmp_path)


def test_a_killed_night_is_shown_interrupted_where_it_stopped_and_the_next_night_runs(tmp_path, small_shop):
    env = {"CRM_DATA_DIR": str(tmp_path), "CRM_SHOP_URL": small_shop}
    crm = Path(sys.executable).with_name("crm")
    night = subprocess.Popen(
        [str(crm), "run", "--date", SMALL_SHOP_DATE],
        env={**os.environ, **env},
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: lock_record(tmp_path).get("task") == "validate_bronze", "the night to reach validate_bronze")
        time.sleep(1)  # its run-log row is written right after
        night.send_signal(signal.SIGKILL)
        night.wait(timeout=30)
    finally:
        if night.poll() is None:
            night.kill()
    # The night's own child process dies with it: the root is free within moments.
    wait_for(lambda: root_is_free(tmp_path), "the killed night's processes to end", timeout_s=30)
    killed_at = lock_record(tmp_path)

    status = run_crm("status", env=env).stdout.splitlines()
    head, stages = status[0], {line.split()[0]: line for line in status[1:] if line.startswith("  ")}
    extract, validate = stages["extract"], stages["validate_bronze"]
    assert list(stages)[:3] == ["spark_up", "extract", "validate_bronze"]  # in start order, as Airflow ran them
    assert head.startswith(f"crm_nightly {killed_at['run_id']} for {SMALL_SHOP_DATE}: interrupted in validate_bronze (started ")
    assert ", last seen " in head and head.endswith(" UTC; rerun the date)")
    assert extract.split()[:2] == ["extract", "success"]
    assert validate.split()[:2] == ["validate_bronze", "interrupted"] and "its night stopped (killed?) while it ran" in validate
    assert "running" not in "\n".join(status)

    # The next night takes the root (it fails later, in extract, on a shop that is missing: no Spark needed).
    again = run_crm("run", "--date", SMALL_SHOP_DATE, env={**env, "CRM_SHOP_URL": f"sqlite:///{tmp_path}/missing.sqlite"}, check=False)
    assert "failed task(s): extract" in again.stderr and "another night" not in again.stderr
    runs = [line for line in run_crm("status", env=env).stdout.splitlines() if line.startswith("crm_nightly ")]
    assert [" for 2026-11-20: failed" in runs[0], " for 2026-11-20: interrupted in validate_bronze" in runs[1]] == [True, True]


# ---- errors for people: a few lines, what failed and what to do -------------------------------------------------


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def assert_said_briefly(result, *expected: str, exit_nonzero: bool = True) -> None:
    """At most 3 lines about the failure (`crm doctor`: its FAIL lines), no traceback, each expected text in them."""
    said = result.stderr + result.stdout
    if exit_nonzero:
        assert result.returncode != 0, said
    assert "Traceback" not in said, said
    assert len(result.stderr.splitlines()) <= 3, said
    lines = (
        [line for line in result.stdout.splitlines() if line.startswith("FAIL")] if result.stdout.startswith("ok ") else said.splitlines()
    )
    assert 1 <= len(lines) <= 3, said
    for text in expected:
        assert text in "\n".join(lines), said


def test_status_run_and_doctor_with_the_crm_database_down_name_it_without_its_password(tmp_path, small_shop):
    url = f"postgresql+psycopg2://crm:s3cret@127.0.0.1:{closed_port()}/crm"
    env = {"CRM_DATA_DIR": str(tmp_path), "CRM_SHOP_URL": small_shop, "CRM_DB_URL": url}
    shown = url.replace("s3cret", "***")
    for args in (("status",), ("run", "--date", SMALL_SHOP_DATE), ("doctor", "--quick")):
        result = run_crm(*args, env=env, check=False)
        assert_said_briefly(result, shown, "Connection refused")
        assert "s3cret" not in result.stdout + result.stderr
    # The refused night started nothing: no Airflow run, no lake.
    assert not (tmp_path / "airflow").exists() and not (tmp_path / "lake").exists()


def unwritable_root(tmp_path: Path) -> Path:
    """A data root this user cannot write: a folder without write permission, or for root (who writes
    anywhere) a path under a file."""
    if os.geteuid() != 0:
        root = tmp_path / "read-only"
        root.mkdir()
        root.chmod(0o500)
        return root
    (tmp_path / "a-file").write_text("")
    return tmp_path / "a-file" / "data"


def test_status_run_and_doctor_on_a_data_root_that_cannot_be_written_say_so(tmp_path, small_shop):
    root = unwritable_root(tmp_path)
    env = {"CRM_DATA_DIR": str(root), "CRM_SHOP_URL": small_shop}
    run = run_crm("run", "--date", SMALL_SHOP_DATE, env=env, check=False)
    assert_said_briefly(run, f"cannot write {root}", f"the data root {root} must be a folder this user can write")
    doctor = run_crm("doctor", "--quick", env=env, check=False)
    assert_said_briefly(doctor, "FAIL data root", str(root))
    # Status only reads: with no run log there it says so, in one line.
    status = run_crm("status", env=env, check=False)
    assert_said_briefly(status, "no pipeline runs recorded yet", exit_nonzero=False)


def test_run_and_doctor_without_java_say_what_to_install(tmp_path, small_shop, monkeypatch):
    # No java on PATH, no JAVA_HOME, and no Spark Connect server to use instead: a local Spark is needed.
    monkeypatch.delenv("CRM__SPARK__REMOTE")
    env = {"CRM_DATA_DIR": str(tmp_path), "CRM_SHOP_URL": small_shop, "PATH": str(Path(sys.executable).parent), "JAVA_HOME": ""}
    run = run_crm("run", "--date", SMALL_SHOP_DATE, env=env, check=False)
    assert_said_briefly(run, "error: java: no `java` on PATH (and JAVA_HOME is not set); Spark needs Java 17 or 21")
    assert not (tmp_path / "airflow").exists()
    doctor = run_crm("doctor", "--quick", env=env, check=False)
    assert_said_briefly(doctor, "FAIL java", "no `java` on PATH")
    assert doctor_outcome(doctor)[0]["java"] == "FAIL"
    # Status needs no Java: it answers as usual.
    status = run_crm("status", env=env, check=False)
    assert_said_briefly(status, "no pipeline runs recorded yet", exit_nonzero=False)


def test_a_full_disk_is_named_with_what_to_do(tmp_path):
    # /dev/full answers every write with ENOSPC: the night's first write (its lock's record) meets a full disk.
    (tmp_path / "night.lock").symlink_to("/dev/full")
    result = run_crm("run", "--date", SMALL_SHOP_DATE, env={"CRM_DATA_DIR": str(tmp_path)}, check=False)
    assert_said_briefly(result, f"error: no space left on the device of {tmp_path}: free some space there")
    debug = run_crm("--debug", "run", "--date", SMALL_SHOP_DATE, env={"CRM_DATA_DIR": str(tmp_path)}, check=False)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "OSError: [Errno 28] No space left on device" in debug.stderr


def test_doctor_is_green_on_a_new_data_root_and_creates_nothing(tmp_path, small_shop):
    root = tmp_path / "new"
    result = run_crm("doctor", "--quick", env={"CRM_DATA_DIR": str(root), "CRM_SHOP_URL": small_shop}, check=False)
    outcome, verdict = doctor_outcome(result)
    assert result.returncode == 0 and verdict == "all checks passed", result.stdout
    assert set(outcome.values()) == {"ok"} and {"data root", "java", "airflow", "disk"} <= set(outcome)
    assert f"{root}: not there yet; the first night creates it" in result.stdout
    assert not root.exists()


#: A task as the scheduler runs it: a process of its own calling core.airflow_task.run_task.
SCHEDULER_TASK = """
import json, sys, time
from datetime import datetime, timezone
from types import SimpleNamespace
from core.airflow_task import run_task

def job(run_date, settings, run_id, seconds):
    time.sleep(seconds)
    return {"run_id": run_id, "run_date": run_date}

run_id, task, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
context = {"run_id": run_id, "logical_date": datetime(2026, 11, 21, 2, tzinfo=timezone.utc),
           "ti": SimpleNamespace(task_id=task, try_number=1, dag_id="crm_nightly")}
print(json.dumps(run_task(job, context, night=False, seconds=seconds)))
"""


def scheduler_task(root: Path, run_id: str, task: str, seconds: float = 0, token: str | None = None) -> subprocess.Popen:
    env = {key: value for key, value in os.environ.items() if key != "CRM_NIGHT_TOKEN"}
    env.update({"CRM_DATA_DIR": str(root), **({"CRM_NIGHT_TOKEN": token} if token else {})})
    return subprocess.Popen(
        [sys.executable, "-c", SCHEDULER_TASK, run_id, task, str(seconds)],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_scheduler_task_of_another_run_refuses_while_tasks_of_the_holding_night_go_on(tmp_path):
    from core import nightlock
    from core.config import load_config

    settings = load_config(environ={**os.environ, "CRM_DATA_DIR": str(tmp_path)})
    with nightlock.hold(settings, "crm run", date(2026, 11, 20)):
        own = scheduler_task(tmp_path, "manual__mine", "extract", token=os.environ["CRM_NIGHT_TOKEN"])
        own_out, own_err = own.communicate(timeout=120)
        holder = lock_record(tmp_path)
        other = scheduler_task(tmp_path, "scheduled__other", "extract")
        other_out, other_err = other.communicate(timeout=120)
    # The night's own task ran, and named its run and task in the lock for the message.
    assert own.returncode == 0, own_err
    assert json.loads(own_out) == {"run_id": "manual__mine", "run_date": "2026-11-20"}
    assert other.returncode != 0 and other_out == "", other_err[-2000:]
    assert (
        f"NightBusyError: another night holds data root {tmp_path}: crm run, task extract (run date 2026-11-20, run manual__mine, "
        f"pid {os.getpid()} on {socket.gethostname()}, since {holder['since']})"
    ) in other_err

    # No night holds the root: a task of a scheduled run holds it while it runs, shared with the tasks of
    # its own run (they run side by side); a task of another run refuses naming the run that holds it.
    first = scheduler_task(tmp_path, "scheduled__B", "score", seconds=8)
    wait_for(lambda: lock_record(tmp_path).get("run_id") == "scheduled__B", "the task to hold the root", timeout_s=120)
    same_run = scheduler_task(tmp_path, "scheduled__B", "predict", seconds=3)
    with pytest.raises(nightlock.NightBusyError, match="run scheduled__B"):  # a command-line night refuses too
        with nightlock.hold(settings, "crm run", date(2026, 11, 21)):
            pass
    other_run = scheduler_task(tmp_path, "scheduled__C", "extract")
    other_out, other_err = other_run.communicate(timeout=120)
    assert other_run.returncode != 0
    assert f"another night holds data root {tmp_path}: airflow task, task " in other_err
    assert "(run date 2026-11-20, run scheduled__B, pid " in other_err
    assert first.wait(timeout=120) == 0 and same_run.wait(timeout=120) == 0, same_run.stderr.read()
    assert json.loads(same_run.stdout.read())["run_id"] == "scheduled__B"
    assert root_is_free(tmp_path)
    # Side by side: the run log has the second task start before the first one ended.
    from core import runlog

    stages = {stage["stage"]: stage for run in runlog.recent_runs(settings) if run["run_id"] == "scheduled__B" for stage in run["stages"]}
    assert stages["predict"]["started_at"] < stages["score"]["finished_at"]
