"""Database access: SQLAlchemy URLs for Python, the same URLs translated for Spark's JDBC reader.

Users configure one SQLAlchemy URL per database (`CRM_SHOP_URL`, `CRM_DB_URL`); passwords stay in it and
never reach a log: `masked()` is what gets printed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine, make_url


class UnsupportedDatabaseError(ValueError):
    """A URL whose database kind the pipeline cannot read or write."""


SUPPORTED = ("sqlite", "postgresql", "mysql", "mariadb")


def kind(url: str) -> str:
    """The database kind of a SQLAlchemy URL: sqlite, postgresql or mysql (MariaDB counts as mysql)."""
    backend = make_url(url).get_backend_name()
    if backend not in SUPPORTED:
        raise UnsupportedDatabaseError(
            f"database URL {masked(url)}: unsupported kind {backend!r}; expected one of {', '.join(SUPPORTED)}"
        )
    return "mysql" if backend == "mariadb" else backend


def masked(url: str) -> str:
    """The URL with its password replaced by ***."""
    return make_url(url).render_as_string(hide_password=True)


def masked_uri(uri: str) -> str:
    """Any URI (a store that may not be SQLAlchemy's, e.g. MLflow's http://user:password@host) with its
    user and password replaced by ***, and a Spark Connect URL's token (sc://host:port/;token=...) too."""
    return re.sub(r"(;token=)[^;]*", r"\1***", re.sub(r"//[^/@]*@", "//***@", uri))


def engine(url: str) -> Engine:
    """A SQLAlchemy engine; MySQL/MariaDB connections use utf8mb4 so Chinese text round-trips."""
    parsed = make_url(url)
    if kind(url) == "mysql" and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    try:
        return create_engine(parsed, pool_pre_ping=True)
    except ModuleNotFoundError as error:  # e.g. postgresql:// means psycopg 3 to SQLAlchemy 2.1
        raise UnsupportedDatabaseError(
            f"database URL {masked(url)}: its driver {error.name} is not installed; expected one of the "
            "installed drivers: postgresql+psycopg2://, mysql+pymysql:// (MariaDB too) or sqlite:///") from None


@dataclass(frozen=True)
class JdbcTarget:
    """What Spark's JDBC data source needs to reach a database."""

    url: str
    driver: str
    user: str | None
    password: str | None

    def options(self) -> dict[str, str]:
        values = {"url": self.url, "driver": self.driver}
        if self.user is not None:
            values["user"] = self.user
        if self.password is not None:
            values["password"] = self.password
        return values


def jdbc_target(url: str) -> JdbcTarget:
    """Translate a SQLAlchemy URL into a JDBC URL, driver class and credentials."""
    parsed = make_url(url)
    database_kind = kind(url)
    if database_kind == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise UnsupportedDatabaseError(f"database URL {masked(url)}: Spark needs a SQLite file, not memory")
        return JdbcTarget(f"jdbc:sqlite:{parsed.database}", "org.sqlite.JDBC", None, None)
    host = parsed.host or "localhost"
    if database_kind == "postgresql":
        port = parsed.port or 5432
        return JdbcTarget(f"jdbc:postgresql://{host}:{port}/{parsed.database}", "org.postgresql.Driver",
                          parsed.username, parsed.password)
    # Spark picks its MySQL dialect (backtick quoting) only for jdbc:mysql: URLs; the MariaDB driver
    # accepts that scheme when asked to.
    port = parsed.port or 3306
    return JdbcTarget(
        f"jdbc:mysql://{host}:{port}/{parsed.database}?permitMysqlScheme&useUnicode=true&characterEncoding=utf8",
        "org.mariadb.jdbc.Driver",
        parsed.username,
        parsed.password,
    )
