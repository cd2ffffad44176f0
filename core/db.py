"""Database access: SQLAlchemy engines for SQL databases, pymongo for document shops (MongoDB).

Users configure one URL per database (`CRM_SHOP_URL`, `CRM_DB_URL`); passwords stay in it and never reach
a log: `masked()` is what gets printed, of any URL.
"""

from __future__ import annotations

import re
from contextlib import contextmanager

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url


class UnsupportedDatabaseError(ValueError):
    """A URL whose database kind the pipeline cannot read or write."""


SUPPORTED = ("sqlite", "postgresql", "mysql", "mariadb")


def kind(url: str) -> str:
    """The database kind of a SQLAlchemy URL: sqlite, postgresql or mysql (MariaDB counts as mysql)."""
    backend = make_url(url).get_backend_name()
    if backend not in SUPPORTED:
        raise UnsupportedDatabaseError(f"database URL {masked(url)}: unsupported kind {backend!r}; expected one of {', '.join(SUPPORTED)}")
    return "mysql" if backend == "mariadb" else backend


def masked(url: str) -> str:
    """Any URL (a database, MongoDB, MLflow's http://user:password@host, Spark Connect's sc://host/;token=...)
    with its password and token replaced by ***; the user name stays, so the message says who connected."""
    without_password = re.sub(r"//([^/@:]*):[^/]*@", r"//\1:***@", url)
    return re.sub(r"(;token=)[^;]*", r"\1***", without_password)


def engine(url: str) -> Engine:
    """A SQLAlchemy engine; MySQL/MariaDB connections use utf8mb4 so Chinese text round-trips."""
    parsed = make_url(url)
    if kind(url) == "mysql" and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    try:
        return _naming_errors(create_engine(parsed, pool_pre_ping=True), url)
    except ModuleNotFoundError as error:  # e.g. postgresql:// means psycopg 3 to SQLAlchemy 2.1
        raise UnsupportedDatabaseError(
            f"database URL {masked(url)}: its driver {error.name} is not installed; expected one of the "
            "installed drivers: postgresql+psycopg2://, mysql+pymysql:// (MariaDB too) or sqlite:///"
        ) from None


def _naming_errors(engine: Engine, url: str) -> Engine:
    """The engine's errors carry `database_url`, its URL masked, so a message can say which database failed."""

    @event.listens_for(engine, "handle_error")
    def _name(context) -> None:
        context.sqlalchemy_exception.database_url = masked(url)

    return engine


# ---- document shops (MongoDB) ------------------------------------------------------------------------------

DOCUMENT_SCHEMES = ("mongodb", "mongodb+srv")
#: How long a client waits for the server before it gives up (milliseconds).
SERVER_TIMEOUT_MS = 20_000


class DocumentShopError(ValueError):
    """A document shop that cannot be reached or read as configured; the message names what and where."""


def is_document_shop(url: str) -> bool:
    """Whether the shop URL names a document store (MongoDB) rather than a SQL database."""
    return url.split("://", 1)[0].lower() in DOCUMENT_SCHEMES


def document_error(error: Exception) -> str:
    """A driver error in one line: pymongo's server-selection errors end in a long topology description."""
    return str(error).split(", Timeout:")[0].split(" (configured timeouts")[0]


@contextmanager
def document_database(url: str):
    """The shop's database (pymongo), closed on exit; a URL without a database is an error naming it."""
    from pymongo import MongoClient  # deferred: pymongo (~0.5 s) only for a document shop
    from pymongo.errors import ConfigurationError, InvalidURI
    from pymongo.uri_parser import parse_uri

    try:
        parsed = parse_uri(url)
    except (InvalidURI, ConfigurationError, ValueError) as error:
        raise DocumentShopError(f"shop URL {masked(url)}: not a MongoDB URL: {error}") from None
    name = parsed["database"]
    if not name:
        raise DocumentShopError(f"shop URL {masked(url)}: names no database; expected mongodb://host:port/<database>")
    # The URL's own options (serverSelectionTimeoutMS, tls, authSource, ...) win over these defaults.
    given = {option.lower() for option in parsed["options"]}
    defaults = {"serverSelectionTimeoutMS": SERVER_TIMEOUT_MS} if "serverselectiontimeoutms" not in given else {}
    # A string that is not valid UTF-8 is read (with U+FFFD, which the reader names) instead of failing the
    # whole cursor.
    client = MongoClient(url, tz_aware=False, uuidRepresentation="standard", unicode_decode_error_handler="replace", **defaults)
    try:
        yield client[name]
    finally:
        client.close()
