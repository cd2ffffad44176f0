"""The platform every job stands on: configuration, Spark, the lake, databases, schemas, migrations, the run log."""

import os

# MLflow sends usage telemetry unless told not to: this pipeline does not phone home. Set here, in the
# package every entry point (CLI, DAG tasks, tests) imports before MLflow; MLFLOW_DISABLE_TELEMETRY=false
# in the environment allows it.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
