"""shop-crm: an analytics pipeline that turns an e-commerce shop's database into a working CRM."""

from setuptools import find_packages, setup

setup(
    name="shop-crm",
    version="0.1.0",
    description="Nightly Airflow + Spark + Delta Lake pipeline: shop database in, CRM tables and exports out.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.12",
    packages=find_packages(
        include=[
            f"{package}{tail}"
            for package in ("jobs", "core", "cli", "demo_shop", "features", "models", "expectations")
            for tail in ("", ".*")
        ]
    ),
    # The migrations' revision files are read by Alembic from their folder, not imported as modules.
    package_data={"core": ["migrations/script.py.mako", "migrations/versions/*.py"]},
    install_requires=[
        "apache-airflow>=3.3,<3.4",
        # [connect]: the tasks are Spark Connect clients of the night's server (core/spark_server.py).
        "pyspark[connect]>=4.2,<4.3",
        "delta-spark>=4.4,<4.5",
        "deltalake>=1.6,<2",
        "great-expectations>=1.24,<2",
        "mlflow>=3.17,<4",
        "scikit-learn>=1.9,<2",
        "pandas>=2.3,<3",
        "pyarrow<26",
        "numpy>=2",
        "scipy",
        "sqlalchemy>=2.1,<2.2",
        "alembic>=1.16,<2",  # the CRM schema's migrations (core/migrations/)
        "pydantic>=2.14,<3",
        "pyyaml",
        # Campaign files' expressions are parsed and checked before Spark sees them (models/campaign_sql.py).
        "sqlglot>=30.30,<31",
        "click>=8.1",
        "psycopg2-binary",
        # Airflow 3 opens its PostgreSQL metadata database asynchronously too (`crm airflow`, cli/airflow_server.py).
        "asyncpg>=0.32,<0.33",
        "pymysql",
        # Extraction into bronze: Arrow readers (PostgreSQL: ADBC; MySQL/MariaDB: connectorx).
        "adbc-driver-postgresql>=1.13,<2",
        "adbc-driver-manager>=1.13,<2",
        "connectorx>=0.4.6,<0.5",
        # Document shops (MongoDB, or FerretDB in the tests): core/documents.py.
        "pymongo>=4.20,<5",
        # The lexicon baseline of the review sentiment model (models/reviews.py; English only).
        "vaderSentiment>=3.3,<4",
    ],
    extras_require={
        # lifetimes: the reference the BG/NBD and Gamma-Gamma tests compare with, and its CDNOW data.
        # threadpoolctl (scikit-learn's own dependency): the tests' models on one OpenMP thread (tests/conftest.py).
        "test": ["pytest", "hypothesis", "duckdb", "polars", "lifetimes", "ruff", "threadpoolctl"],
        # bench/extract.py: the process-tree memory sampler.
        "bench": ["psutil"],
    },
    entry_points={"console_scripts": ["crm=cli.main:main"]},
)
