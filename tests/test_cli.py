"""The command line answers bad input with one clear message and a meaningful exit code."""

from __future__ import annotations

from conftest import run_crm


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
    # The run log has the failed stage and why; nothing after it ran.
    status = run_crm("status", env={"CRM_DATA_DIR": str(tmp_path)})
    night, extract, *others = status.stdout.splitlines()
    assert night.startswith("crm_nightly ") and " for 2026-11-20: failed" in night
    assert extract.split()[:2] == ["extract", "failed"] and "missing.sqlite: no such SQLite file" in extract
    assert others == []


def test_doctor_names_what_is_missing_and_exits_1(tmp_path):
    result = run_crm(
        "doctor", "--quick", env={"CRM_DATA_DIR": str(tmp_path), "CRM_SHOP_URL": f"sqlite:///{tmp_path}/missing.sqlite"}, check=False
    )
    assert result.returncode == 1, result.stdout + result.stderr
    *checks, verdict = result.stdout.splitlines()
    outcome = {line[4:].split("  ")[0].strip(): line[:4].strip() for line in checks}
    assert outcome == {
        "configuration": "ok",
        "shop database": "FAIL",
        "CRM database": "ok",
        "java": "ok",
        "airflow": "FAIL",
        "mlflow": "ok",
        "disk": "ok",
        "private files": "ok",
    }, result.stdout
    assert "missing.sqlite: no such SQLite file" in result.stdout and "no Airflow metadata database" in result.stdout
    assert verdict == "2 check(s) failed" and "Traceback" not in result.stderr
    assert "the first publish creates it" in result.stdout and "the first churn training creates it" in result.stdout
    assert sorted(path.name for path in tmp_path.iterdir()) == []  # checking creates nothing: no shop, CRM or MLflow store


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
                ],
            }
        ]
    )
    lines = {line.split()[0]: line for line in text.splitlines()[1:]}
    assert "recommendations 50,000; als_recall_at_10 0.178, popularity_recall_at_10 0.111" in lines["recommend"]
    assert "1,766 offers; qini 0.090, random_qini 0.002" in lines["offers"]
    assert "review_alerts 0; degraded: reviews" in lines["insights"]
    assert "2 campaigns, to contact: win_back 2, vip 164" in lines["campaigns"]
