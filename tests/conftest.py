# Shared pytest fixtures for the CRM analytics pipeline tests.
#
# NOTE: this file is shared.  Other fixtures (e.g. a `spark` session fixture)
# will be added here by other people -- add them in their own clearly
# delimited section and keep the sections independent of each other.

from __future__ import annotations

import functools
import inspect
import os
import sys
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest

# =========================================================================== #
# BEGIN database servers (PostgreSQL / MariaDB) -- see tests/dbservers.py
#
# Session-scoped, started lazily: a server is only started if some test in the
# session requests the `postgres` / `mariadb` fixture, and it is stopped (and
# its temp folder removed) at the end of the session.  Each test should call
# `server.create_database("<name>")` to get a fresh database owned by the
# application user, then connect with `create_engine(server.url("<name>"))`.
# Missing server binaries make the fixture raise (tests fail, they do not skip).
# =========================================================================== #

try:  # tests/ on sys.path (pytest "prepend" import mode, no tests/__init__.py)
    from dbservers import DbServer, ferretdb_server, mariadb_server, postgres_server
except ImportError:  # tests/ imported as a package
    from tests.dbservers import DbServer, ferretdb_server, mariadb_server, postgres_server


@pytest.fixture(scope="session")
def postgres() -> Iterator[DbServer]:
    """A throwaway PostgreSQL server on 127.0.0.1 (app user with password)."""
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def mariadb() -> Iterator[DbServer]:
    """A throwaway MariaDB server on 127.0.0.1 (app user with password, utf8mb4)."""
    with mariadb_server() as server:
        yield server


@pytest.fixture(scope="session")
def ferretdb() -> Iterator[DbServer]:
    """A throwaway FerretDB (MongoDB wire protocol, SQLite backend) on 127.0.0.1."""
    with ferretdb_server() as server:
        yield server


# =========================================================================== #
# END database servers
# =========================================================================== #


# =========================================================================== #
# BEGIN object store (SeaweedFS's S3 gateway) -- see tests/objectstore.py
#
# Session-scoped and lazy like the database servers: one `weed server` with a bucket and a key pair generated
# for the session, started only if a test asks for `object_store`, stopped at the end of the session.
# =========================================================================== #

try:
    from objectstore import ObjectStore, seaweedfs_server
except ImportError:
    from tests.objectstore import ObjectStore, seaweedfs_server


@pytest.fixture(scope="session")
def object_store() -> Iterator[ObjectStore]:
    """A throwaway S3-compatible store (SeaweedFS) on 127.0.0.1 with one bucket and its own key pair."""
    with seaweedfs_server() as store:
        yield store


# =========================================================================== #
# END object store
# =========================================================================== #


# =========================================================================== #
# BEGIN Spark standalone cluster -- see tests/sparkcluster.py
#
# Session-scoped and lazy: a master and two workers (one core each) from the pyspark wheel, started only if a
# test asks for `spark_cluster`, stopped at the end of the session. Its workers have the object store's key pair
# in their environment (each executor's S3A connector reads it there), so it starts the store too.
# =========================================================================== #

try:
    from sparkcluster import SparkCluster, spark_standalone_cluster
except ImportError:
    from tests.sparkcluster import SparkCluster, spark_standalone_cluster


@pytest.fixture(scope="session")
def spark_cluster(object_store) -> Iterator[SparkCluster]:
    """A Spark standalone master with two workers on 127.0.0.1, whose executors reach the object store."""
    with spark_standalone_cluster(object_store.environment()) as cluster:
        yield cluster


# =========================================================================== #
# END Spark standalone cluster
# =========================================================================== #


# =========================================================================== #
# BEGIN environment, configuration and Spark
#
# Every test runs with CRM_ENV=test and its data root in a session temp folder, never the repo's data/.
# One Spark Connect server for the session (`shared_spark_server`); the unit tests' session is its client.
# =========================================================================== #


REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def test_environment(tmp_path_factory) -> Iterator[Path]:
    """CRM_ENV=test and a throwaway data root for the whole session; the caller's CRM_* are ignored."""
    data_dir = tmp_path_factory.mktemp("crm-data")
    saved = {key: value for key, value in os.environ.items() if key.startswith("CRM")}
    for key in saved:
        del os.environ[key]
    os.environ.update({"CRM_ENV": "test", "CRM_DATA_DIR": str(data_dir)})
    yield data_dir
    for key in [key for key in os.environ if key.startswith("CRM")]:
        del os.environ[key]
    os.environ.update(saved)


# =========================================================================== #
# One OpenMP thread for the models fitted in the test process
# =========================================================================== #


@pytest.fixture(scope="session", autouse=True)
def one_openmp_thread() -> Iterator[None]:
    """scikit-learn's OpenMP code (HistGradientBoosting) on one thread in this process: beside the session's
    nights its threads spin waiting for each other, 30-40 times slower (docs/development.md); one thread gives the
    same results to the bit. BLAS keeps its threads (its results may change in the last bit with their number)."""
    import sklearn.ensemble  # noqa: F401  loads the OpenMP runtime, which threadpoolctl limits only once loaded
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):
        yield


#: The test session's one Spark Connect server: a long-lived JVM, so the full JIT (the test overlay's quick
#: compiler suits the many short JVMs of a night's own server), room for the nights started with the session (three
#: at most at once, `session_nights`) and the unit tests.
SHARED_SERVER_SETTINGS = {
    "CRM__SPARK__DRIVER_MEMORY": "4g",
    "CRM__SPARK__JAVA_OPTIONS": "-XX:+UseSerialGC -XX:ReservedCodeCacheSize=240m",
    "CRM__SPARK__SERVER_IDLE_MINUTES": "120",
}


@pytest.fixture(scope="session", autouse=True)
def shared_spark_server(tmp_path_factory, test_environment) -> Iterator[str]:
    """One Spark Connect server for the whole session, as `spark.remote` (CRM__SPARK__REMOTE) of every test.

    The unit tests and the nights the tests run (`crm run`, jobs called in-process) are its clients: one JVM,
    started and warmed once, instead of one per night. The night's own server (started by the DAG's
    `spark_up`, stopped by `spark_down`) keeps its tests: tests/test_spark_server.py, and the SQLite night of
    tests/test_nightly.py, which runs without `spark.remote`.
    """
    from core import spark_server
    from core.config import load_config

    with pytest.MonkeyPatch.context() as patch:  # the server process reads its configuration from the environment
        for name, value in {**SHARED_SERVER_SETTINGS, "CRM_DATA_DIR": str(tmp_path_factory.mktemp("shared-spark"))}.items():
            patch.setenv(name, value)
        server = load_config()
        url = spark_server.start(server, wait=True)
    os.environ["CRM__SPARK__REMOTE"] = url
    yield url
    os.environ.pop("CRM__SPARK__REMOTE", None)
    spark_server.stop(server)


@pytest.fixture(scope="session")
def settings(test_environment, shared_spark_server):
    from core.config import load_config

    return load_config("test")


@pytest.fixture(scope="session")
def spark(shared_spark_server):
    """The unit tests' Spark session: a client of the session's shared server (UTC, Delta on board).

    Jobs called in a test use it (the active session) and leave it open.
    """
    from pyspark.sql import SparkSession

    session = SparkSession.builder.remote(shared_spark_server).getOrCreate()
    yield session
    session.stop()


def run_crm(*args: str, env: dict[str, str] | None = None, check: bool = True, timeout: int = 900):
    """Run the `crm` command line in a subprocess, as a user would; returns the CompletedProcess."""
    import subprocess

    crm = Path(sys.executable).with_name("crm")
    result = subprocess.run(
        [str(crm), *args], env={**session_environ(), **(env or {})}, capture_output=True, text=True, timeout=timeout, cwd=REPO
    )
    if check and result.returncode != 0:
        raise AssertionError(f"crm {' '.join(args)} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


# =========================================================================== #
# END environment, configuration and Spark
# =========================================================================== #


# =========================================================================== #
# BEGIN nights started with the session
#
# A module's night (`crm run` of a shop of its own: minutes, most of it one process waiting on another) starts
# in the background when the session starts, if a collected test needs it, so it overlaps the tests before
# its module instead of running after them; the module's fixture waits for it and gets its result or its
# error. Each night keeps its own data root, shop and CRM database, and the environment the session had
# when it started (a test's monkeypatched variable never leaks into a night running beside it).
# =========================================================================== #

#: Module fixture name -> the function that runs its night (its parameters are session fixtures).
_SESSION_NIGHTS: dict[str, Callable[..., object]] = {}
#: Nights run at once in the background (two cores; test_nightly's one runs three shops itself).
BACKGROUND_NIGHTS = 2
_night_thread = threading.local()


def night_started_with_the_session(fixture: str) -> Callable[[Callable[..., object]], Callable[..., object]]:
    """Register `function` as the night behind the module fixture `fixture` (see `session_night`)."""

    def register(function: Callable[..., object]) -> Callable[..., object]:
        _SESSION_NIGHTS[fixture] = function
        return function

    return register


def session_environ() -> Mapping[str, str]:
    """The environment a subprocess of this thread gets: a background night's snapshot, else os.environ."""
    return getattr(_night_thread, "environ", None) or os.environ


_NIGHTS_NEEDED = pytest.StashKey[list]()


def pytest_collection_finish(session) -> None:
    """Note which registered nights the collected tests (after -k, -m and deselection) use."""
    session.config.stash[_NIGHTS_NEEDED] = [name for name in _SESSION_NIGHTS if any(name in item.fixturenames for item in session.items)]


def _run_night(environ: dict[str, str], function: Callable[..., object], arguments: dict[str, object]) -> object:
    _night_thread.environ = environ
    try:
        return function(**arguments)
    finally:
        _night_thread.environ = None


@pytest.fixture(scope="session", autouse=True)
def session_nights(request, shared_spark_server) -> Iterator[dict[str, Future]]:
    """Start the nights the collected tests need, in registration order; at the end, wait for any still running."""
    needed = request.config.stash.get(_NIGHTS_NEEDED, [])
    if needed:  # built here, not in a night's thread: building the DAG sets Airflow's variables in os.environ
        nightly_dag()
    environ = dict(os.environ)  # after test_environment and shared_spark_server set it up
    pool = ThreadPoolExecutor(BACKGROUND_NIGHTS, thread_name_prefix="session-night")
    nights: dict[str, Future] = {}
    for name in needed:
        function = _SESSION_NIGHTS[name]
        arguments = {parameter: request.getfixturevalue(parameter) for parameter in inspect.signature(function).parameters}
        nights[name] = pool.submit(_run_night, environ, function, arguments)
    yield nights
    pool.shutdown(wait=True)


def session_night(request, fixture: str) -> object:
    """The result of the night behind `fixture`, waiting for it (or running it now, if it was not started)."""
    nights: dict[str, Future] = request.getfixturevalue("session_nights")
    if fixture in nights:
        return nights[fixture].result()
    function = _SESSION_NIGHTS[fixture]
    return function(**{parameter: request.getfixturevalue(parameter) for parameter in inspect.signature(function).parameters})


# =========================================================================== #
# END nights started with the session
# =========================================================================== #


@functools.cache
def nightly_dag():
    """The crm_nightly DAG as dags/crm_nightly.py builds it (no DagBag, no Airflow database needed).

    Airflow reads its configuration once, when first imported: point it at the test configuration's Airflow
    home first, as the DAG tests do (tests/test_dags.py), so that importing it here changes nothing for them.
    """
    import importlib.util

    from cli.orchestrate import airflow_environment
    from core.config import load_config

    os.environ.update(airflow_environment(load_config("test")))
    spec = importlib.util.spec_from_file_location("crm_nightly_dag_file", REPO / "dags" / "crm_nightly.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.crm_nightly()
