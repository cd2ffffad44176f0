"""Profile: where one task of the night spends its time in Spark (run by hand, never in tests).

    CRM_DATA_DIR=/tmp/copy-of-a-data-root .venv/bin/python bench/task_profile.py clean 2026-12-05 --repeat 2

Runs `jobs.<task>.run` for the date against the data root's lake, `--repeat` times, on a night server started
for the purpose (a fresh JVM: the first run pays its warm-up, as a night's first Spark task does), and prints
per run the task's seconds, the Spark jobs and stages the server ran for it (from its UI's REST API, on a free
port of its own), and the Spark Connect calls it made, by the line of the task that made them (and the line
inside the project that called Spark), slowest first: `exec` a query or command (an action, a write, a MERGE),
`analyze` a schema or plan asked for. Job and stage counts do not depend on the machine's load: a change that
removes work shows in them on a busy machine too. Calls made by several tables at once (`spark.parallel_tables`)
overlap, so their sum can exceed the task's seconds.

The task writes to the lake as in a night: profile a copy of a data root (`cp -a`), not one you keep. Settings
come from the environment as usual (`CRM__SPARK__CODE_GENERATION=on`, ...). The timing wraps private methods of
pyspark's Connect client (`SparkConnectClient._execute_and_fetch_as_iterator`, `_execute`, `_analyze`, as in
pyspark 4.2): a later pyspark may name them otherwise.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import json
import os
import sys
import time
import traceback
import urllib.request
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

#: Where in the project a call counts from: the task's own modules, then any module of the project.
TASK_FOLDERS = ("/jobs/", "/models/", "/features/")


def call_site() -> str:
    """The task's line that led to this Spark call, and the project's line that made it when another."""
    frames = [frame for frame in traceback.extract_stack()[:-2] if frame.filename.startswith(str(REPO)) and "/.venv/" not in frame.filename]
    if not frames:
        return "?"
    task = [frame for frame in frames if any(folder in frame.filename for folder in TASK_FOLDERS)]

    def line(frame) -> str:
        return f"{Path(frame.filename).relative_to(REPO)}:{frame.lineno} {frame.name}"

    inner = frames[-1]
    return line(inner) if not task or task[-1] is inner else f"{line(task[-1])} <- {line(inner)}"


def time_connect_calls(seconds: dict[tuple[str, str], list[float]]) -> None:
    """Wrap the Connect client's calls so that each adds its seconds to `seconds[(kind, call site)]`."""
    from pyspark.sql.connect.client import core

    client = core.SparkConnectClient
    fetch, execute, analyze = client._execute_and_fetch_as_iterator, client._execute, client._analyze

    def timed_fetch(self, *args, **kwargs):
        site, start = call_site(), time.monotonic()
        try:
            yield from fetch(self, *args, **kwargs)
        finally:
            seconds[("exec", site)].append(time.monotonic() - start)

    def timed_execute(self, *args, **kwargs):
        site, start = call_site(), time.monotonic()
        try:
            return execute(self, *args, **kwargs)
        finally:
            seconds[("exec", site)].append(time.monotonic() - start)

    def timed_analyze(self, method, **kwargs):
        site, start = call_site(), time.monotonic()
        try:
            return analyze(self, method, **kwargs)
        finally:
            seconds[(f"analyze {method}", site)].append(time.monotonic() - start)

    client._execute_and_fetch_as_iterator, client._execute, client._analyze = timed_fetch, timed_execute, timed_analyze


def spark_work(ui_port: int) -> tuple[int, int]:
    """The jobs and stages (skipped ones left out) the server's one application has run so far."""

    def get(path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/api/v1/applications{path}", timeout=30) as response:
            return json.load(response)

    (application,) = get("")
    jobs = get(f"/{application['id']}/jobs")
    stages = get(f"/{application['id']}/stages")
    return len(jobs), sum(stage["status"] != "SKIPPED" for stage in stages)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", help="a module of jobs/: clean, features, recommend, ...")
    parser.add_argument("run_date", type=date.fromisoformat, help="the night's date, YYYY-MM-DD")
    parser.add_argument("--repeat", type=int, default=1, help="runs on the same server (the first pays the JVM's warm-up)")
    parser.add_argument("--top", type=int, default=20, help="call sites printed per run")
    args = parser.parse_args(argv)

    from core import spark_server
    from core.config import load_config

    # The server (a process of its own) reads its configuration from the environment: its UI on a port of its own.
    ui_port = spark_server.free_port()
    ui = {"spark.ui.enabled": "true", "spark.ui.port": str(ui_port), "spark.ui.retainedJobs": "100000", "spark.ui.retainedStages": "100000"}
    os.environ["CRM__SPARK__EXTRA"] = json.dumps({**load_config().spark.extra, **ui})  # JSON is a YAML flow mapping
    settings = load_config()
    job = importlib.import_module(f"jobs.{args.task}")
    started = time.monotonic()
    os.environ["CRM__SPARK__REMOTE"] = spark_server.start(settings)
    print(f"night server up in {time.monotonic() - started:.1f} s", flush=True)
    seconds: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    time_connect_calls(seconds)
    try:
        for attempt in range(1, args.repeat + 1):
            seconds.clear()
            jobs_before, stages_before = spark_work(ui_port)
            started = time.monotonic()
            job.run(args.run_date, load_config(), f"profile-{attempt}")
            took = time.monotonic() - started
            jobs, stages = (after - before for after, before in zip(spark_work(ui_port), (jobs_before, stages_before)))
            calls = sum(len(times) for times in seconds.values())
            print(
                f"run {attempt}: {args.task} {took:.1f} s; {jobs} Spark jobs, {stages} stages; "
                f"{calls} Spark Connect calls, {sum(map(sum, seconds.values())):.1f} s in all"
            )
            for (kind, site), times in sorted(seconds.items(), key=lambda item: -sum(item[1]))[: args.top]:
                print(f"  {sum(times):7.2f} s {len(times):4d} x  {kind:<18} {site}")
    finally:
        spark_server.stop(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
