"""The pipeline's jobs, one module per verb: each `run(run_date, settings, run_id)` reads the lake, calls the
pure transforms of `features/` and `models/`, and writes. The platform they stand on is `core/`."""
