"""The pipeline's jobs (one module per verb) and their shared plumbing: configuration, Spark, the lake, databases."""
