"""The night's Spark: one local Spark Connect server that every task of a night talks to.

Why: a task with a Spark of its own starts a JVM, loads Delta and warms up the JIT before its first query,
once per task, and a cold JVM makes a Delta commit far slower than a warm one. Here one JVM (the configured
local Spark: `spark.master`, driver memory, packages, options) runs Spark Connect's plugin, and tasks are thin
gRPC clients. Tasks stay separate processes that pass data only through the lake; the server holds no state
between them (each task has its own Connect session, and its cached data is dropped when it ends).

- The DAG's `spark_up` task starts the server (without waiting: it boots while `extract`, which needs no
  Spark, runs); a task that needs Spark waits for it, or starts it when none runs (a task rerun alone, a
  retry after the server died). `spark_down` stops it.
- State is one file, `<data>/spark/server.json` (pid, URL, the settings it was started with, ready or not),
  written by the server once it answers; a start holds `<data>/spark/server.lock`, so two tasks starting at
  once get one server.
- A server whose night was killed before `spark_down` stops by itself after `spark.server_idle_minutes`
  without a Connect session or a Spark job; a rerun of the night meanwhile reuses it. A server started with
  other Spark settings than the configuration's now is replaced.
- `spark.remote` (a server you run, e.g. on a cluster) bypasses all of this: tasks connect there.

Run by hand: `python -m core.spark_server start|stop|status` (the data root and settings of the
environment, as for every job).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from core.config import REPO_ROOT, Settings, load_config
from core.private import private_files
from core.spark_local import checkpoint_location, get_spark, spark_packages, spark_settings

log = logging.getLogger(__name__)

#: How long a task waits for a starting server to answer (a cold start with the jars cached: ~10-30 s).
START_TIMEOUT_S = 300
#: Starts tried before a task gives up (the port a server was given may be taken before it binds it).
START_ATTEMPTS = 2
#: How long a stop waits for the server to end its session before it is killed.
STOP_TIMEOUT_S = 30
#: The server's own checkpoint folder under `spark_local.checkpoint_location`.
SERVER_CHECKPOINTS = "night-server"
#: How often the server checks whether it should stop.
POLL_S = 2.0


class SparkServerError(RuntimeError):
    """The night's Spark server could not be started; the message says why and where its log is."""


@dataclass(frozen=True)
class ServerState:
    """What `<data>/spark/server.json` says about the night's server."""

    pid: int
    port: int
    settings_digest: str
    started_at: str
    log: str
    #: The bearer token clients must send: no other user of the machine may run Spark as the night.
    token: str
    ready: bool = False

    @property
    def url(self) -> str:
        # "localhost" (not 127.0.0.1): the client then sends the token over gRPC's local credentials
        # instead of asking for TLS.
        return f"sc://localhost:{self.port}/;token={self.token}"


def spark_dir(settings: Settings) -> Path:
    return settings.data_dir / "spark"


def state_path(settings: Settings) -> Path:
    return spark_dir(settings) / "server.json"


def server_settings(settings: Settings, port: int, token: str = "") -> dict[str, str]:
    """The classic Spark settings of the server process: the configured local Spark plus Spark Connect."""
    values = spark_settings(settings, "shop-crm-night")
    values.update(
        {
            "spark.plugins": "org.apache.spark.sql.connect.SparkConnectPlugin",
            "spark.connect.grpc.binding.address": "127.0.0.1",
            "spark.connect.grpc.binding.port": str(port),
            "spark.connect.authenticate.token": token,
            # A task killed mid-query leaves its operation detached: interrupt it soon, so that the task's retry
            # does not race it (a live client reattaches within milliseconds).
            "spark.connect.execute.manager.detachedTimeout": "30s",
            # ALS needs a checkpoint folder (its lineage grows with each iteration); a client cannot set one.
            "spark.checkpoint.dir": checkpoint_location(settings, SERVER_CHECKPOINTS).spark_uri(),
            # Results (toPandas, collect) up to the driver's size, not Connect's 128 MB default batch cap.
            "spark.connect.grpc.maxInboundMessageSize": str(1 << 30),
        }
    )
    return values


def settings_digest(settings: Settings) -> str:
    """What the server was started with, less the port: a change of configuration means a new server."""
    values = server_settings(settings, 0)
    for per_start in ("spark.connect.grpc.binding.port", "spark.connect.authenticate.token"):
        values.pop(per_start)
    # The packages as configured, not as resolved: the first start resolves them with Ivy (spark.jars.packages)
    # and notes the jars, later starts name the jars (spark.jars); both are the same server.
    for resolution in ("spark.jars", "spark.jars.packages", "spark.jars.ivy"):
        values.pop(resolution, None)
    values["packages"] = ",".join(spark_packages(settings))
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def read_state(settings: Settings) -> ServerState | None:
    try:
        return ServerState(**json.loads(state_path(settings).read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def _write_state(settings: Settings, state: ServerState) -> None:
    path = state_path(settings)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:  # holds the token
        out.write(json.dumps(asdict(state)) + "\n")
    os.replace(temporary, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (ended, not yet reaped by the process that started it) answers signal 0 too.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def running_url(settings: Settings) -> str | None:
    """The URL of this data root's night server when it is up, answers and has today's settings; else None."""
    state = read_state(settings)
    if state is None or not state.ready or not _alive(state.pid) or state.settings_digest != settings_digest(settings):
        return None
    return state.url if _answers(state.port) else None


@contextmanager
def _start_lock(settings: Settings) -> Iterator[None]:
    folder = spark_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "server.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def start(settings: Settings, wait: bool = True) -> str:
    """Start the night's server unless one with these settings runs (or is starting); returns its URL.

    With `wait`, returns once it answers, else at once (it boots in the background). A server that ends
    while starting (its port taken meanwhile by another process, say) is started once more.
    """
    for attempt in range(START_ATTEMPTS):
        with _start_lock(settings):
            state = read_state(settings)
            if state is None or not _alive(state.pid):
                state = _launch(settings)
            elif state.settings_digest != settings_digest(settings):
                log.info("night Spark server %d runs with other settings: replacing it", state.pid)
                _stop_process(state.pid)
                state = _launch(settings)
        if not wait:
            return state.url
        try:
            return _wait_ready(settings, state)
        except SparkServerError as error:
            if attempt == START_ATTEMPTS - 1 or _alive(state.pid):
                raise
            log.warning("night Spark server did not start (%s); starting it again", str(error).splitlines()[0])
    raise AssertionError("unreachable")


def ensure_running(settings: Settings) -> str:
    """The running server's URL, starting it first when none runs."""
    return running_url(settings) or start(settings, wait=True)


def stop(settings: Settings) -> bool:
    """Stop this data root's night server; returns whether one was running."""
    with _start_lock(settings):
        state = read_state(settings)
        if state is None:
            return False
        was_running = _alive(state.pid)
        if was_running:
            _stop_process(state.pid)
        state_path(settings).unlink(missing_ok=True)
        return was_running


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _launch(settings: Settings) -> ServerState:
    port = free_port()
    logs = settings.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_file = logs / f"spark-server-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{port}.log"
    with log_file.open("ab") as out:
        # Its own session: the server outlives the task that started it (under the scheduler each task is
        # a process of its own), and a signal to the task's process group does not reach it.
        child = subprocess.Popen(
            [sys.executable, "-m", "core.spark_server", "serve", "--port", str(port)],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=_server_environment(settings),
        )
    state = ServerState(
        pid=child.pid,
        port=port,
        settings_digest=settings_digest(settings),
        started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        log=str(log_file),
        token=secrets.token_urlsafe(32),
    )
    _write_state(settings, state)
    log.info("night Spark server starting: pid %d, port %d, log %s", child.pid, port, log_file)
    return state


def _server_environment(settings: Settings) -> dict[str, str]:
    """The server's environment: this process's (its configuration is the environment's) with its data root,
    without what would make its own session a Connect client (set once this process opened a Connect session)."""
    environment = {**os.environ, "CRM_DATA_DIR": str(settings.data_dir)}
    for name in ("SPARK_CONNECT_MODE_ENABLED", "SPARK_REMOTE"):
        environment.pop(name, None)
    return environment


def _wait_ready(settings: Settings, state: ServerState) -> str:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        current = read_state(settings)
        if current is None or current.pid != state.pid:
            raise SparkServerError(f"the night's Spark server {state.pid} was replaced or stopped while starting; log: {state.log}")
        if not _alive(state.pid):
            raise SparkServerError(f"the night's Spark server ended while starting:\n{_tail(state.log)}\nlog: {state.log}")
        if current.ready and _answers(current.port):
            return current.url
        time.sleep(0.2)
    raise SparkServerError(f"the night's Spark server did not answer within {START_TIMEOUT_S} s; log: {state.log}")


def _stop_process(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)  # the JVM is in the server's own process group
        except ProcessLookupError:
            pass


def _tail(path: str, lines: int = 20) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def serve(settings: Settings, port: int) -> None:
    """The server process: Spark with Connect's plugin, until SIGTERM or `server_idle_minutes` idle."""
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    deadline = time.monotonic() + 30  # the starter writes the state (with our pid) just after starting us
    state = read_state(settings)
    while (state is None or state.pid != os.getpid()) and time.monotonic() < deadline:
        time.sleep(0.1)
        state = read_state(settings)
    if state is None or state.pid != os.getpid() or state.port != port:
        log.warning("night Spark server %d: %s names another server; not starting", os.getpid(), state_path(settings))
        return
    spark = get_spark(settings, "shop-crm-night", overrides=server_settings(settings, port, state.token))
    _write_state(settings, ServerState(**{**asdict(state), "ready": True}))
    log.warning("night Spark server %d ready on port %d", os.getpid(), state.port)
    idle_limit = settings.spark.server_idle_minutes * 60
    last_busy = time.monotonic()
    try:
        while not stopping:
            time.sleep(POLL_S)
            if _busy(spark):
                last_busy = time.monotonic()
            elif time.monotonic() - last_busy > idle_limit:
                log.warning("night Spark server %d: idle for %d min, stopping", os.getpid(), idle_limit // 60)
                break
    finally:
        spark.stop()
        current = read_state(settings)
        if current is not None and current.pid == os.getpid():
            state_path(settings).unlink(missing_ok=True)
        _remove_checkpoints(settings)


def _remove_checkpoints(settings: Settings) -> None:
    try:
        checkpoint_location(settings, SERVER_CHECKPOINTS).remove()
    except OSError as error:  # the store unreachable at the end of the night: the next stop removes them
        log.warning("night Spark server %d: could not remove its checkpoints: %s", os.getpid(), error)


def _busy(spark) -> bool:
    """Whether a Connect session is open or a Spark job runs."""
    if len(spark.sparkContext.statusTracker().getActiveJobsIds()) > 0:
        return True
    service = getattr(spark.sparkContext._jvm.org.apache.spark.sql.connect.service, "SparkConnectService$")
    try:
        return getattr(service, "MODULE$").sessionManager().listActiveSessions().nonEmpty()
    except Exception as error:  # an API this Spark lacks: jobs alone decide
        log.debug("night Spark server: cannot list Connect sessions: %s", error)
        return False


def _main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    private_files()  # run by hand too: the server's log, state and checkpoints, and the JVM's files
    settings = load_config()
    command = argv[0] if argv else "status"
    if command == "serve":
        serve(settings, int(argv[argv.index("--port") + 1]))
    elif command == "start":
        start(settings, wait=True)
        state = read_state(settings)
        print(f"night Spark server {state.pid} up on 127.0.0.1:{state.port} (token in {state_path(settings)})")
    elif command == "stop":
        print("stopped" if stop(settings) else "no night Spark server was running")
    elif command == "status":
        if running_url(settings) is None:
            print("no night Spark server is running")
            return 1
        state = read_state(settings)
        print(f"night Spark server {state.pid} up on 127.0.0.1:{state.port} since {state.started_at}; log {state.log}")
    else:
        print(f"unknown command {command!r}; expected start, stop, status", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
