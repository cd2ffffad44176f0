"""The two severities the suites use, GX's own `FailureSeverity`: critical stops the run, a warning does not."""
from __future__ import annotations

from great_expectations.expectations.metadata_types import FailureSeverity

CRITICAL = FailureSeverity.CRITICAL
WARNING = FailureSeverity.WARNING
