"""Source mapping: the real shop's table and column names -> the canonical model of `shop_schema`.

A shop whose tables or columns have other names works by configuration alone: `conf/mappings/<name>.yaml`
(chosen by `extract.mapping`) names, per canonical table, its source table, the source column of each
canonical column, an optional soft-delete condition and what to do with source columns the model does not
know. Anything not listed keeps its canonical name. Shipped: `canonical` (the shop `crm generate-shop`
writes) and `woocommerce` (WooCommerce-like names, as `crm generate-shop --schema woocommerce` writes).

`check_source` compares a mapping with the live shop before anything is read: a missing table or column,
or a column whose type cannot hold the canonical one, stops the run with an error naming both.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Boolean, Date, DateTime, Integer, Numeric, String, Table, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.types import NullType

from core import db, shop_schema

NewColumns = Literal["ignore", "carry"]
#: How a column of an embedded table names a field of its parent document, e.g. `$parent._id`.
PARENT_FIELD = "$parent."


class MappingError(ValueError):
    """A mapping file that is not valid; the message names the file and the key."""


class SourceSchemaError(ValueError):
    """The shop does not match the mapping (missing table or column, incompatible type): nothing was read."""


class TableMapping(BaseModel):
    """How one canonical table is found in the shop."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str | None = Field(None, description="the shop's table (default: the canonical name)")
    columns: dict[str, str | None] = Field(
        default_factory=dict,
        description="canonical column -> shop column; null: the shop has no such column, read as null (only for a column that "
        "may be null, e.g. products.category, customers.accepts_marketing)",
    )
    deleted_when: str | None = Field(
        None, description="SQL condition on the shop row that marks it deleted (soft delete), e.g. deleted_at IS NOT NULL"
    )
    new_columns: NewColumns | None = Field(None, description="override of the mapping's new_columns for this table")
    embedded: str | None = Field(
        None,
        description="document shops: the array field of the source collection's documents whose elements "
        "are this table's rows (columns may then read the parent document as $parent.<field>)",
    )
    watermark: str | None = Field(
        None,
        description="document shops: the field of the collection's documents the incremental read filters "
        "on (default: the updated_at field of the table that reads the collection's documents)",
    )


class MappingFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    new_columns: NewColumns = Field(
        "ignore", description="shop columns the model does not know: ignore them, or carry them into bronze and silver as text"
    )
    tables: dict[str, TableMapping] = Field(default_factory=dict)


@dataclass(frozen=True)
class SourceTable:
    """One canonical table resolved against a mapping: where it lives in the shop and under which names."""

    canonical: Table
    source: str
    columns: dict[str, str | None]  # canonical -> source, every canonical column; None: not in the shop, read as null
    deleted_when: str | None
    new_columns: NewColumns
    embedded: str | None = None  # document shops: the array field holding this table's rows
    watermark: str | None = None  # document shops: the document field the incremental read filters on

    @property
    def name(self) -> str:
        return self.canonical.name

    def source_column(self, canonical: str) -> str | None:
        """The shop's column of a canonical column; None when the shop has none (the column is read as null)."""
        return self.columns[canonical]


@dataclass(frozen=True)
class SourceMapping:
    name: str
    path: Path
    tables: dict[str, SourceTable]

    def __getitem__(self, canonical_table: str) -> SourceTable:
        return self.tables[canonical_table]


def load_mapping(path: Path) -> SourceMapping:
    """Read and validate a mapping file; every canonical table and column resolved to its shop name."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        known = ", ".join(sorted(p.stem for p in path.parent.glob("*.yaml"))) or "none"
        raise MappingError(f"{path}: mapping file not found (mappings in {path.parent}: {known})") from None
    except yaml.YAMLError as error:
        raise MappingError(f"{path}: not valid YAML: {error}") from None
    try:
        parsed = MappingFile.model_validate(raw)
    except ValidationError as error:
        problems = [f"{'.'.join(str(p) for p in item['loc'])}: {item['msg']}" for item in error.errors()]
        raise MappingError(f"{path}: " + "; ".join(problems)) from None
    unknown_tables = sorted(set(parsed.tables) - set(shop_schema.SHOP_TABLES))
    if unknown_tables:
        raise MappingError(
            f"{path}: tables.{unknown_tables[0]}: not a canonical table; expected one of {', '.join(shop_schema.SHOP_TABLES)}"
        )
    tables = {}
    for name in shop_schema.SHOP_TABLES:
        table = shop_schema.metadata.tables[name]
        entry = parsed.tables.get(name, TableMapping())
        canonical_columns = [column.name for column in table.columns]
        unknown = sorted(set(entry.columns) - set(canonical_columns))
        if unknown:
            raise MappingError(
                f"{path}: tables.{name}.columns.{unknown[0]}: not a column of canonical table "
                f"{name}; expected one of {', '.join(canonical_columns)}"
            )
        columns = {column: entry.columns.get(column, column) for column in canonical_columns}
        required = [c.name for c in table.columns if c.primary_key or not c.nullable or c.name in _required_references(name)]
        absent_required = sorted(column for column in required if columns[column] is None)
        if absent_required:
            raise MappingError(
                f"{path}: tables.{name}.columns.{absent_required[0]}: null (no such shop column) is only for a column that may "
                f"be null; {name}.{absent_required[0]} is needed (required: {', '.join(required)})"
            )
        parent_reads = sorted(column for column, field in columns.items() if field is not None and field.startswith(PARENT_FIELD))
        if parent_reads and not entry.embedded:
            raise MappingError(
                f"{path}: tables.{name}.columns.{parent_reads[0]}: {columns[parent_reads[0]]} reads a "
                f"parent document, which only an embedded table has (set tables.{name}.embedded)"
            )
        tables[name] = SourceTable(
            canonical=table,
            source=entry.source or name,
            columns=columns,
            deleted_when=entry.deleted_when,
            new_columns=entry.new_columns or parsed.new_columns,
            embedded=entry.embedded,
            watermark=entry.watermark,
        )
    return SourceMapping(path.stem, path, tables)


def _required_references(table: str) -> set[str]:
    """The reference columns every row of `table` needs (`shop_schema.FOREIGN_KEYS` less the optional ones)."""
    optional = set(shop_schema.OPTIONAL_REFERENCES.get(table, ()))
    return {column for column, _ in shop_schema.FOREIGN_KEYS.get(table, ()) if column not in optional}


def absent_columns(source: SourceTable) -> list[str]:
    """The canonical columns the shop does not have (mapped to null): read as null."""
    return [column for column, field in source.columns.items() if field is None]


def watermark_field(mapping: SourceMapping, source: SourceTable) -> str | None:
    """The field a document collection is read incrementally by: the table's own `watermark`, its mapped
    `updated_at`, or (an embedded table) its parent's."""
    if source.watermark:
        return source.watermark
    if not source.embedded:
        return source.source_column("updated_at")
    own = source.source_column("updated_at")
    if own.startswith(PARENT_FIELD):
        return own[len(PARENT_FIELD) :]
    readers = [other for other in mapping.tables.values() if other.source == source.source and not other.embedded]
    return readers[0].source_column("updated_at") if readers else None


@dataclass(frozen=True)
class CheckedTable:
    """A source table as found in the shop: the mapping plus the extra columns to carry."""

    mapping: SourceTable
    carried: tuple[str, ...]  # shop columns outside the model, carried as text
    ignored: tuple[str, ...]  # shop columns outside the model, left out

    @classmethod
    def found(cls, mapping: SourceTable, extra: tuple[str, ...]) -> "CheckedTable":
        """The table with the shop's columns outside the model (`extra`) carried or ignored, as mapped."""
        carried = extra if mapping.new_columns == "carry" else ()
        return cls(mapping, carried, tuple(column for column in extra if column not in carried))


def check_source(url: str, mapping: SourceMapping) -> dict[str, CheckedTable]:
    """Compare the shop with the mapping; raises SourceSchemaError naming every problem, else the plan."""
    if db.kind(url) == "sqlite":
        if not Path(make_url(url).database or "").is_file():
            raise SourceSchemaError(f"shop database {db.masked(url)}: no such SQLite file")
    embedded = sorted(name for name, source in mapping.tables.items() if source.embedded)
    if embedded:
        raise SourceSchemaError(
            f"mapping {mapping.name} ({mapping.path}) embeds tables.{embedded[0]} in documents, "
            f"which only a document shop (mongodb://) has; the shop is {db.masked(url)}"
        )
    inspector = inspect(db.engine(url))
    present_tables = set(inspector.get_table_names())
    problems, plan = [], {}
    for name, source in mapping.tables.items():
        label = name if source.source == name else f"{source.source} (canonical {name})"
        if source.source not in present_tables:
            problems.append(f"table {label} is missing")
            continue
        present = {column["name"]: column["type"] for column in inspector.get_columns(source.source)}
        source = _without_unmapped_optional_columns(name, source, present)
        mapped = set()
        for column in source.canonical.columns:
            shop_column = source.columns[column.name]
            if shop_column is None:  # mapped as absent: read as null
                continue
            mapped.add(shop_column)
            if shop_column not in present:
                problems.append(
                    f"{label}: column {shop_column} is missing (needed for {name}.{column.name}; present: {', '.join(sorted(present))})"
                )
            elif not readable_as(present[shop_column], column.type):
                problems.append(
                    f"{label}: column {shop_column} is {present[shop_column]}, which cannot be read "
                    f"as {name}.{column.name} {column.type} (expected {_family(column.type)})"
                )
        plan[name] = CheckedTable.found(source, tuple(sorted(set(present) - mapped)))
    if problems:
        raise SourceSchemaError(
            f"shop database {db.masked(url)} does not match mapping {mapping.name} "
            f"({mapping.path}); nothing was read: " + "; ".join(problems)
        )
    return plan


def _without_unmapped_optional_columns(name: str, source: SourceTable, present: dict) -> SourceTable:
    """`source` with the optional columns (`shop_schema.OPTIONAL_COLUMNS`) the shop lacks and the mapping
    leaves under their canonical names read as null, as if mapped to null; a renamed one stays required."""
    absent = [column for column in shop_schema.OPTIONAL_COLUMNS.get(name, ()) if source.columns[column] == column and column not in present]
    return replace(source, columns={**source.columns, **dict.fromkeys(absent)}) if absent else source


def readable_as(source_type, canonical_type) -> bool:
    """Whether a shop column's type holds the canonical type's values without loss of meaning."""
    if isinstance(source_type, NullType):
        return True  # the database does not say (e.g. SQLite without a declared type): rows decide
    if isinstance(canonical_type, (String,)):
        return True
    if isinstance(canonical_type, Boolean):
        return isinstance(source_type, (Boolean, Integer))
    if isinstance(canonical_type, (Integer, Numeric)):
        return isinstance(source_type, (Integer, Numeric)) and not isinstance(source_type, Boolean)
    if isinstance(canonical_type, (DateTime, Date)):
        # Text timestamps (SQLite keeps them so) are read and checked row by row by `clean`.
        return isinstance(source_type, (DateTime, Date, String))
    return False


def _family(canonical_type) -> str:
    if isinstance(canonical_type, Boolean):
        return "a boolean or integer column"
    if isinstance(canonical_type, (Integer, Numeric)):
        return "a numeric column"
    if isinstance(canonical_type, (DateTime, Date)):
        return "a date/time or text column"
    return "any column"
