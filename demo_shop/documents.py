"""A generated shop written as documents (`crm generate-shop --url mongodb://...`): each canonical table into
the collection and fields a mapping names, embedded tables into their parent's arrays."""

from __future__ import annotations

from datetime import date, datetime

from core.mapping import PARENT_FIELD, SourceMapping, SourceTable, watermark_field
from demo_shop.existing import refuse_filled_tables


class DocumentWriter:
    """Writes canonical rows as a mapping's documents: each table into its collection under its fields, the
    rows of an embedded table into the array field of their parent's document.

    Rows come as dicts of canonical column -> Python value, one call per table group (a parent and its
    embedded tables together, so every child finds its parent). A null value leaves its field out, as
    document shops do. A child whose parent is not among the rows (an order item of a deleted order) has
    no document to live in: it is counted in `not_embedded` and not written.
    """

    def __init__(self, url: str, database, mapping: SourceMapping, batch_documents: int = 10_000):
        self.url = url
        self.database = database
        self.mapping = mapping
        self.batch_documents = batch_documents
        self.not_embedded: dict[str, int] = {}

    def collections(self) -> list[str]:
        return sorted({source.source for source in self.mapping.tables.values()})

    def watermark_fields(self) -> dict[str, str]:
        """Per collection, the field incremental reads filter on (what `create_indexes` indexes)."""
        return {source.source: watermark_field(self.mapping, source) for source in self.mapping.tables.values() if not source.embedded}

    def prepare(self, replace: bool) -> None:
        """Drop the mapping's collections (refused when one holds documents, unless `replace`), then
        create them with an index on their watermark field."""
        present = set(self.database.list_collection_names())
        filled = [name for name in self.collections() if name in present and self.database[name].find_one({}, {"_id": 1})]
        refuse_filled_tables(self.url, filled, replace)
        for name in self.collections():
            self.database[name].drop()
            self.database.create_collection(name)
        for collection, field in self.watermark_fields().items():
            if field:
                self.database[collection].create_index(field)

    def write(self, rows: dict[str, list[dict]]) -> None:
        """Insert the documents of the given tables (top-level tables with their embedded children)."""
        by_collection: dict[str, list[dict]] = {}
        for name, source in self.mapping.tables.items():
            if source.embedded or name not in rows:
                continue
            documents = [self._document(source, row) for row in rows[name]]
            for child_name, child in self.mapping.tables.items():
                if child.source == source.source and child.embedded:
                    self._embed(child_name, child, documents, rows.get(child_name, []))
            by_collection.setdefault(source.source, []).extend(documents)
        for collection, documents in by_collection.items():
            for start in range(0, len(documents), self.batch_documents):
                self.database[collection].insert_many(documents[start : start + self.batch_documents], ordered=False)

    def _embed(self, name: str, child: SourceTable, parents: list[dict], rows: list[dict]) -> None:
        parent_column = next(column for column, field in child.columns.items() if field == f"{PARENT_FIELD}_id")
        by_parent: dict[object, list[dict]] = {}
        for row in rows:
            by_parent.setdefault(row[parent_column], []).append(self._document(child, row))
        for document in parents:
            _set_path(document, child.embedded, by_parent.pop(document["_id"], []))
        orphans = sum(len(elements) for elements in by_parent.values())
        self.not_embedded[name] = self.not_embedded.get(name, 0) + orphans

    @staticmethod
    def _document(source: SourceTable, row: dict) -> dict:
        document: dict = {}
        for column, value in row.items():
            field = source.columns[column]
            if value is None or field is None or field.startswith(PARENT_FIELD):
                continue
            if isinstance(value, date) and not isinstance(value, datetime):
                value = datetime(value.year, value.month, value.day)  # BSON has dates with a time only
            _set_path(document, field, value)
        return document


def _set_path(document: dict, path: str, value) -> None:
    parts = path.split(".")
    for part in parts[:-1]:
        document = document.setdefault(part, {})
    document[parts[-1]] = value
