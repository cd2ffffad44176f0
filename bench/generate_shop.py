"""Benchmark: the shop generator, customers per second and peak memory (run by hand, never in tests).

    .venv/bin/python bench/generate_shop.py 10000 100000 1000000 [--url sqlite:////tmp/bench.sqlite]

Each size runs in a fresh child process (so peak memory is that size's), into a fresh SQLite file by default.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path


def one_size(customers: int, url: str | None) -> dict:
    from demo_shop.generate_shop import generate_shop

    folder = Path(tempfile.mkdtemp(prefix="crm-bench-"))
    target = url or f"sqlite:///{folder / 'shop.sqlite'}"
    start = time.perf_counter()
    summary = generate_shop(target, customers=customers, seed=1, end_date=date(2026, 11, 26), truth_dir=folder / "truth", replace=True)
    seconds = time.perf_counter() - start
    rows = sum(summary["rows"].values())
    return {
        "customers": customers,
        "seconds": round(seconds, 1),
        "rows": rows,
        "rows_per_s": round(rows / seconds),
        "orders": summary["rows"]["orders"],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("sizes", nargs="*", type=int, default=[10_000, 100_000])
    parser.add_argument("--url", default=None, help="shop URL (default: a fresh SQLite file per size)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_size(args.child, args.url)))
        return
    print(f"{'customers':>10} {'seconds':>8} {'rows':>11} {'rows/s':>9} {'peak MB':>8}")
    for size in args.sizes:
        command = [sys.executable, __file__, "--child", str(size)] + (["--url", args.url] if args.url else [])
        result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
        print(
            f"{result['customers']:>10,} {result['seconds']:>8} {result['rows']:>11,} {result['rows_per_s']:>9,} {result['peak_rss_mb']:>8}"
        )


if __name__ == "__main__":
    main()
