"""The CRM schema's migrations: they build exactly the tables the code writes, undo cleanly, and adopt a
database that shop-crm wrote before it had migrations, rows included."""

from __future__ import annotations

import importlib.util
import itertools
from datetime import date, datetime

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from core import migrate
from core.crm_schema import SEGMENT_HISTORY, VIEWS, database_metadata

_DATABASES = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_crm(request, tmp_path):
    """(URL, schema) of an empty CRM database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/crm.sqlite", None
    postgres = request.getfixturevalue("postgres")
    name = f"migrations_{next(_DATABASES)}"
    postgres.create_database(name)
    return postgres.url(name), "crm"


def differences(url: str, schema: str | None) -> list:
    with sa.create_engine(url).connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"version_table": migrate.VERSION_TABLE, "version_table_schema": schema, "include_name": migrate.is_crm_object}
        )
        return compare_metadata(context, database_metadata(schema))


def test_the_migrations_build_exactly_the_tables_indexes_and_comments_the_code_writes(empty_crm):
    url, schema = empty_crm
    assert migrate.upgrade(url, schema) == (None, migrate.head())
    assert differences(url, schema) == []  # columns, types, nullability, keys, indexes, comments
    assert sorted(sa.inspect(sa.create_engine(url)).get_view_names(schema=schema)) == sorted(VIEWS)


def test_every_migration_undoes_cleanly_and_applies_again(empty_crm):
    url, schema = empty_crm
    migrate.upgrade(url, schema)
    assert migrate.downgrade(url, schema, "base") == (migrate.head(), None)
    found = sa.inspect(sa.create_engine(url))
    assert found.get_table_names(schema=schema) == [migrate.VERSION_TABLE]
    assert found.get_view_names(schema=schema) == []
    migrate.upgrade(url, schema)
    assert differences(url, schema) == []


def _baseline_tables():
    path = migrate.SCRIPTS / "versions" / "0001_baseline.py"
    spec = importlib.util.spec_from_file_location("baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TABLES


def test_a_database_written_before_migrations_keeps_its_rows_and_starts_its_history(postgres):
    """What shop-crm wrote before migrations (the baseline's tables, no version table, rows in them) is
    adopted; a table of an even older layout is created anew; the history starts from the published rows."""
    postgres.create_database("migrations_legacy")
    url, schema = postgres.url("migrations_legacy"), "crm"
    engine = sa.create_engine(url)
    old = sa.MetaData(schema=schema)
    for name, (comment, elements) in _baseline_tables().items():
        if name != "customer_scores":
            sa.Table(name, old, *elements(), comment=comment)
    sa.Table(
        "customer_scores",
        old,
        sa.Column("customer_id", sa.BigInteger, primary_key=True),
        sa.Column("churn_probability", sa.Float, nullable=False),
    )
    day = date(2026, 11, 26)
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE SCHEMA crm"))
        old.create_all(connection)
        connection.execute(
            old.tables["crm.pipeline_runs"].insert(),
            [
                {
                    "run_id": "manual__2026-11-26",
                    "stage": "extract",
                    "try_number": 1,
                    "dag_id": "crm_nightly",
                    "run_date": day,
                    "state": "success",
                    "started_at": datetime(2026, 11, 27, 2),
                }
            ],
        )
        connection.execute(
            old.tables["crm.customer_segments"].insert(),
            [
                {
                    "customer_id": 7,
                    "frequency": 3,
                    "monetary": 30,
                    "segment": "Loyal",
                    "changed_at": date(2026, 9, 1),
                    "as_of": day,
                    "run_id": "manual__2026-11-26",
                }
            ],
        )
        connection.execute(old.tables["crm.customer_scores"].insert(), [{"customer_id": 7, "churn_probability": 0.2}])

    migrate.ensure_current(url, schema)

    assert differences(url, schema) == []
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT run_id, stage FROM crm.pipeline_runs")).all() == [("manual__2026-11-26", "extract")]
        assert connection.execute(sa.text("SELECT customer_id, segment FROM crm.customer_segments")).all() == [(7, "Loyal")]
        assert connection.execute(sa.text(f"SELECT customer_id, segment, valid_from, valid_to FROM crm.{SEGMENT_HISTORY}")).all() == [
            (7, "Loyal", date(2026, 9, 1), None)
        ]
        assert connection.execute(sa.text("SELECT count(*) FROM crm.customer_scores")).scalar_one() == 0


def test_a_run_log_of_another_layout_is_an_error_that_says_what_to_do(tmp_path):
    url = f"sqlite:///{tmp_path}/crm.sqlite"
    with sa.create_engine(url).begin() as connection:
        connection.execute(sa.text("CREATE TABLE pipeline_runs (run_id TEXT PRIMARY KEY, note TEXT)"))
    with pytest.raises(RuntimeError, match="table pipeline_runs .* rename it, run `crm db-upgrade`"):
        migrate.upgrade(url, None)
    with sa.create_engine(url).connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM pipeline_runs")).scalar_one() == 0


def test_the_upgrade_sql_can_be_printed_for_review_without_a_database():
    sql = migrate.upgrade_sql("postgresql://reviewer@nowhere.invalid/crm", "crm")
    assert "CREATE TABLE crm.customer_segments" in sql
    assert 'CREATE VIEW "crm".customer_overview' in sql
    assert "COMMENT ON COLUMN crm.customer_scores.churn_probability" in sql
    assert f"INSERT INTO crm.{migrate.VERSION_TABLE}" in sql or f"UPDATE crm.{migrate.VERSION_TABLE}" in sql


def test_crm_db_upgrade_migrates_once_and_names_a_bad_revision(tmp_path):
    from conftest import run_crm

    env = {"CRM_DATA_DIR": str(tmp_path / "data")}
    first = run_crm("db-upgrade", env=env)
    assert first.stdout.strip() == f"sqlite:///{tmp_path}/data/crm.sqlite: migrated from no version to {migrate.head()}"
    again = run_crm("db-upgrade", env=env)
    assert again.stdout.strip().endswith(f"at revision {migrate.head()} already (newest: {migrate.head()})")
    bad = run_crm("db-upgrade", "--revision", "0099", env=env, check=False)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "error: --revision 0099: Can't locate revision identified by '0099'" in bad.stderr
    down = run_crm("db-upgrade", "--sql", env={**env, "CRM_DB_URL": "postgresql+psycopg2://owner@db.invalid/crm"})
    assert "CREATE TABLE crm.customer_segment_history" in down.stdout
