"""Spark types of the canonical shop columns (typed for silver, as read from the source for bronze), and of
the gold tables that become CRM tables."""

from __future__ import annotations

from datetime import date

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    BooleanType,
    DataType,
    DateType,
    DecimalType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)
from sqlalchemy import BigInteger, Boolean, Date, DateTime, Float, Integer, Numeric, String, Table, Text

from core.crm_schema import crm_metadata


def spark_type(sql_type) -> DataType:
    """The Spark type that holds a canonical SQLAlchemy column type without loss."""
    if isinstance(sql_type, BigInteger):
        return LongType()
    if isinstance(sql_type, Integer):
        return IntegerType()
    if isinstance(sql_type, Float):  # a Numeric too: floating point, not decimal
        return DoubleType()
    if isinstance(sql_type, Numeric):
        return DecimalType(sql_type.precision or 38, sql_type.scale or 0)
    if isinstance(sql_type, Boolean):
        return BooleanType()
    if isinstance(sql_type, DateTime):
        return TimestampType()
    if isinstance(sql_type, Date):
        return DateType()
    if isinstance(sql_type, (String, Text)):
        return StringType()
    raise TypeError(f"no Spark type for canonical SQL type {sql_type!r}")


def canonical_schema(table: Table) -> StructType:
    """The typed schema of a silver table (or of a gold table from its CRM table)."""
    return StructType([StructField(column.name, spark_type(column.type), True) for column in table.columns])


def bronze_type(sql_type) -> DataType:
    """How bronze keeps a column: dates and timestamps as the source's text (SQLite has no such type)."""
    if isinstance(sql_type, (DateTime, Date)):
        return StringType()
    return spark_type(sql_type)


def bronze_arrow_type(sql_type) -> pa.DataType:
    """`bronze_type` as Arrow: how the JVM-free extraction writes the column into bronze."""
    kind = bronze_type(sql_type)
    if isinstance(kind, DecimalType):
        return pa.decimal128(kind.precision, kind.scale)
    arrow = {LongType: pa.int64(), IntegerType: pa.int32(), BooleanType: pa.bool_(), StringType: pa.string()}
    return arrow[type(kind)]


def gold_rows(df: DataFrame, table: str, run_date: date, run_id: str) -> DataFrame:
    """`df` as the run date's rows of gold/<table>: the CRM table's columns in its order and types, with
    `as_of` (the run date) and `run_id`. A column `df` lacks is an error naming it."""
    columns = crm_metadata(None).tables[table].columns
    rows = df.withColumns({"as_of": F.lit(run_date), "run_id": F.lit(run_id)})
    missing = [column.name for column in columns if column.name not in rows.columns]
    if missing:
        raise ValueError(f"gold/{table}: the rows lack column(s) {missing}; they have {sorted(df.columns)}")
    return rows.select(*[F.col(column.name).cast(spark_type(column.type)).alias(column.name) for column in columns])


def no_gold_rows(spark: SparkSession, table: str) -> DataFrame:
    """An empty frame with gold/<table>'s columns (a night with nothing to write still writes its partition)."""
    return spark.createDataFrame([], canonical_schema(crm_metadata(None).tables[table]))
