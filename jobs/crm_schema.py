"""The CRM tables analysts query: names, columns and meaning in one place (the README documents them).

In PostgreSQL they live in schema `crm` (configurable); in the demo's SQLite file, unqualified.
"""
from __future__ import annotations

from sqlalchemy import BigInteger, Column, Date, Integer, MetaData, Numeric, SmallInteger, String, Table


def crm_metadata(schema: str | None) -> MetaData:
    """The CRM tables, in `schema` (None for SQLite)."""
    metadata = MetaData(schema=schema)
    Table(
        "customer_segments",
        metadata,
        Column("customer_id", BigInteger, primary_key=True, autoincrement=False, comment="-> shop customers.id"),
        Column("as_of", Date, nullable=False, comment="the run date the scores describe (end of that day, UTC)"),
        Column("recency_days", Integer, comment="days since the last purchase; null without purchases"),
        Column("frequency", BigInteger, nullable=False, comment="purchases (orders) up to as_of"),
        Column("monetary", Numeric(18, 2), nullable=False, comment="total spent up to as_of, shop currency"),
        Column("r_score", SmallInteger, comment="recency quintile score, 1 (longest ago) to 5 (most recent)"),
        Column("f_score", SmallInteger, comment="frequency quintile score, 1 (fewest) to 5 (most)"),
        Column("m_score", SmallInteger, comment="monetary quintile score, 1 (least) to 5 (most)"),
        Column("rfm_code", String(3), comment="r, f and m scores as one code, e.g. 545"),
        Column("segment", String(60), nullable=False, comment="named segment from conf/segments.yaml"),
        Column("run_id", String(250), nullable=False, comment="the pipeline run that produced the row"),
        comment="one row per customer: RFM scores and segment as of the latest published run date",
    )
    return metadata
