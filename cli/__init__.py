"""The operators' command line, `crm`: run and backfill nights, status, doctor, configuration, the demo."""
