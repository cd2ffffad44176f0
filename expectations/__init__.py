"""Great Expectations suites per layer and table, used as gates by the DAGs (they arrive with the ingestion issue)."""
