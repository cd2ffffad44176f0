"""A throwaway Spark standalone cluster for tests: one master and two workers from the pyspark wheel.

Like tests/objectstore.py: :func:`spark_standalone_cluster` starts the master and the workers as child processes
that we own (each in its own process group, so an executor a worker started goes with it), from the Spark
distribution inside the pyspark package (its `bin/spark-class`, its `jars/`), in a fresh temporary folder (the
workers' work folders, where each executor's stdout and stderr land, and the daemons' logs), listening on free TCP
ports of 127.0.0.1 only; waits until both workers are registered with the master; yields a :class:`SparkCluster`;
and on exit stops the processes by the pids we started and removes the folder.

Each worker offers one core and `WORKER_MEMORY` to executors. Executors run Python (UDFs, pandas functions) with
this interpreter (`PYSPARK_PYTHON`) and the project on `PYTHONPATH`, as on a real cluster, where every worker
needs the project's Python environment, and with the lake's key pair in their environment (`worker_environment`).
The master's REST submission server (port 6066 by default) is off.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

try:  # tests/ on sys.path (pytest "prepend" import mode), or imported as a package
    import dbservers as servers
except ImportError:
    from tests import dbservers as servers

log = logging.getLogger(__name__)

__all__ = ["SparkCluster", "spark_standalone_cluster"]

REPO = Path(__file__).resolve().parent.parent
WORKERS = 2
WORKER_CORES = 1
#: Memory a worker offers to executors by default: one executor of Spark's default 1g heap plus its overhead.
WORKER_MEMORY = "1536m"
#: Heap of the master and worker daemons themselves (Spark's default is 1g each; they only keep the books).
DAEMON_MEMORY = "256m"
#: Seconds to wait for the master to answer and both workers to register (two JVM starts on a busy machine).
START_TIMEOUT = 180.0


@dataclass(frozen=True)
class SparkCluster:
    """A standalone master (`master_url` for `spark.master`) with its workers' work folders."""

    master_url: str  # spark://127.0.0.1:<port>
    web_url: str  # http://127.0.0.1:<port>, the master's UI; /json/ is its state
    work_dirs: tuple[Path, ...]  # per worker: <app id>/<executor id>/{stdout,stderr}
    base_dir: Path = field(compare=False)
    pids: tuple[int, ...] = field(default=(), compare=False)
    timings: dict = field(default_factory=dict, compare=False, repr=False)

    def state(self) -> dict:
        """The master's state as its UI's JSON shows it: workers, active and completed applications."""
        with urllib.request.urlopen(f"{self.web_url}/json/", timeout=10) as response:
            return json.loads(response.read())

    def executor_logs(self, app_id: str) -> dict[Path, str]:
        """Each executor's stderr of application `app_id`, by its file, on every worker."""
        return {path: path.read_text(errors="replace") for work in self.work_dirs for path in sorted((work / app_id).glob("*/stderr"))}


def _pyspark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def _environment(base: Path, spark_home: Path, worker_environment: Mapping[str, str]) -> dict[str, str]:
    environment = {
        **worker_environment,
        **servers._env(),
        "SPARK_HOME": str(spark_home),
        "SPARK_CONF_DIR": str(base / "conf"),  # empty: no spark-defaults or log4j file of the machine
        "SPARK_LOG_DIR": str(base / "logs"),
        "SPARK_LOCAL_IP": servers.HOST,
        "SPARK_DAEMON_MEMORY": DAEMON_MEMORY,
        "SPARK_NO_DAEMONIZE": "1",
        "PYSPARK_PYTHON": sys.executable,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")])),
    }
    # A Connect client's marks would make an executor's Python believe it is one.
    for name in ("SPARK_CONNECT_MODE_ENABLED", "SPARK_REMOTE"):
        environment.pop(name, None)
    return environment


def _start(command: list[str], logfile: Path, environment: dict[str, str], cwd: Path) -> subprocess.Popen:
    with logfile.open("ab") as out:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=str(cwd),
            env=environment,
            start_new_session=True,  # its own process group: the worker's executors stop with it
            preexec_fn=servers._die_with_parent(signal.SIGTERM),
        )


def _master_state(web_port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://{servers.HOST}:{web_port}/json/", timeout=2) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def _wait_for(condition, processes: dict[str, tuple[subprocess.Popen, Path]], what: str) -> None:
    """Until `condition()` holds, while the cluster's processes run (dbservers' wait, with Spark's bind error)."""
    servers._wait_all_ready(
        {f"spark {name}": process for name, process in processes.items()},
        condition,
        lambda tail: "Address already in use" in tail or "BindException" in tail,
        f"spark standalone cluster: {what}",
        timeout_s=START_TIMEOUT,
    )


@contextmanager
def spark_standalone_cluster(
    worker_environment: Mapping[str, str] | None = None, base_dir: Path | None = None, worker_memory: str = WORKER_MEMORY
) -> Iterator[SparkCluster]:
    """A master and `WORKERS` workers on 127.0.0.1, each worker `WORKER_CORES` core and `worker_memory` for executors.

    `worker_environment`: variables the daemons, and so every executor, start with; the lake's key pair
    (`AWS_*`), which the S3A connector of each executor reads from its own environment, as the driver's does.
    `worker_memory`: what each worker offers (bench/nightly.py --cluster gives executors more than Spark's 1g default,
    with `spark.executor.memory`).
    """
    t0 = time.monotonic()
    spark_home = _pyspark_home()
    spark_class = spark_home / "bin" / "spark-class"
    if not spark_class.exists():
        raise RuntimeError(f"{spark_class} is missing: the pyspark package should ship Spark's launcher")
    # On disk, not in /dev/shm: each executor copies the application's jars (~700 MB with S3A) into its work folder.
    base = Path(tempfile.mkdtemp(prefix="crmspark", dir=base_dir))
    (base / "conf").mkdir()
    (base / "logs").mkdir()
    properties = base / "conf" / "cluster.properties"
    properties.write_text("spark.master.rest.enabled false\nspark.worker.ui.retainedExecutors 10\n")
    environment = _environment(base, spark_home, worker_environment or {})
    started: dict[str, tuple[subprocess.Popen, Path]] = {}
    try:
        for attempt in range(servers.PORT_ATTEMPTS):
            try:
                master_port, master_web = servers._free_port(), servers._free_port()
                logfile = base / "logs" / f"master-{attempt}.log"
                started["master"] = (
                    _start(
                        [str(spark_class), "org.apache.spark.deploy.master.Master", "--host", servers.HOST, "--port", str(master_port),
                         "--webui-port", str(master_web), "--properties-file", str(properties)],
                        logfile, environment, base,
                    ),
                    logfile,
                )  # fmt: skip
                _wait_for(lambda: _master_state(master_web) is not None, {"master": started["master"]}, "the master did not answer")
                work_dirs = []
                for number in range(1, WORKERS + 1):
                    work = base / f"worker-{number}"
                    work.mkdir(exist_ok=True)
                    work_dirs.append(work)
                    logfile = base / "logs" / f"worker-{number}-{attempt}.log"
                    command = [
                        str(spark_class), "org.apache.spark.deploy.worker.Worker", f"spark://{servers.HOST}:{master_port}",
                        "--host", servers.HOST, "--port", str(servers._free_port()), "--webui-port", str(servers._free_port()),
                        "--cores", str(WORKER_CORES), "--memory", worker_memory, "--work-dir", str(work),
                        "--properties-file", str(properties),
                    ]  # fmt: skip
                    started[f"worker-{number}"] = (_start(command, logfile, environment, base), logfile)
                _wait_for(
                    lambda: (_master_state(master_web) or {}).get("aliveworkers", 0) >= WORKERS,
                    started,
                    f"{WORKERS} workers did not register",
                )
                break
            except servers._PortInUse:
                for proc, _ in started.values():
                    servers._stop_process(proc, signal.SIGTERM, "spark")
                started.clear()
                if attempt == servers.PORT_ATTEMPTS - 1:
                    raise RuntimeError(
                        f"spark standalone cluster could not bind free ports after {servers.PORT_ATTEMPTS} attempts"
                    ) from None
        cluster = SparkCluster(
            master_url=f"spark://{servers.HOST}:{master_port}",
            web_url=f"http://{servers.HOST}:{master_web}",
            work_dirs=tuple(work_dirs),
            base_dir=base,
            pids=tuple(proc.pid for proc, _ in started.values()),
        )
        cluster.timings["start"] = time.monotonic() - t0
        log.info("spark master %s with %d workers, started in %.1fs", cluster.master_url, WORKERS, cluster.timings["start"])
        yield cluster
    finally:
        t1 = time.monotonic()
        # Workers first (with their executors, in their process groups), then the master.
        for name, (proc, _) in reversed(list(started.items())):
            servers._stop_process(proc, signal.SIGTERM, f"spark {name}")
        servers._rmtree(base)
        log.info("spark standalone cluster stopped in %.1fs", time.monotonic() - t1)
