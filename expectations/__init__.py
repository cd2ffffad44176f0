"""Great Expectations suites, one per lake layer and table: the quality gates `jobs.validate` runs.

What is checked on a table is in the module of its layer, in one function: `bronze.expectations(table)`,
`silver.expectations(table)`, `gold.expectations(table)`. Each expectation carries GX's own `severity`:
`CRITICAL` stops the run (`jobs.validate.QualityGateError`), `WARNING` is only recorded (validation results,
Data Docs, the run's quality summary).
"""

from __future__ import annotations

from types import ModuleType

try:
    import great_expectations as gx
except SystemExit as exited:
    # GX imports pyspark's Spark Connect module, whose dependency check calls sys.exit(0) when the main
    # module has no file (`python -c`, a heredoc) and grpcio-status is missing: a gate would "pass" silently.
    raise ImportError(
        "great_expectations could not be imported: pyspark's Spark Connect check exited the interpreter "
        "(it does so under `python -c` when grpcio-status is missing); run from a script file or `python -m`"
    ) from exited

from expectations import bronze, gold, silver

LAYER_SUITES: dict[str, ModuleType] = {"bronze": bronze, "silver": silver, "gold": gold}


def tables(layer: str) -> tuple[str, ...]:
    """The tables of `layer` that have a suite, in the order they are validated."""
    return _module(layer).TABLES


def suite_name(layer: str, table: str) -> str:
    """The suite's name in the GX project: `silver.orders` (GX store keys may not contain `/`)."""
    return f"{layer}.{table}"


def suite(layer: str, table: str) -> gx.ExpectationSuite:
    """The expectation suite of one lake table, built fresh from its layer's rules."""
    module = _module(layer)
    if table not in module.TABLES:
        raise ValueError(f"no expectation suite for {layer}/{table}; {layer} has suites for {', '.join(module.TABLES)}")
    return gx.ExpectationSuite(name=suite_name(layer, table), expectations=module.expectations(table))


def _module(layer: str) -> ModuleType:
    if layer not in LAYER_SUITES:
        raise ValueError(f"unknown lake layer {layer!r}; expected one of {', '.join(LAYER_SUITES)}")
    return LAYER_SUITES[layer]
