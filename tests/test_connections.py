"""Database URLs from Airflow connections (`core.airflow_task.task_settings`): a task reads the shop and
publishes to the CRM database through the connections `crm_shop` and `crm_db` when they exist.

Connections here come from `AIRFLOW_CONN_*` variables (URI and JSON forms), as a deployment sets them or
as Airflow's secrets backends hand them out; tests/test_scheduler.py runs a whole night on them and greps
its task logs for the password."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from core.airflow_task import task_settings
from core.db import engine


@pytest.fixture
def no_connections(monkeypatch):
    for name in ("AIRFLOW_CONN_CRM_SHOP", "AIRFLOW_CONN_CRM_DB", "AIRFLOW_CONN_WAREHOUSE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_the_connections_urls_reach_the_databases_and_win_over_the_environment(postgres, no_connections, tmp_path):
    postgres.create_database("conn_shop")
    no_connections.setenv("CRM_SHOP_URL", f"sqlite:///{tmp_path}/elsewhere.sqlite")
    # URI form, as `airflow connections add --conn-uri` takes it; the password has characters a URL must quote.
    no_connections.setenv("AIRFLOW_CONN_CRM_SHOP", postgres.url("conn_shop").replace("postgresql+psycopg2://", "postgresql://"))
    no_connections.setenv("AIRFLOW_CONN_CRM_DB", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "crm.sqlite")}))

    settings = task_settings()

    assert settings.shop.url == f"postgresql://crm:{_quoted(postgres.password)}@{postgres.host}:{postgres.port}/conn_shop"
    with engine(settings.shop.url).connect() as connection:
        assert connection.execute(text("select current_database(), current_user")).one() == ("conn_shop", "crm")
    assert settings.crm.db_url == f"sqlite:///{tmp_path}/crm.sqlite"
    with engine(settings.crm.db_url).connect() as connection:
        connection.execute(text("select 1"))
    assert (tmp_path / "crm.sqlite").exists()


def test_without_a_connection_the_environment_gives_the_url(no_connections, tmp_path):
    no_connections.setenv("CRM_DB_URL", f"sqlite:///{tmp_path}/crm.sqlite")
    no_connections.setenv("AIRFLOW_CONN_CRM_SHOP", "mongodb://127.0.0.1:27017/shop?serverSelectionTimeoutMS=3000")

    settings = task_settings()

    assert settings.crm.db_url == f"sqlite:///{tmp_path}/crm.sqlite"
    assert settings.shop.url == "mongodb://127.0.0.1:27017/shop?serverSelectionTimeoutMS=3000"


def test_the_connection_ids_are_configurable_and_empty_turns_the_look_up_off(no_connections, tmp_path):
    no_connections.setenv("AIRFLOW_CONN_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "dwh.sqlite")}))
    no_connections.setenv("AIRFLOW_CONN_CRM_SHOP", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "shop.sqlite")}))
    no_connections.setenv("CRM__AIRFLOW__CRM_CONN_ID", "warehouse")
    no_connections.setenv("CRM__AIRFLOW__SHOP_CONN_ID", '""')  # YAML's empty string
    no_connections.setenv("CRM_SHOP_URL", f"sqlite:///{tmp_path}/from-env.sqlite")

    settings = task_settings()

    assert settings.crm.db_url == f"sqlite:///{tmp_path}/dwh.sqlite"
    assert settings.shop.url == f"sqlite:///{tmp_path}/from-env.sqlite"


def _quoted(password: str) -> str:
    from urllib.parse import quote

    return quote(password, safe="")
