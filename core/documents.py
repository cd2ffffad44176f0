"""Document shops (MongoDB): collections and their embedded arrays read as the canonical tables, and written.

A shop URL `mongodb://[user:password@]host:port/<database>` (or `mongodb+srv://`) selects this source. The
source mapping (`conf/mappings/mongodb.yaml` unless `extract.mapping` names another) says, per canonical
table, which collection holds it and under which fields; a table `embedded` in a collection has one row per
element of that array field (an order's `items`, a customer's `addresses`, a cart's `items`), and its
parent key comes from the parent document (`$parent._id`).

Keys. The canonical keys are 64-bit integers. An integer `_id` (or reference) is kept as it is; an ObjectId
or a UUID becomes `stable_key(value)`: the first 8 bytes of its BLAKE2b hash, shifted to a non-negative
int64, the same for the document and for every reference to it, night after night. A string of ASCII
digits is read as that integer. An array element without a key of its own gets one from its parent's key
and its position in the array.

Values. Each field is read as its canonical column's type: numbers (int, double, Decimal128) for amounts
and quantities, booleans (or 0/1), BSON dates (or ISO text, checked by `clean`) for timestamps and dates,
and text (numbers become text). A value of another type (a string where a key or an amount is expected,
a sub-document where text is expected, text that is not valid UTF-8) is not guessed at: the column is left null and the row carries
`_unreadable`, which names the table, collection, field, value and expected type; `clean` puts the row in
quarantine with rule `wrong_type`. Fields the mapping does not know follow `new_columns` (ignored, or
carried as text: JSON for sub-documents and arrays).

Reads go through one cursor per collection (`shop.fetch_size` documents per round trip), and rows are
handed on as Arrow record batches of `shop.fetch_size` rows, so memory stays bounded by a batch whatever
the collection's size. Incremental reads filter on the collection's `updated_at` field (e.g. `updatedAt`),
which needs an index on that field in a large shop (`crm generate-shop` creates one).
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import BigInteger, Boolean, Date, DateTime, Integer, Numeric

from core.db import DocumentShopError, document_database, document_error, masked
from core.mapping import PARENT_FIELD, CheckedTable, SourceMapping, SourceSchemaError, SourceTable, watermark_field
from core.source_reader import SourceScope

log = logging.getLogger(__name__)

#: The bronze column naming what could not be read in a row (null when everything could).
UNREADABLE = "_unreadable"
#: Documents per collection the schema check looks at (the first ones in natural order).
SAMPLE_DOCUMENTS = 200


class WrongType(ValueError):
    """A field value of a type the canonical column cannot hold; the message says what was expected."""


# ---- keys and values ------------------------------------------------------------------------------------


def stable_key(value) -> int:
    """A document key as the canonical int64 key: integers as they are, ObjectIds and UUIDs hashed."""
    from bson import ObjectId  # deferred: bson/pymongo only for a document shop

    if isinstance(value, bool):
        raise WrongType("an integer, ObjectId or UUID key")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, ObjectId):
        return _hashed(b"objectid:" + value.binary)
    if isinstance(value, uuid.UUID):
        return _hashed(b"uuid:" + value.bytes)
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    raise WrongType("an integer, ObjectId or UUID key")


def element_key(parent_key: int, position: int) -> int:
    """The key of an array element that has none: from its parent's key and its position in the array."""
    return _hashed(b"element:" + parent_key.to_bytes(8, "big", signed=True) + position.to_bytes(4, "big"))


def _hashed(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big") >> 1


def _integer(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
        raise WrongType("an integer")
    return int(value)


def _number(value) -> float:
    from bson.decimal128 import Decimal128  # deferred: bson/pymongo only for a document shop

    if isinstance(value, Decimal128):
        return float(value.to_decimal())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise WrongType("a number")
    return float(value)


def _boolean(value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise WrongType("a boolean")


def _timestamp(value) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value.isoformat(sep=" ")
    if isinstance(value, str):
        return value  # ISO text: `clean` reads it, or quarantines it as an invalid_value naming the column
    raise WrongType("a date (BSON date or ISO text)")


def _date(value) -> str:
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        return value
    raise WrongType("a date (BSON date or ISO text)")


def _text(value) -> str:
    from bson import ObjectId  # deferred: bson/pymongo only for a document shop

    if isinstance(value, str):
        return value
    if isinstance(value, (int, float, ObjectId)) and not isinstance(value, bool):
        return str(value)
    raise WrongType("text")


def _carried(value) -> str:
    """An unknown field's value, carried as text: JSON for anything but a string."""
    return value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)


def converter(sql_type) -> Callable:
    """How a field value becomes the canonical column's value (raises WrongType when it cannot)."""
    if isinstance(sql_type, BigInteger):
        return stable_key
    if isinstance(sql_type, Integer):
        return _integer
    if isinstance(sql_type, Numeric):
        return _number  # to the column's decimal type per batch, rounded to its scale
    if isinstance(sql_type, Boolean):
        return _boolean
    if isinstance(sql_type, DateTime):
        return _timestamp
    if isinstance(sql_type, Date):
        return _date
    return _text


def _utf8(value):
    """`value`, unless it is text that was not valid UTF-8 in the document: the client decodes such bytes as
    U+FFFD (`unicode_decode_error_handler="replace"`) instead of failing the whole read, and no real name,
    e-mail or amount holds that replacement character."""
    if isinstance(value, str) and "\ufffd" in value:
        raise WrongType("valid UTF-8 text")
    return value


def field_getter(path: str | None) -> Callable[[dict, dict | None], object]:
    """Reads a mapped field of a row's document (dotted paths into sub-documents; `$parent.` the parent's);
    None (a column the shop does not have) reads null."""
    if path is None:
        return lambda document, parent: None
    from_parent = path.startswith(PARENT_FIELD)
    parts = (path[len(PARENT_FIELD) :] if from_parent else path).split(".")

    def get(document: dict, parent: dict | None):
        value = parent if from_parent else document
        for part in parts:
            if not isinstance(value, dict):
                return None
            value = value.get(part)
        return value

    return get


def _describe(value) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


# ---- the source ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Column:
    name: str
    field: str
    get: Callable[[dict, dict | None], object]
    convert: Callable


class DocumentShop:
    """A MongoDB shop read as the canonical tables: the document-store twin of extract's SQL reads."""

    def __init__(self, url: str, fetch_size: int):
        self.url = url
        self.fetch_size = fetch_size
        self.watermarks: dict[str, str] = {}  # canonical table -> the document field incremental reads filter on
        self.documents_read: dict[str, int] = {}
        self.latest_update: dict[str, datetime | None] = {}  # per table, from the documents read

    def label(self, source: SourceTable) -> str:
        where = f"collection {source.source}" + (f", array {source.embedded}" if source.embedded else "")
        return f"{source.name} ({where})"

    def check(self, mapping: SourceMapping) -> dict[str, CheckedTable]:
        """Compare the shop with the mapping; raises SourceSchemaError naming every problem, else the plan.

        A missing collection, a required field (key, created_at, updated_at) that none of the first
        SAMPLE_DOCUMENTS documents has, or a mapping feature documents do not have stops the run before
        anything is read. Fields outside the mapping found in those documents are carried or ignored.
        """
        from pymongo.errors import PyMongoError  # deferred: bson/pymongo only for a document shop

        problems, plan = [], {}
        try:
            with document_database(self.url) as database:
                present = set(database.list_collection_names())
                samples = {
                    name: list(database[name].find({}, limit=SAMPLE_DOCUMENTS))
                    for name in {source.source for source in mapping.tables.values()} & present
                }
        except PyMongoError as error:
            raise DocumentShopError(f"shop {masked(self.url)}: cannot be read: {document_error(error)}") from None
        for name, source in mapping.tables.items():
            label = self.label(source)
            if source.deleted_when:
                problems.append(
                    f"{label}: deleted_when is a SQL condition, which a document shop cannot evaluate; "
                    "leave it out (documents that are gone are found by the key reconcile)"
                )
            if source.source not in present:
                problems.append(f"{label}: collection {source.source} is missing")
                continue
            watermark = watermark_field(mapping, source)
            if watermark is None:
                problems.append(
                    f"{label}: no field to read it incrementally by; map updated_at to $parent.<field> or set tables.{name}.watermark"
                )
                continue
            self.watermarks[name] = watermark
            documents = samples[source.source]
            rows = [element for document in documents for element in _elements(document, source.embedded)] if source.embedded else documents
            seen = {key for row in rows for key in row}
            mapped = set()
            for column in source.canonical.columns:
                field = source.columns[column.name]
                if field is None or field.startswith(PARENT_FIELD):
                    continue
                top = field.split(".")[0]
                mapped.add(top)
                if rows and top not in seen:
                    if column.nullable is False or column.primary_key:
                        problems.append(
                            f"{label}: field {field} is in none of the first {len(documents)} documents "
                            f"(needed for {name}.{column.name}; fields seen: {', '.join(sorted(seen))})"
                        )
                    else:
                        log.warning(
                            "%s: field %s is in none of the first %d documents: %s.%s is read as null",
                            label,
                            field,
                            len(documents),
                            name,
                            column.name,
                        )
            embedded_here = {
                other.embedded
                for other in mapping.tables.values()
                if other.source == source.source and other.embedded and not source.embedded
            }
            plan[name] = CheckedTable.found(source, tuple(sorted(seen - mapped - embedded_here)))
        if problems:
            raise SourceSchemaError(
                f"shop {masked(self.url)} does not match mapping {mapping.name} ({mapping.path}); nothing was read: " + "; ".join(problems)
            )
        return plan

    def scope(self, source: CheckedTable, low: datetime | None, now: datetime):
        """No query: a document read needs no key ranges, and its high watermark (the latest watermark value
        not after `now`) is taken from the documents `rows` reads (`high_watermark`), not by another scan."""
        return SourceScope(0, 0, 0, None, now)

    def high_watermark(self, source: CheckedTable, scope) -> datetime | None:
        """The latest watermark value, not after the scope's `now`, of the documents `rows` read."""
        return self.latest_update.get(source.mapping.name)

    def rows(self, source: CheckedTable, low: datetime | None, scope, read_schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        """The rows of the documents changed after `low` (all when None): `read_schema` (the canonical and
        carried columns, then `_op`) plus `_unreadable`. One cursor; `scope` (SQL key ranges) is not needed."""
        mapping = source.mapping
        field = self.watermarks[mapping.name]
        changed = {field: {"$gt": low}} if low is not None else {}
        columns = [
            _Column(c.name, mapping.source_column(c.name), field_getter(mapping.source_column(c.name)), converter(c.type))
            for c in mapping.canonical.columns
        ]
        columns += [_Column(name, name, field_getter(name), _carried) for name in source.carried]
        schema = pa.schema(list(read_schema) + [pa.field(UNREADABLE, pa.string())])
        key_column = columns[0] if columns[0].name == "id" else None
        label = self.label(mapping)
        values: list[list] = [[] for _ in columns]
        unreadable: list[str | None] = []
        documents = 0
        stamp = field_getter(field)
        latest: datetime | None = None

        def add(row: dict, parent: dict | None, position: int) -> None:
            errors = []
            for index, column in enumerate(columns):
                raw = column.get(row, parent)
                if raw is None:
                    if column is key_column and parent is not None:  # an element without a key of its own
                        raw = _element_key_or_none(parent, position)
                    values[index].append(raw)
                    continue
                try:
                    values[index].append(_utf8(column.convert(raw)))
                except WrongType as expected:
                    values[index].append(None)
                    errors.append(
                        f"{mapping.name}.{column.name} (field {column.field}) = {_describe(raw)}: "
                        f"a {type(raw).__name__}, expected {expected}"
                    )
            unreadable.append(f"{label}: " + "; ".join(errors) if errors else None)

        with document_database(self.url) as database:
            cursor = database[mapping.source].find(changed, batch_size=self.fetch_size)
            try:
                for document in cursor:
                    documents += 1
                    stamped = stamp(document, None)
                    if isinstance(stamped, datetime) and stamped <= scope.now and (latest is None or stamped > latest):
                        latest = stamped
                    if mapping.embedded:
                        for position, element in enumerate(_elements(document, mapping.embedded)):
                            add(element, document, position)
                    else:
                        add(document, None, 0)
                    if len(unreadable) >= self.fetch_size:
                        yield _batch(values, unreadable, schema)
            finally:
                cursor.close()
                self.documents_read[mapping.name] = documents
                self.latest_update[mapping.name] = latest
        if unreadable:
            yield _batch(values, unreadable, schema)

    def keys(self, source: CheckedTable) -> pa.Array:
        """Every key of the table in the shop now (for the reconcile that finds deleted documents)."""
        mapping = source.mapping
        id_field = mapping.source_column("id")
        get_id = field_getter(id_field)
        keys = []
        with document_database(self.url) as database:
            if mapping.embedded:
                projection = {mapping.embedded: 1, "_id": 1}
                parent_field = id_field[len(PARENT_FIELD) :] if id_field.startswith(PARENT_FIELD) else None
                if parent_field:
                    projection[parent_field.split(".")[0]] = 1
                for document in database[mapping.source].find({}, projection, batch_size=self.fetch_size):
                    for position, element in enumerate(_elements(document, mapping.embedded)):
                        key = get_id(element, document)
                        keys.append(_element_key_or_none(document, position) if key is None else _key_or_none(key))
            else:
                for document in database[mapping.source].find({}, {id_field.split(".")[0]: 1}, batch_size=self.fetch_size):
                    keys.append(_key_or_none(get_id(document, None)))
        return pa.array([key for key in keys if key is not None], pa.int64())


def _key_or_none(value) -> int | None:
    try:
        return stable_key(value)
    except WrongType:
        return None


def _element_key_or_none(parent: dict, position: int) -> int | None:
    key = _key_or_none(parent.get("_id"))
    return None if key is None else element_key(key, position)


def _elements(document: dict, field: str) -> list:
    """The elements of an embedded array field that are sub-documents (others cannot be rows)."""
    found = field_getter(field)(document, None)
    return [element for element in found if isinstance(element, dict)] if isinstance(found, list) else []


def _batch(values: list[list], unreadable: list, schema: pa.Schema) -> pa.RecordBatch:
    """The collected rows as a record batch of `schema` (the columns read, `_op`, `_unreadable`; amounts
    rounded to their column's scale); empties the lists for the next batch."""
    rows = len(unreadable)
    arrays = []
    for field, column in zip(schema, values + [None, unreadable]):
        if column is None:  # _op: a document read is the row as it is now
            arrays.append(pa.repeat(pa.scalar("U", pa.string()), rows))
            continue
        if pa.types.is_decimal(field.type):
            arrays.append(pc.round(pa.array(column, pa.float64()), field.type.scale).cast(field.type))
        else:
            arrays.append(pa.array(column, field.type))
        column.clear()
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
