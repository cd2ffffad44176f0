"""Bronze: what each shop table's batch of the run date must look like as extracted.

Rows checked: the run's batch only (`_batch_id` = the run date). An incremental night may bring no row for
a table; every check passes on zero rows. Delete markers (`_op = 'D'`, from a key reconcile) carry only
`id`, so no source column other than `id` is required to be set. What the extraction guarantees (the columns,
`_op`) is critical; a row without `id` is a warning: it is the shop's data, which `clean` quarantines
(`null_key`, naming table and column), so it must not stop the night.
"""

from __future__ import annotations

from datetime import date

import great_expectations.expectations as gxe

from core import shop_schema
from expectations.severity import CRITICAL, WARNING
from jobs.extract import BRONZE_COLUMNS

TABLES: tuple[str, ...] = shop_schema.SHOP_TABLES
OPERATIONS = ("U", "D")  # upsert, delete


def rows_checked(run_date: date, name: str) -> dict[str, object]:
    """The rows of a bronze table the gate checks, as column = value: the run date's batch."""
    return {"_batch_id": run_date.isoformat()}


def expectations(table: str) -> list[gxe.Expectation]:
    """Everything checked on bronze/<table>."""
    required = [column.name for column in shop_schema.metadata.tables[table].columns] + list(BRONZE_COLUMNS)
    return [
        gxe.ExpectTableColumnsToMatchSet(
            column_set=required,
            exact_match=False,
            severity=CRITICAL,
            description="the canonical columns and the bronze bookkeeping columns are present (carried extra columns are fine)",
        ),
        gxe.ExpectColumnValuesToNotBeNull(
            column="id", severity=WARNING, description="a row without id is quarantined by clean (null_key); the night goes on"
        ),
        gxe.ExpectColumnValuesToNotBeNull(column="_op", severity=CRITICAL),
        gxe.ExpectColumnValuesToBeInSet(column="_op", value_set=list(OPERATIONS), severity=CRITICAL),
    ]
