"""A generated shop written under a mapping's names (`crm generate-shop --schema woocommerce`): the canonical
tables created first, then renamed to the shop layout a mapping in `conf/mappings/` reads."""

from __future__ import annotations

from sqlalchemy import inspect

from core import db
from core.mapping import SourceMapping
from demo_shop.existing import refuse_filled_tables


def clear_renamed_tables(url: str, mapping: SourceMapping, replace: bool) -> None:
    """Make room for `rename_shop`: drop the shop tables the mapping renames to that exist already.

    A table holding rows is dropped only with `replace`; otherwise `ShopExistsError` names it.
    """
    engine = db.engine(url)
    quote = engine.dialect.identifier_preparer.quote
    renamed = [source.source for name, source in mapping.tables.items() if source.source != name]
    existing = [table for table in renamed if table in set(inspect(engine).get_table_names())]
    with engine.begin() as connection:
        filled = [table for table in existing if connection.exec_driver_sql(f"SELECT 1 FROM {quote(table)} LIMIT 1").first() is not None]
        refuse_filled_tables(url, filled, replace)
        for table in existing:
            connection.exec_driver_sql(f"DROP TABLE {quote(table)}")


def rename_shop(url: str, mapping: SourceMapping) -> None:
    """Rename a canonical shop's tables and columns to the mapping's names (`generate-shop --schema`)."""
    engine = db.engine(url)
    quote = engine.dialect.identifier_preparer.quote
    with engine.begin() as connection:
        for name, source in mapping.tables.items():
            for canonical, shop_column in source.columns.items():
                if shop_column is None:  # the mapped shop has no such column
                    connection.exec_driver_sql(f"ALTER TABLE {quote(name)} DROP COLUMN {quote(canonical)}")
                elif canonical != shop_column:
                    connection.exec_driver_sql(f"ALTER TABLE {quote(name)} RENAME COLUMN {quote(canonical)} TO {quote(shop_column)}")
            if source.source != name:
                connection.exec_driver_sql(f"ALTER TABLE {quote(name)} RENAME TO {quote(source.source)}")
