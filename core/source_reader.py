"""Reading shop tables as Arrow record batches: the JVM-free, columnar path from the shop into bronze.

One function per database kind turns a SELECT into a stream of `pyarrow.RecordBatch`, never the whole
result in memory at once:

- PostgreSQL: ADBC (`adbc-driver-postgresql`, libpq's binary COPY protocol), streamed as it arrives;
- MySQL / MariaDB: connectorx (`arrow_stream`, batches of `shop.fetch_size` rows);
- SQLite: the standard library's `sqlite3`, `shop.fetch_size` rows at a time (SQLite is the demo and test
  shop; its columns have no fixed types, so each batch is typed here).

Arrow rather than pandas' `read_sql`, which is several times slower and needs many times the memory
(`bench/extract.py` measures the Arrow read).

Every batch is cast to the schema the caller asks for (bronze's canonical types). A value that does not
fit (SQLite lets any column hold text) is not guessed at: it is left null and the row gets an `_unreadable`
column naming the table, column, value and expected type, so `clean` quarantines the row (rule
`wrong_type`) and the run goes on. Each problem starts with `<table>.<column> = `, problems are joined by
`; ` (`clean` reads which columns they name: a personal text field is nulled, not its row). Text that is not
valid UTF-8 (SQLite stores any bytes as TEXT; a BLOB, a MySQL binary column or a PostgreSQL `SQL_ASCII`
database give bytes) is "not valid UTF-8 text"; an amount that is not a number is "not a number".
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
from sqlalchemy.engine import make_url

from core import db


@dataclass(frozen=True)
class SourceScope:
    """The key range and size of the rows a batch reads, and their latest past `updated_at`."""

    lowest_id: int
    highest_id: int
    rows: int
    latest_update: datetime | None
    now: datetime | None = None  # when the batch was taken: a later updated_at is not a watermark


UNREADABLE = "_unreadable"


def read_batches(url: str, query: str, schema: pa.Schema, table: str, fetch_rows: int) -> Iterator[pa.RecordBatch]:
    """The rows of `query` on the shop at `url` as record batches of `schema` (names and types, in order)."""
    kind = db.kind(url)
    raw = {"postgresql": _postgresql, "mysql": _mysql, "sqlite": _sqlite}[kind](url, query, fetch_rows)
    for batch in raw:
        if batch.num_rows:
            yield _as_schema(batch, schema, table)


def _as_schema(batch: pa.RecordBatch, schema: pa.Schema, table: str) -> pa.RecordBatch:
    """The batch as `schema`; values that do not fit are nulled and named in an added `_unreadable` column."""
    columns = []
    problems: list[list[str]] = [[] for _ in range(batch.num_rows)]
    for index, field in enumerate(schema):
        column = batch.column(index)
        if column.type != field.type or not _valid_text(column):
            try:
                column = column.cast(field.type)
                if not _valid_text(column):  # a driver may hand over text it did not check (SQL_ASCII)
                    raise pa.ArrowInvalid("invalid UTF-8")
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                column = _cast_each(column, field, table, problems)
        columns.append(column)
    if not any(problems):
        return pa.RecordBatch.from_arrays(columns, schema=schema)
    unreadable = pa.array(["; ".join(found) if found else None for found in problems], pa.string())
    return pa.RecordBatch.from_arrays(columns + [unreadable], schema=schema.append(pa.field(UNREADABLE, pa.string())))


def _cast_each(column: pa.Array, field: pa.Field, table: str, problems: list[list[str]]) -> pa.Array:
    """Cast value by value: a value that does not fit becomes null, and its row's problem list says why."""
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        column = column.cast(pa.binary())  # read as bytes: text that is not UTF-8 cannot even be shown as text
    values = []
    for row, value in enumerate(column):
        raw = value.as_py()
        if raw is None:
            values.append(None)
            continue
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError:
                values.append(None)
                problems[row].append(f"{table}.{field.name} = {_shown(raw)}: not valid UTF-8 text")
                continue
        try:
            values.append(pa.scalar(raw).cast(field.type).as_py())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            values.append(None)
            expected = "not a number" if pa.types.is_decimal(field.type) else f"expected {field.type}"
            problems[row].append(f"{table}.{field.name} = {_shown(raw)}: {expected}")
    return pa.array(values, field.type)


def _valid_text(column: pa.Array) -> bool:
    """False for a text column holding bytes that are not UTF-8 (Arrow does not check what a driver hands it)."""
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return True
    try:
        column.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _shown(value) -> str:
    """A value as a problem quotes it: its repr, at most 60 characters."""
    return repr(value)[:60]


def _postgresql(url: str, query: str, fetch_rows: int) -> Iterator[pa.RecordBatch]:
    import adbc_driver_postgresql.dbapi as adbc  # deferred: each driver only for its database kind (ADBC ~2 s)

    with adbc.connect(_plain_uri(url, "postgresql", keep_options=True)) as connection, connection.cursor() as cursor:
        cursor.execute(query)
        yield from cursor.fetch_record_batch()


def _mysql(url: str, query: str, fetch_rows: int) -> Iterator[pa.RecordBatch]:
    import connectorx  # deferred: each driver only for its database kind

    reader = connectorx.read_sql(_plain_uri(url, "mysql"), query, return_type="arrow_stream", batch_size=fetch_rows)
    yield from reader


def _sqlite(url: str, query: str, fetch_rows: int) -> Iterator[pa.RecordBatch]:
    # The Delta writer may pull batches from a thread of its own (one at a time, never at once), so the
    # connection may not insist on the thread that opened it.
    connection = sqlite3.connect(f"file:{make_url(url).database}?mode=ro", uri=True, check_same_thread=False)
    connection.text_factory = _sqlite_text
    try:
        cursor = connection.execute(query)
        names = [column[0] for column in cursor.description]
        while rows := cursor.fetchmany(fetch_rows):
            # Types are inferred per column and batch; the caller's schema decides what they become.
            yield pa.RecordBatch.from_arrays([_sqlite_column(values) for values in zip(*rows)], names=names)
    finally:
        connection.close()


def _sqlite_text(data: bytes) -> str | bytes:
    """A TEXT value: decoded, or its bytes when they are not UTF-8 (SQLite stores whatever it is given), for
    the cast to name it instead of the whole read failing on one value."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


def _sqlite_column(values: tuple) -> pa.Array:
    """One column of a SQLite batch; mixed value types (SQLite allows them) come as text, for the cast to judge
    (as bytes when some value is bytes: a BLOB, or TEXT that is not UTF-8)."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        if any(isinstance(value, bytes) for value in values):
            return pa.array([value if value is None or isinstance(value, bytes) else str(value).encode() for value in values], pa.binary())
        return pa.array([None if value is None else str(value) for value in values], pa.string())


def _plain_uri(url: str, scheme: str, keep_options: bool = False) -> str:
    """The SQLAlchemy URL as the driver's own URI: no `+driver` suffix. PostgreSQL keeps the URL's options
    (libpq's own: `sslmode`, `connect_timeout`, ...); MySQL's (e.g. `charset`) belong to the Python driver."""
    parsed = make_url(db.with_driver(url))
    return parsed.set(drivername=scheme, query=parsed.query if keep_options else {}).render_as_string(hide_password=False)
