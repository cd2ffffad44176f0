"""Plain database URLs (postgresql://, postgres://, mysql://, mariadb://) work wherever a URL is accepted: the
shop (written by the generator, checked, extracted by the Arrow readers), the CRM database (migrated) and
MLflow's store; passwords never show in what the commands print."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import text

from conftest import run_crm
from core import db

RUN_DATE = date(2026, 11, 26)


def plain(url: str, scheme: str) -> str:
    """The test server's URL without its driver (and options) under `scheme`."""
    return f"{scheme}://" + url.split("://", 1)[1].split("?")[0]


@pytest.mark.parametrize(
    ("server_kind", "scheme"), [("postgres", "postgresql"), ("postgres", "postgres"), ("mariadb", "mysql"), ("mariadb", "mariadb")]
)
def test_a_plain_shop_url_is_generated_and_extracted_into_bronze(server_kind, scheme, request, tmp_path, monkeypatch):
    from core.config import load_config
    from core.lake import ArrowLake
    from jobs import extract

    server = request.getfixturevalue(server_kind)
    server.create_database(f"plain_{scheme}")
    url = plain(server.url(f"plain_{scheme}"), scheme)
    run_crm(
        "generate-shop",
        "--customers",
        "20",
        "--url",
        url,
        "--events",
        "none",
        "--end-date",
        RUN_DATE.isoformat(),
        env={"CRM_DATA_DIR": str(tmp_path)},
    )
    monkeypatch.setenv("CRM_SHOP_URL", url)
    monkeypatch.setenv("CRM_DATA_DIR", str(tmp_path))
    counts = extract.run(RUN_DATE, load_config("test"), "plain-url-test")
    with db.engine(url).connect() as connection:
        customers = connection.execute(text("SELECT count(*) FROM customers")).scalar()
    assert counts["customers"]["changed"] == customers >= 20
    assert ArrowLake(tmp_path / "lake").read("bronze", "customers").num_rows == customers


def test_plain_postgresql_urls_of_the_shop_crm_and_mlflow_pass_the_doctor_and_migrate(postgres, mariadb, tmp_path):
    for name in ("plain_crm", "plain_mlflow"):
        postgres.create_database(name)
    mariadb.create_database("plain_shop")
    env = {
        "CRM_DATA_DIR": str(tmp_path),
        "CRM_SHOP_URL": plain(mariadb.url("plain_shop"), "mysql"),
        "CRM_DB_URL": plain(postgres.url("plain_crm"), "postgresql"),
        "CRM__MLFLOW__TRACKING_URI": plain(postgres.url("plain_mlflow"), "postgresql"),
    }
    upgraded = run_crm("db-upgrade", env=env)
    assert "migrated from no version to" in upgraded.stdout and f"postgresql://{postgres.user}:***@" in upgraded.stdout
    doctor = run_crm("doctor", "--quick", env=env, check=False)
    outcome = {line[4:].split("  ")[0].strip(): line[:4].strip() for line in doctor.stdout.splitlines()[:-1]}
    assert {check: outcome[check] for check in ("shop database", "CRM database", "mlflow")} == dict.fromkeys(
        ("shop database", "CRM database", "mlflow"), "ok"
    ), doctor.stdout
    assert "registered models: none yet" in doctor.stdout
    assert postgres.password not in doctor.stdout + upgraded.stdout and mariadb.password not in doctor.stdout
