"""Tests for the throwaway database servers in tests/dbservers.py."""

from __future__ import annotations

import datetime as dt
import errno
import os
import socket
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

try:
    import dbservers
except ImportError:
    from tests import dbservers

DbServer = dbservers.DbServer

TEXT = "你好，世界 🛒"  # CJK + fullwidth comma + a 4-byte char (needs utf8mb4)
AMOUNT = Decimal("1234567890.12")  # max precision of NUMERIC(12,2)
WHEN = dt.datetime(2024, 2, 29, 23, 59, 58, 123456)


def _roundtrip(server: DbServer, database: str) -> None:
    """Create `database`, connect over TCP as the app user and round-trip a row."""
    server.create_database(database)
    engine = sa.create_engine(server.url(database))
    try:
        meta = sa.MetaData()
        orders = sa.Table(
            "orders",
            meta,
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("note", sa.String(100), nullable=False),
            sa.Column("amount", sa.Numeric(12, 2), nullable=False),
            sa.Column("created_at", sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb"), nullable=False),
        )
        with engine.begin() as conn:
            meta.create_all(conn)
            conn.execute(orders.insert(), [{"id": 1, "note": TEXT, "amount": AMOUNT, "created_at": WHEN}])
        with engine.connect() as conn:
            row = conn.execute(sa.select(orders)).one()
            # filter on the text too, so the server-side encoding is checked, not just bytes
            n = conn.execute(sa.select(sa.func.count()).where(orders.c.note == TEXT)).scalar_one()
            length = conn.execute(sa.select(sa.func.char_length(orders.c.note))).scalar_one()
        assert row.note == TEXT
        assert row.amount == AMOUNT and isinstance(row.amount, Decimal)
        assert row.created_at == WHEN
        assert n == 1
        assert length == len(TEXT)
    finally:
        engine.dispose()

    # create_database drops an existing database first
    server.create_database(database)
    engine = sa.create_engine(server.url(database))
    try:
        with engine.connect() as conn:
            assert not sa.inspect(conn).has_table("orders")
    finally:
        engine.dispose()


def _check_app_user(server: DbServer, database: str) -> None:
    engine = sa.create_engine(server.url(database))
    try:
        with engine.connect() as conn:
            if server.kind == "postgresql":
                assert conn.execute(sa.text("SELECT current_user")).scalar_one() == server.user
                assert conn.execute(sa.text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")).scalar_one() is False
                assert conn.execute(sa.text("SHOW server_encoding")).scalar_one() == "UTF8"
            else:
                assert conn.execute(sa.text("SELECT CURRENT_USER()")).scalar_one().startswith(server.user + "@")
                assert conn.execute(sa.text("SELECT @@character_set_database, @@collation_database")).one() == (
                    "utf8mb4",
                    "utf8mb4_unicode_ci",
                )
                # no global privileges: cannot create other databases
                with pytest.raises(sa.exc.DBAPIError):
                    conn.execute(sa.text("CREATE DATABASE not_allowed"))
    finally:
        engine.dispose()

    # password authentication is really enforced over TCP
    bad = sa.create_engine(server.url(database).replace(server.password, "wrong-" + server.password))
    try:
        with pytest.raises(sa.exc.OperationalError):
            with bad.connect():
                pass
    finally:
        bad.dispose()


def _check_pg_schema(server: DbServer, database: str) -> None:
    engine = sa.create_engine(server.url(database))
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE SCHEMA analytics"))
            conn.execute(sa.text("CREATE TABLE analytics.t (x int)"))
            conn.execute(sa.text("INSERT INTO analytics.t VALUES (42)"))
            assert conn.execute(sa.text("SELECT x FROM analytics.t")).scalar_one() == 42
    finally:
        engine.dispose()


def _assert_gone(server: DbServer) -> None:
    # port closed
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        rc = s.connect_ex((server.host, server.port))
    assert rc == errno.ECONNREFUSED, f"port {server.port} still open (connect_ex={rc})"
    # folder removed
    assert server.base_dir is not None and not server.base_dir.exists()
    # the server process we started and everything in its process group are gone
    with pytest.raises(ProcessLookupError):
        os.kill(server.pid, 0)
    assert dbservers._pgrp_members(server.pid) == []
    assert "start" in server.timings and "stop" in server.timings


# --------------------------------------------------------------------------- #
# Full lifecycle through the context managers
# --------------------------------------------------------------------------- #


def test_postgres_server_lifecycle(record_property):
    with dbservers.postgres_server() as server:
        assert server.kind == "postgresql" and server.host == "127.0.0.1"
        assert server.url("crm_it").startswith("postgresql+psycopg2://crm:")
        assert server.base_dir is not None and server.base_dir.is_dir()
        os.kill(server.pid, 0)  # running
        _roundtrip(server, "crm_it")
        _check_app_user(server, "crm_it")
        _check_pg_schema(server, "crm_it")
    _assert_gone(server)
    record_property("postgres_start_s", round(server.timings["start"], 3))
    record_property("postgres_stop_s", round(server.timings["stop"], 3))
    print(f"postgres start {server.timings['start']:.2f}s stop {server.timings['stop']:.2f}s")


def test_mariadb_server_lifecycle(record_property):
    with dbservers.mariadb_server() as server:
        assert server.kind == "mariadb" and server.host == "127.0.0.1"
        url = server.url("crm_it")
        assert url.startswith("mysql+pymysql://crm:") and url.endswith("?charset=utf8mb4")
        assert server.base_dir is not None and server.base_dir.is_dir()
        os.kill(server.pid, 0)  # running
        _roundtrip(server, "crm_it")
        _check_app_user(server, "crm_it")
    _assert_gone(server)
    record_property("mariadb_start_s", round(server.timings["start"], 3))
    record_property("mariadb_stop_s", round(server.timings["stop"], 3))
    print(f"mariadb start {server.timings['start']:.2f}s stop {server.timings['stop']:.2f}s")


# --------------------------------------------------------------------------- #
# Session fixtures from conftest.py
# --------------------------------------------------------------------------- #


def test_postgres_fixture(postgres):
    assert postgres.kind == "postgresql"
    _roundtrip(postgres, "crm_fixture_check")


def test_mariadb_fixture(mariadb):
    assert mariadb.kind == "mariadb"
    _roundtrip(mariadb, "crm_fixture_check")


# --------------------------------------------------------------------------- #
# Missing binaries fail loudly with an install hint
# --------------------------------------------------------------------------- #


def test_missing_postgres_binaries(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CRM_PG_BINDIR", raising=False)
    monkeypatch.setattr(dbservers, "_PG_BINDIR_GLOBS", [])
    with pytest.raises(RuntimeError, match=r"apt-get install postgresql"):
        with dbservers.postgres_server():
            pass


def test_missing_mariadb_binaries(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(dbservers, "_SBIN_DIRS", [])
    with pytest.raises(RuntimeError, match=r"apt-get install mariadb-server"):
        with dbservers.mariadb_server():
            pass


def test_invalid_database_name_rejected():
    server = DbServer(kind="postgresql", host="127.0.0.1", port=1, user="crm", password="x")
    with pytest.raises(ValueError):
        server.create_database('x"; DROP DATABASE postgres; --')
