"""The two severities the suites use (GX's own `FailureSeverity`: critical stops the run, a warning does not),
and the checks every lake layer of a shop table starts with."""

from __future__ import annotations

import great_expectations.expectations as gxe
from great_expectations.expectations.metadata_types import FailureSeverity

CRITICAL = FailureSeverity.CRITICAL
WARNING = FailureSeverity.WARNING


def columns_present_and_keyed(columns: list[str], description: str) -> list[gxe.Expectation]:
    """`columns` are all there (extra carried columns are fine) and every row has an `id` (critical)."""
    return [
        gxe.ExpectTableColumnsToMatchSet(column_set=columns, exact_match=False, severity=CRITICAL, description=description),
        gxe.ExpectColumnValuesToNotBeNull(column="id", severity=CRITICAL),
    ]
