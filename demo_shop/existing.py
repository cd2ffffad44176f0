"""A demo shop is never written over a shop that holds rows, unless asked to (`--replace`)."""

from __future__ import annotations

from core import db


class ShopExistsError(ValueError):
    """The target database already holds a shop; pass replace=True to drop and regenerate it."""


def refuse_filled_tables(url: str, filled: list[str], replace: bool) -> None:
    """Raise ShopExistsError naming the shop tables that hold rows, unless `replace` allows dropping them."""
    if filled and not replace:
        raise ShopExistsError(
            f"{db.masked(url)}: shop tables already hold rows ({', '.join(filled)}); "
            "pass replace=True (crm generate-shop --replace) to drop and regenerate them"
        )
