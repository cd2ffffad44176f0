"""What the benchmarks share: a stage in a child process with its peak memory, and which code was measured."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

REPO = Path(__file__).resolve().parent.parent
SAMPLE_INTERVAL_S = 0.1


def run_stage(script: str, job: dict, environment: dict[str, str], log: Path, check: bool = True) -> dict:
    """Run one stage in a child process (`script --child`, the job as JSON on stdin); its result plus the peak RSS of its process tree (MB).

    A failed stage raises, or with `check=False` comes back as skipped, naming its error and the log.
    """
    # The job goes in on stdin: its URL holds the server's password, which `ps` would show in an argument.
    with open(log, "ab") as err, tempfile.TemporaryFile() as out:
        child = subprocess.Popen(
            [sys.executable, script, "--child"], stdin=subprocess.PIPE, stdout=out, stderr=err, env=environment, cwd=REPO
        )
        child.stdin.write(json.dumps(job).encode())
        child.stdin.close()
        peak, loads = 0, []
        while child.poll() is None:
            peak = max(peak, rss_of_trees([child.pid]))
            loads.append(os.getloadavg()[0])
            time.sleep(SAMPLE_INTERVAL_S)
        out.seek(0)
        lines = out.read().decode(errors="replace").splitlines()
    if child.returncode != 0 or not lines:
        error = (log.read_text(errors="replace").strip().splitlines() or ["no output"])[-1]
        message = f"stage {job['stage']} failed (exit code {child.returncode}): {error} (log: {log})"
        if check:
            raise RuntimeError(message)
        return {"skipped": message}
    result = json.loads(lines[-1])
    result["peak_mb"] = round(peak / 2**20)
    result["load"] = sum(loads) / max(1, len(loads))
    return result


def rss_of_trees(roots: list[int]) -> int:
    """Resident memory (bytes) of the processes under `roots`, each process counted once (a tree may hold
    another root, e.g. a server started by a process of the first tree)."""
    import psutil

    members: dict[int, "psutil.Process"] = {}
    for pid in roots:
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(pid)
            members.update({member.pid: member for member in (root, *root.children(recursive=True))})
    total = 0
    for member in members.values():
        with contextlib.suppress(psutil.NoSuchProcess):  # a member may end between listing and sampling
            total += member.memory_info().rss
    return total


#: The folders whose code a night runs: a benchmark's figures are of the commit plus their uncommitted changes.
CODE_DIRS = ("core", "jobs", "features", "models", "dags", "expectations", "conf")


def code_version() -> str:
    """Which code the figures are of: the commit, and a digest of the uncommitted changes to the code, if any."""
    import hashlib

    def git(*command: str) -> str:
        return subprocess.run(["git", *command], cwd=REPO, capture_output=True, text=True).stdout.strip()

    changed = git("status", "--porcelain", "--", *CODE_DIRS)
    if not changed:
        return f"commit {git('rev-parse', '--short', 'HEAD')}"
    digest = hashlib.sha256((changed + git("diff", "HEAD", "--", *CODE_DIRS)).encode()).hexdigest()[:12]
    return f"commit {git('rev-parse', '--short', 'HEAD')}, {len(changed.splitlines())} files changed (diff {digest})"


def lake_benchmark_parser(description: str, default_sizes: list[int], keeps: str) -> argparse.ArgumentParser:
    """The options of a benchmark on a generated lake: sizes, orders per customer, driver memory, folders."""
    import argparse

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sizes", nargs="*", type=int, default=default_sizes, help="numbers of customers")
    parser.add_argument("--orders-per-customer", type=int, default=8)
    parser.add_argument("--driver-memory", default="3g", help="Spark driver heap (local mode: all of Spark)")
    parser.add_argument("--tmp", default="/tmp", help="where the generated lake goes")
    parser.add_argument("--keep", action="store_true", help=f"keep each size's folder ({keeps})")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser


def benchmark_main(parser, stages: dict, one_size) -> None:
    """Run `one_size(size, args)` per size; in a stage's child process (`--child`), run the stage named
    on stdin and print its result as the last line of JSON."""
    import logging

    args = parser.parse_args()
    if args.child:
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        logging.getLogger("jobs").setLevel(logging.INFO)
        sys.path.insert(0, str(REPO))
        job = json.loads(sys.stdin.read())
        print(json.dumps(stages[job["stage"]](job), default=str))
        return
    for size in args.sizes:
        one_size(size, args)


def clean_night_one(job: dict, settings) -> dict:
    """`jobs.clean.run` for the job's run date (night 1), timed, with the silver rows it left."""
    from datetime import date

    from jobs import clean

    start = time.perf_counter()
    clean.run(date.fromisoformat(job["run_date"]), settings, "bench-clean-1")
    return {"seconds": time.perf_counter() - start, "rows": silver_rows(job)}


def silver_rows(job: dict) -> int:
    """Rows in the job's silver tables, from the Delta logs (no data read)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    from core import shop_schema

    lake = Path(job["folder"]) / "data" / "lake" / "silver"
    return sum(
        pc.sum(pa.table(DeltaTable(str(lake / name)).get_add_actions(flatten=True))["num_records"]).as_py()
        for name in shop_schema.SHOP_TABLES
    )


def test_servers(name: str = "dbservers"):
    """A module of the tests' throwaway servers: tests/dbservers.py (PostgreSQL, MariaDB, FerretDB),
    tests/objectstore.py (SeaweedFS), tests/sparkcluster.py (a Spark standalone cluster). tests/ is no package:
    it goes on sys.path (last, so nothing of bench/ is shadowed), where the modules find each other as in pytest."""
    import importlib

    tests = str(REPO / "tests")
    if tests not in sys.path:
        sys.path.append(tests)
    return importlib.import_module(name)


def dbservers():
    """tests/dbservers.py: the throwaway PostgreSQL, MariaDB and FerretDB servers."""
    return test_servers("dbservers")
