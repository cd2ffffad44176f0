"""Silver: what the current state of each shop table must satisfy after `clean`, and the events after `events`.

Rows checked: the whole table (one row per `id`); for `events`, the rows the run date's batch brought
(`batch_id`): the table grows by millions, and its older rows were checked on their night. A lake without
events (`events.source: none`, or no file yet) has no silver/events, which is not a failure. Every table gets
the rules of the canonical model (`model_expectations`): its columns present, `id` set and unique, every foreign-key column set.
Then its own
rules (`table_expectations`), listed per table. `clean` quarantines rows (or nulls fields, e.g. an e-mail) that break the critical rules, so
a critical failure here means a bug in `clean` or a bypassed lake; an enumeration outside its known values
is a warning (a shop may add a status before the CRM knows it).
"""

from __future__ import annotations

from datetime import date

import great_expectations.expectations as gxe

from core import shop_schema
from expectations.severity import CRITICAL, WARNING, columns_present_and_keyed
from jobs.clean import EMAIL_PATTERN, NONZERO_COLUMNS, POSITIVE_COLUMNS, RATING_RANGE  # the rules `clean` quarantines by
from jobs.events import SILVER_COLUMNS

TABLES: tuple[str, ...] = (*shop_schema.SHOP_TABLES, "events")
#: Tables a lake may not have yet: not validated until they exist.
OPTIONAL_TABLES: tuple[str, ...] = ("events",)
IDENTIFIED_BY = ["login", "session"]

ORDER_STATUSES = ["placed", "paid", "shipped", "delivered", "cancelled", "returned"]
CART_STATUSES = ["open", "abandoned", "converted"]
INQUIRY_STATUSES = ["open", "pending", "resolved"]
LANGUAGES = ["en", "zh"]


def rows_checked(run_date: date, name: str) -> dict[str, object]:
    """The rows of a silver table the gate checks, as column = value: all of it (none: it is the current state as
    of the run); of events, the run date's batch."""
    return {"batch_id": run_date.isoformat()} if name == "events" else {}


def expectations(table: str) -> list[gxe.Expectation]:
    """Everything checked on silver/<table>: the model's rules, then the table's own."""
    if table == "events":
        return event_expectations()
    return model_expectations(table) + table_expectations(table)


def event_expectations() -> list[gxe.Expectation]:
    """silver/events: the rules `jobs/events.py` quarantines by, and what stitching and visits guarantee."""
    return [
        gxe.ExpectTableColumnsToMatchSet(
            column_set=list(SILVER_COLUMNS), exact_match=True, severity=CRITICAL, description="the columns `jobs/events.py` writes"
        ),
        gxe.ExpectColumnValuesToBeUnique(
            column="event_id", severity=CRITICAL, description="each event once (duplicates by event_id are dropped)"
        ),
        *[
            gxe.ExpectColumnValuesToNotBeNull(column=column, severity=CRITICAL)
            for column in ("event_id", "session_id", "visit_id", "visit_started_at", "event_type", "occurred_at", "event_date")
        ],
        gxe.ExpectColumnValuesToBeInSet(column="event_type", value_set=list(shop_schema.EVENT_TYPES), severity=CRITICAL),
        gxe.ExpectColumnValuesToBeInSet(column="channel", value_set=list(shop_schema.EVENT_CHANNELS), severity=CRITICAL),
        gxe.ExpectColumnValuesToBeInSet(column="identified_by", value_set=IDENTIFIED_BY, severity=CRITICAL),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="occurred_at",
            column_B="visit_started_at",
            or_equal=True,
            severity=CRITICAL,
            description="a visit starts with its first event",
        ),
    ]


def model_expectations(table: str) -> list[gxe.Expectation]:
    """The rules every silver table gets from the canonical model (`core/shop_schema.py`)."""
    columns = [column.name for column in shop_schema.metadata.tables[table].columns]
    return [
        *columns_present_and_keyed(columns, "every canonical column is present (carried extra columns are fine)"),
        gxe.ExpectColumnValuesToBeUnique(column="id", severity=CRITICAL),
        *[
            gxe.ExpectColumnValuesToNotBeNull(
                column=column, severity=CRITICAL, description=f"every {table} row references its {parent} row"
            )
            for column, parent in shop_schema.FOREIGN_KEYS.get(table, ())
            if column not in shop_schema.OPTIONAL_REFERENCES.get(table, ())
        ],
    ]


def table_expectations(table: str) -> list[gxe.Expectation]:
    """The rules of one table beyond the model's (amounts in shop currency, quantities in units)."""
    rules: dict[str, list[gxe.Expectation]] = {
        "customers": [
            gxe.ExpectTableRowCountToBeBetween(min_value=1, severity=CRITICAL, description="a shop without customers is a broken extract"),
            gxe.ExpectColumnValuesToMatchRegex(column="email", regex=EMAIL_PATTERN, severity=CRITICAL),
            gxe.ExpectColumnValuesToBeInSet(column="language", value_set=LANGUAGES, severity=WARNING),
        ],
        "orders": [gxe.ExpectColumnValuesToBeInSet(column="status", value_set=ORDER_STATUSES, severity=WARNING)],
        "carts": [gxe.ExpectColumnValuesToBeInSet(column="status", value_set=CART_STATUSES, severity=WARNING)],
        "reviews": [
            gxe.ExpectColumnValuesToBeBetween(column="rating", min_value=RATING_RANGE[0], max_value=RATING_RANGE[1], severity=CRITICAL),
            gxe.ExpectColumnValuesToBeInSet(column="language", value_set=LANGUAGES, severity=WARNING),
        ],
        "inquiries": [gxe.ExpectColumnValuesToBeInSet(column="status", value_set=INQUIRY_STATUSES, severity=WARNING)],
    }
    amounts = [_positive(column) for column in POSITIVE_COLUMNS.get(table, ())]
    amounts += [
        gxe.ExpectColumnValuesToNotBeInSet(column=column, value_set=[0], severity=CRITICAL) for column in NONZERO_COLUMNS.get(table, ())
    ]
    return amounts + rules.get(table, [])


def _positive(column: str) -> gxe.Expectation:
    """`column` > 0 where set (critical)."""
    return gxe.ExpectColumnValuesToBeBetween(column=column, min_value=0, strict_min=True, severity=CRITICAL)
