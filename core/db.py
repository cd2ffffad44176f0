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
#: The driver a URL without one gets: the ones installed with shop-crm. SQLAlchemy 2.1's own defaults
#: (psycopg 3 for postgresql://, mysqlclient for mysql:// and mariadb://) are not installed, and
#: `postgres://` (Heroku's, libpq's) is no SQLAlchemy name at all.
DEFAULT_DRIVERS = {
    "postgresql": "postgresql+psycopg2",
    "postgres": "postgresql+psycopg2",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}


def with_driver(url: str) -> str:
    """The URL as SQLAlchemy (and MLflow, which opens its store with SQLAlchemy) needs it: `postgresql://`,
    `postgres://`, `mysql://` and `mariadb://` get the installed driver (psycopg2, PyMySQL); a URL naming its
    driver, and any other URL, stays as it is. The one place plain URLs are normalised."""
    scheme, separator, rest = url.partition("://")
    driver = DEFAULT_DRIVERS.get(scheme.lower()) if separator else None
    return f"{driver}://{rest}" if driver else url


def kind(url: str) -> str:
    """The database kind of a SQLAlchemy URL: sqlite, postgresql or mysql (MariaDB counts as mysql)."""
    backend = make_url(with_driver(url)).get_backend_name()
    if backend not in SUPPORTED:
        raise UnsupportedDatabaseError(f"database URL {masked(url)}: unsupported kind {backend!r}; expected one of {', '.join(SUPPORTED)}")
    return "mysql" if backend == "mariadb" else backend


#: Query parameters that carry a secret (libpq's `password`, a cloud store's keys, tokens).
SECRET_PARAMETER = r"[^&;?=/]*(?:password|passwd|pwd|secret|token|key|credential|signature)[^&;?=/]*"


def masked(url: str) -> str:
    """Any URL (a database, MongoDB, MLflow's http://user:password@host, Spark Connect's sc://host/;token=...)
    with its password, tokens and secret query parameters (`?password=`, `;token=`, `X-Amz-Signature=`)
    replaced by ***; the user name stays, so the message says who connected. The one function that masks
    what is printed or logged."""
    without_password = re.sub(r"//([^/@:]*):[^/]*@", r"//\1:***@", url)
    return re.sub(rf"([?&;]{SECRET_PARAMETER}=)[^&;#]*", r"\1***", without_password, flags=re.IGNORECASE)


def masked_destination(url: str) -> str:
    """A URL whose path and query may be the secret (a chat's incoming webhook,
    `https://hooks.example.com/services/T0/B0/<token>`, or `?token=`) as it may be logged: its scheme and host
    only, e.g. `https://hooks.example.com/***`."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return "***"
    host = rest.split("/", 1)[0].split("?", 1)[0].rpartition("@")[2]
    return f"{scheme}://{host}/***"


#: Settings keys whose URL is a destination with a secret in its path (`masked_destination`).
DESTINATION_KEY = r".*webhook_url"


def masked_settings(values):
    """Settings as printed (`crm config`): every string holding a URL masked (`masked`), and the value of
    every key that names a secret (say `spark.extra`'s `spark.hadoop.fs.s3a.secret.key`) replaced by ***; a
    webhook's URL shows only where it goes (`masked_destination`)."""
    if isinstance(values, dict):
        return {
            key: "***"
            if value and re.fullmatch(rf"{SECRET_PARAMETER}", str(key).replace(".", "_"), re.IGNORECASE)
            else masked_destination(value)
            if value and isinstance(value, str) and re.fullmatch(DESTINATION_KEY, str(key))
            else masked_settings(value)
            for key, value in values.items()
        }
    if isinstance(values, list):
        return [masked_settings(value) for value in values]
    return masked(values) if isinstance(values, str) and "://" in values else values


def engine(url: str) -> Engine:
    """A SQLAlchemy engine; a plain postgresql:// or mysql:// URL gets the installed driver (`with_driver`);
    MySQL/MariaDB connections use utf8mb4 so Chinese text round-trips."""
    parsed = make_url(with_driver(url))
    if kind(url) == "mysql" and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    try:
        return _naming_errors(create_engine(parsed, pool_pre_ping=True), url)
    except ModuleNotFoundError as error:  # a driver named in the URL that is not installed (postgresql+psycopg://)
        raise UnsupportedDatabaseError(
            f"database URL {masked(url)}: its driver {error.name} is not installed; expected one of the "
            "installed drivers: postgresql:// (psycopg2), mysql:// or mariadb:// (PyMySQL), or sqlite:///"
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
