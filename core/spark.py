"""The Spark session every job opens: a Connect client of the night's server, or a local Spark of its own.

- `spark.remote` set: a client of that Spark Connect server (one you run, e.g. on a cluster).
- Else, with `spark.night_server` (the default), a client of the data root's night server
  (`core.spark_server`): the DAG's tasks start it when it is not up; other commands use it when it is.
- Else a classic local session in this process: UTC, Delta Lake on board.

The local session itself is built by `core/spark_local.py`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import TypeVar

from core import spark_server
from core.config import Settings
from core.spark_local import COMPILED_SETTINGS, INTERPRETED_SETTINGS, checkpoint_location, get_spark

T = TypeVar("T")


#: Set while a DAG task runs (`night_task`): its jobs start the night's server when it is not up.
_in_night_task = False


@contextmanager
def night_task() -> Iterator[None]:
    """Within a task of a night: a job's Spark session comes from the night's server, started if needed."""
    global _in_night_task
    previous, _in_night_task = _in_night_task, True
    try:
        yield
    finally:
        _in_night_task = previous


def connect_url(settings: Settings) -> str | None:
    """The Spark Connect server a job should use, or None for a local Spark of its own (see the module doc)."""
    if settings.spark.remote:
        return settings.spark.remote
    if not settings.spark.night_server:
        return None
    return spark_server.ensure_running(settings) if _in_night_task else spark_server.running_url(settings)


def is_connect(spark) -> bool:
    """Whether `spark` is a Spark Connect client (no SparkContext in this process)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


@contextmanager
def spark_session(settings: Settings, app_name: str) -> Iterator:
    """A Spark session for one job, closed at the end so the next job starts clean.

    Under the Airflow scheduler every task is its own process; closing here makes `dag.test()`, which
    runs all tasks in one process, behave the same: nothing passes between tasks but the lake. A Connect
    session's cached data lives in the server: it is dropped with the session.
    """
    from pyspark.sql import SparkSession  # deferred: the DAG files import this module; pyspark is the task's

    active = SparkSession.getActiveSession()
    if active is not None:  # a caller (a test session, a notebook) owns it: use it, leave it open
        yield active
        return
    url = connect_url(settings)
    if url is None:
        session = get_spark(settings, app_name)
        try:
            yield session
        finally:
            session.stop()
        return
    session = SparkSession.builder.remote(url).create()
    session.addTag(f"shop-crm-{app_name}")
    try:
        yield session
    finally:
        try:
            session.catalog.clearCache()
        finally:
            session.stop()


@contextmanager
def code_generation_for(spark, settings: Settings, input_rows: int) -> Iterator[bool]:
    """Within: with `spark.code_generation: auto`, the session's queries are compiled to JVM code only when the
    job reads at least `code_generation_from_rows` rows, and run interpreted below (a small job's many small
    queries cost more to compile than to run); yields whether they are compiled. The session's own settings
    come back at the end (a caller's session, a notebook's, is left as it was). `on` and `off` are every
    server's and local session's settings from the start (`spark_settings`): the session is left alone."""
    if settings.spark.code_generation != "auto":
        yield settings.spark.code_generation == "on"
        return
    compiled = input_rows >= settings.spark.code_generation_from_rows
    wanted = COMPILED_SETTINGS if compiled else INTERPRETED_SETTINGS
    before = {key: spark.conf.get(key, None) for key in wanted}
    for key, value in wanted.items():
        spark.conf.set(key, value)
    try:
        yield compiled
    finally:
        for key, value in before.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


@contextmanager
def checkpoint_dir(spark, settings: Settings, job: str) -> Iterator[None]:
    """Checkpoints (ALS's deep lineage) of a job: in a local Spark a folder of the job's own
    (`spark_local.checkpoint_location`: on the object store when the lake is there), removed at the end; a Connect
    server has its own (`spark.checkpoint.dir`, set when the night's server starts)."""
    if is_connect(spark):
        yield
        return
    location = checkpoint_location(settings, f"{job}-{uuid.uuid4().hex[:12]}")
    spark.sparkContext.setCheckpointDir(location.spark_uri())
    try:
        yield
    finally:
        location.remove()


def for_each_table(work: Callable[[str], T], tables: Iterable[str], workers: int = 4) -> dict[str, T]:
    """Run `work(table)` for several tables at once, in threads of this driver; results by table.

    Small tables spend their time waiting (source reads, Delta commits, job scheduling), not computing,
    so a few at once keep the cores busy. The first failure is raised once every started table has ended.
    """
    names = list(tables)
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(names))), thread_name_prefix="table") as pool:
        futures = {name: pool.submit(work, name) for name in names}
    return {name: future.result() for name, future in futures.items()}


def for_each_table_after_parents(work: Callable[[str], T], parents: dict[str, Iterable[str]], workers: int = 4) -> dict[str, T]:
    """Run `work(table)` for each table of `parents` (table -> the tables it must follow), at most `workers`
    at once, each as soon as its parents have ended; results by table.

    No table waits for a slower table it does not follow (as it would in waves of tables). After a failure
    no more tables start; the first failure is raised once every started table has ended.
    """
    waiting = {name: set(before) for name, before in parents.items()}
    running: dict[Future, str] = {}
    results: dict[str, T] = {}
    failure: BaseException | None = None
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(waiting))), thread_name_prefix="table") as pool:
        while waiting or running:
            ready = [name for name, before in waiting.items() if before <= results.keys()] if failure is None else []
            for name in ready:
                running[pool.submit(work, name)] = name
                del waiting[name]
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                name = running.pop(future)
                if future.exception() is None:
                    results[name] = future.result()
                elif failure is None:
                    failure = future.exception()
    if failure is not None:
        raise failure
    if waiting:
        raise ValueError(f"tables whose parents never ran (a cycle, or a parent not listed): {', '.join(sorted(waiting))}")
    return results
