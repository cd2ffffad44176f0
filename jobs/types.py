"""Spark types of the canonical shop columns: typed for silver, as read from the source for bronze."""
from __future__ import annotations

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


def bronze_arrow_type(sql_type) -> "pa.DataType":
    """`bronze_type` as Arrow: how the JVM-free extraction writes the column into bronze."""
    import pyarrow as pa

    kind = bronze_type(sql_type)
    if isinstance(kind, DecimalType):
        return pa.decimal128(kind.precision, kind.scale)
    arrow = {LongType: pa.int64(), IntegerType: pa.int32(), BooleanType: pa.bool_(), StringType: pa.string()}
    return arrow[type(kind)]
