"""`crm db-roles`: the analyst reads the CRM tables and can change nothing; the writer publishes."""

from __future__ import annotations

import secrets
from datetime import date
from types import SimpleNamespace

import pytest
from dbservers import _pg_admin
from psycopg2.errors import InsufficientPrivilege
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.schema import DropTable

from conftest import run_crm
from core import migrate
from core.crm_schema import crm_metadata

DATABASE = "roles_test"
ANALYST, WRITER = "crm_analyst", "crm_writer"
ROW = {
    "customer_id": 1,
    "as_of": date(2026, 11, 20),
    "recency_days": 3,
    "frequency": 2,
    "monetary": 10.5,
    "r_score": 5,
    "f_score": 4,
    "m_score": 3,
    "rfm_code": "543",
    "segment": "Champions",
    "previous_segment": "Loyal",
    "changed_at": date(2026, 11, 20),
    "cluster_id": 1,
    "run_id": "night-1",
}


def login_url(postgres, role: str, password: str) -> URL:
    return URL.create("postgresql+psycopg2", role, password, postgres.host, postgres.port, DATABASE)


@pytest.fixture(scope="module")
def roles(postgres):
    """The CRM tables published by the application user (holding one row), then `crm db-roles` run by
    that user, given CREATEROLE as a database owner who administers its own roles would have."""
    postgres.create_database(DATABASE)
    with _pg_admin(postgres) as admin:
        admin.execute(f'DROP ROLE IF EXISTS "{ANALYST}", "{WRITER}"')
        admin.execute(f'ALTER ROLE "{postgres.user}" CREATEROLE')
    metadata = crm_metadata("crm")
    application = create_engine(postgres.url(DATABASE))
    migrate.upgrade(postgres.url(DATABASE), "crm")
    with application.begin() as connection:
        connection.execute(metadata.tables["crm.customer_segments"].insert(), [ROW])
    application.dispose()
    passwords = {"CRM_ANALYST_PASSWORD": secrets.token_urlsafe(12), "CRM_WRITER_PASSWORD": secrets.token_urlsafe(12)}
    env = {"CRM_DB_URL": postgres.url(DATABASE), **passwords}
    first = run_crm("db-roles", env=env)
    roles = SimpleNamespace(
        env=env,
        output=first.stdout,
        metadata=metadata,
        analyst=create_engine(login_url(postgres, ANALYST, passwords["CRM_ANALYST_PASSWORD"])),
        writer=create_engine(login_url(postgres, WRITER, passwords["CRM_WRITER_PASSWORD"])),
        superuser_url=f"postgresql+psycopg2://{postgres.admin_user}@/{DATABASE}?host={postgres.socket}&port={postgres.port}",
    )
    yield roles
    for engine in (roles.analyst, roles.writer):
        engine.dispose()
    with _pg_admin(postgres) as admin:
        admin.execute(f'DROP DATABASE "{DATABASE}" WITH (FORCE)')
        admin.execute(f'DROP ROLE "{ANALYST}", "{WRITER}"')
        admin.execute(f'ALTER ROLE "{postgres.user}" NOCREATEROLE')


def test_the_analyst_reads_the_published_rows(roles):
    segments = roles.metadata.tables["crm.customer_segments"]
    with roles.analyst.connect() as connection:
        assert connection.execute(select(segments.c.customer_id, segments.c.segment)).all() == [(1, "Champions")]


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda table: table.insert().values({**ROW, "customer_id": 2}), id="insert"),
        pytest.param(lambda table: table.update().values(segment="Lost"), id="update"),
        pytest.param(lambda table: table.delete(), id="delete"),
        pytest.param(lambda table: DropTable(table), id="drop"),
        pytest.param(lambda table: text("CREATE TABLE crm.segments_copy (customer_id bigint)"), id="create"),
    ],
)
def test_the_analyst_can_change_nothing(roles, change):
    segments = roles.metadata.tables["crm.customer_segments"]
    with roles.analyst.begin() as connection, pytest.raises(ProgrammingError) as refused:
        connection.execute(change(segments))
    assert isinstance(refused.value.orig, InsufficientPrivilege), refused.value
    with roles.writer.connect() as connection:
        assert connection.execute(select(segments.c.customer_id, segments.c.segment)).all() == [(1, "Champions")]


def test_the_writer_republishes_and_migrates_and_the_analyst_reads_what_it_creates(roles):
    segments = roles.metadata.tables["crm.customer_segments"]
    with roles.writer.begin() as connection:
        connection.execute(segments.delete())
        connection.execute(segments.insert(), [{**ROW, "run_id": "night-2"}])
    writer_url = roles.writer.url.render_as_string(hide_password=False)
    # What a release with a new migration does: drop and create tables and views, as the writer.
    assert migrate.downgrade(writer_url, "crm", "0001") == (migrate.head(), "0001")
    assert migrate.upgrade(writer_url, "crm") == ("0001", migrate.head())
    with roles.writer.connect() as connection:
        owners = (
            connection.execute(
                text(
                    "SELECT tableowner FROM pg_tables WHERE schemaname = 'crm' UNION "
                    "SELECT viewowner FROM pg_views WHERE schemaname = 'crm'"
                )
            )
            .scalars()
            .all()
        )
    assert owners == [WRITER]
    with roles.analyst.connect() as connection:
        assert connection.execute(select(segments.c.run_id)).scalars().all() == ["night-2"]
        assert connection.execute(text("SELECT count(*) FROM crm.customer_overview")).scalar_one() == 0  # no profiles
        assert connection.execute(text("SELECT count(*) FROM crm.customer_segment_history")).scalar_one() == 1


def test_a_second_run_succeeds_and_keeps_the_roles_least_privileged(roles):
    assert f"GRANT SELECT ON ALL TABLES IN SCHEMA crm TO {ANALYST};" in roles.output
    assert "PASSWORD '***'" in roles.output and roles.env["CRM_ANALYST_PASSWORD"] not in roles.output
    again = run_crm("db-roles", env={**roles.env, "CRM_DB_ADMIN_URL": roles.superuser_url})
    assert f"ALTER ROLE {ANALYST} LOGIN PASSWORD '***';" in again.stdout
    with roles.analyst.connect() as connection:
        powers = connection.execute(
            text(
                "SELECT rolname, rolcanlogin, rolsuper OR rolcreatedb OR rolcreaterole FROM pg_roles "
                "WHERE rolname IN (:analyst, :writer) ORDER BY rolname"
            ),
            {"analyst": ANALYST, "writer": WRITER},
        ).all()
        assert powers == [(ANALYST, True, False), (WRITER, True, False)]
        assert connection.execute(text("SELECT has_schema_privilege('crm', 'CREATE')")).scalar_one() is False


def test_a_sqlite_crm_database_is_refused(tmp_path):
    result = run_crm("db-roles", env={"CRM_DB_URL": f"sqlite:///{tmp_path}/crm.sqlite"}, check=False)
    assert result.returncode == 1, result.stderr
    assert f"error: roles need PostgreSQL; crm.db_url is sqlite:///{tmp_path}/crm.sqlite" in result.stderr


def test_a_bad_role_name_is_a_usage_error_naming_the_option():
    result = run_crm("db-roles", "--analyst", "Analyst;DROP", check=False)
    assert result.returncode == 2
    assert "Invalid value for '--analyst': 'Analyst;DROP' is not a role name" in result.stderr
