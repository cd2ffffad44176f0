"""roles: the least-privilege PostgreSQL roles of the CRM database.

The analyst role reads the CRM tables and nothing else. The writer role is what the pipeline publishes as:
it owns the CRM tables and views (publishing first runs any new migration of `core/migrations/`, which
creates, alters and drops them) and may create tables in the CRM schema, but no roles and no databases. A
role given a password can log in; one without is a group role to grant to people.
"""

from __future__ import annotations

import re

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from core import db

ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

#: Role attributes neither role may have, and their pg_roles columns.
_FORBIDDEN = {
    "SUPERUSER": "rolsuper",
    "CREATEDB": "rolcreatedb",
    "CREATEROLE": "rolcreaterole",
    "REPLICATION": "rolreplication",
    "BYPASSRLS": "rolbypassrls",
}


def check_role_name(name: str, what: str) -> str:
    """`name` if it is a plain lower-case PostgreSQL role name, else a ValueError naming `what`."""
    if not ROLE_NAME.fullmatch(name):
        raise ValueError(
            f"{what}: {name!r} is not a role name; expected lower-case letters, digits and _, "
            "not starting with a digit, at most 63 characters"
        )
    return name


def create_roles(
    admin_url: str, schema: str, analyst: str, writer: str, analyst_password: str | None, writer_password: str | None
) -> list[str]:
    """Create or update the analyst and writer roles and grant them the CRM schema, in one transaction.

    `admin_url` connects as a user that may create roles and owns (or may grant on) the CRM database and
    its tables. A role without a password gets NOLOGIN. Running it again only updates the passwords.
    Returns the statements run, passwords masked.
    """
    if db.kind(admin_url) != "postgresql":
        raise ValueError(f"roles need PostgreSQL; the admin URL is {db.masked(admin_url)}")
    check_role_name(analyst, "analyst role")
    check_role_name(writer, "writer role")
    if analyst == writer:
        raise ValueError(f"the analyst and the writer role must differ; both are {analyst!r}")
    done: list[str] = []
    try:
        with db.engine(admin_url).begin() as connection:
            _grant(connection, done, schema, analyst, writer, analyst_password, writer_password)
    except DBAPIError as error:
        raise RuntimeError(f"{db.masked(admin_url)}: {str(error.orig).strip()}") from None
    return done


def _grant(
    connection, done: list[str], schema: str, analyst: str, writer: str, analyst_password: str | None, writer_password: str | None
) -> None:
    quote = connection.dialect.identifier_preparer.quote

    def run(statement: str, **params) -> None:
        shown = statement.replace(":password", "'***'")
        try:
            connection.execute(text(statement), params)
        except DBAPIError as error:
            raise RuntimeError(f"{shown}: {str(error.orig).strip()}") from None
        done.append(shown)

    admin, database, admin_is_superuser = connection.execute(
        text("SELECT current_user, current_database(), rolsuper FROM pg_roles WHERE rolname = current_user")
    ).one()
    for role, password in ((writer, writer_password), (analyst, analyst_password)):
        _ensure_role(connection, run, role, password)
    if not admin_is_superuser:  # OWNER TO and ALTER DEFAULT PRIVILEGES FOR ROLE need membership
        run(f"GRANT {quote(writer)} TO {quote(admin)}")
    crm, base = quote(schema), quote(database)
    found = connection.execute(text("SELECT 1 FROM pg_namespace WHERE nspname = :schema"), {"schema": schema})
    if found.first() is None:
        run(f"CREATE SCHEMA {crm} AUTHORIZATION {quote(writer)}")
    run(f"GRANT CONNECT ON DATABASE {base} TO {quote(analyst)}, {quote(writer)}")
    # The writer creates tables in its schema, no schemas (the pipeline creates the schema only when missing)
    run(f"REVOKE CREATE ON DATABASE {base} FROM {quote(writer)}")
    run(f"GRANT USAGE ON SCHEMA {crm} TO {quote(analyst)}, {quote(writer)}")
    run(f"GRANT CREATE ON SCHEMA {crm} TO {quote(writer)}")
    run(f"REVOKE CREATE ON SCHEMA {crm} FROM {quote(analyst)}")
    run(f"REVOKE ALL ON ALL TABLES IN SCHEMA {crm} FROM {quote(analyst)}")
    run(f"GRANT SELECT ON ALL TABLES IN SCHEMA {crm} TO {quote(analyst)}")
    run(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {crm} TO {quote(writer)}")
    tables = (
        connection.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = :schema AND tableowner <> :writer ORDER BY tablename"),
            {"schema": schema, "writer": writer},
        )
        .scalars()
        .all()
    )
    for table in tables:
        run(f"ALTER TABLE {crm}.{quote(table)} OWNER TO {quote(writer)}")
    views = (
        connection.execute(
            text("SELECT viewname FROM pg_views WHERE schemaname = :schema AND viewowner <> :writer ORDER BY viewname"),
            {"schema": schema, "writer": writer},
        )
        .scalars()
        .all()
    )
    for view in views:
        run(f"ALTER VIEW {crm}.{quote(view)} OWNER TO {quote(writer)}")
    for creator in dict.fromkeys((writer, admin)):  # the tables either of them (re)creates stay readable
        run(f"ALTER DEFAULT PRIVILEGES FOR ROLE {quote(creator)} IN SCHEMA {crm} GRANT SELECT ON TABLES TO {quote(analyst)}")


def _ensure_role(connection, run, role: str, password: str | None) -> None:
    """Create `role` or bring it in line: LOGIN with `password`, or NOLOGIN without one; no admin powers."""
    login = "LOGIN PASSWORD :password" if password else "NOLOGIN PASSWORD NULL"
    params = {"password": _scram(connection, role, password)} if password else {}
    found = (
        connection.execute(text(f"SELECT {', '.join(_FORBIDDEN.values())} FROM pg_roles WHERE rolname = :role"), {"role": role})
        .mappings()
        .first()
    )
    name = connection.dialect.identifier_preparer.quote(role)
    if found is None:
        run(f"CREATE ROLE {name} NOSUPERUSER NOCREATEDB NOCREATEROLE {login}", **params)
    else:  # only a superuser may change some attributes, so name only those to take away
        revoked = "".join(f"NO{attribute} " for attribute, column in _FORBIDDEN.items() if found[column])
        run(f"ALTER ROLE {name} {revoked}{login}", **params)


def _scram(connection, role: str, password: str) -> str:
    """The password hashed on this side (as the server's password_encryption asks), so that no server log
    or statement view ever holds it in clear."""
    from psycopg2.extensions import encrypt_password  # deferred: PostgreSQL's driver, needed only for PostgreSQL

    return encrypt_password(password, role, connection.connection.dbapi_connection)
