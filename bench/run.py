"""Run every benchmark, print its table and write all figures to `bench/results.json`.

`make bench` runs this. The benchmarks print figures, they are not timed tests: run them on a quiet machine
and compare ratios, which survive a noisy one far better than absolute times do.

    .venv/bin/python bench/run.py [--only ingest_path cold_start] [--quick]

Each benchmark is a module here with `run(**options) -> dict` and `table(result) -> str`, listed in BENCHMARKS
with its options: 1 `ingest_path` (warm path vs the floor; also as through RDS Proxy), 2 `cold_start`,
3 `ingest_throughput` (k6 through the local API), 4 `read_history` (compare and the first chart read against
1,000 vs 10 stored runs, on a table of a million rows; what the read model's triggers add to a write),
5 `ndjson_reader` (the reporter on a 1 GB `--out json` file and its .gz vs json.loads). A benchmark whose
module is missing is skipped; one that fails is reported and the rest run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results.json"

# name -> (module, options for a full run, options for --quick).
BENCHMARKS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "ingest_path": ("ingest_path", {"repeat": 1000, "warmup": 50}, {"repeat": 150, "warmup": 20}),
    "ingest_path_300": (
        "ingest_path",
        {"repeat": 300, "warmup": 20, "metrics": 300},
        {"repeat": 40, "warmup": 5, "metrics": 300},
    ),
    "ingest_path_proxy": (
        "ingest_path",
        {"repeat": 1000, "warmup": 50, "proxy": True},
        {"repeat": 150, "warmup": 20, "proxy": True},
    ),
    "cold_start": ("cold_start", {"repeat": 7, "warmup": 1, "profiles": 3}, {"repeat": 3, "warmup": 1, "profiles": 1}),
    "throughput": ("ingest_throughput", {"vus": (20, 50), "duration": "15s"}, {"vus": (20,), "duration": "5s"}),
    "read_history": (
        "read_history",
        {"repeat": 60, "warmup": 5, "before_repeat": 5, "filler_rows": 400_000},
        {"repeat": 10, "warmup": 2, "before_repeat": 2, "filler_rows": 0},
    ),
    "ndjson": ("ndjson_reader", {"size_mb": 1024}, {"size_mb": 32}),
}


def available(name: str) -> bool:
    """Whether the benchmark's module exists (benchmark 3 is added later)."""
    return (Path(__file__).resolve().parent / f"{BENCHMARKS[name][0]}.py").exists()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these benchmarks")
    parser.add_argument("--quick", action="store_true", help="few repetitions: a smoke run, not figures to quote")
    args = parser.parse_args(argv)

    results: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        },
        "quick": args.quick,
        "benchmarks": {},
    }
    for name in args.only or list(BENCHMARKS):
        if not available(name):
            print(f"Benchmark {name}: skipped (bench/{BENCHMARKS[name][0]}.py does not exist yet)\n")
            results["benchmarks"][name] = {"skipped": "not implemented yet"}
            continue
        module_name, full, quick = BENCHMARKS[name]
        started = time.perf_counter()
        try:
            module = importlib.import_module(module_name)
            result = module.run(**(quick if args.quick else full))
        except Exception as error:  # one broken benchmark must not lose the others' figures
            print(f"Benchmark {name}: FAILED: {type(error).__name__}: {error}\n", flush=True)
            results["benchmarks"][name] = {"failed": f"{type(error).__name__}: {error}"}
            continue
        result["seconds"] = round(time.perf_counter() - started, 1)
        results["benchmarks"][name] = result
        print(module.table(result) + "\n", flush=True)

    ran = results["benchmarks"]
    if args.only and RESULTS.is_file():  # a partial run updates its own figures and keeps the others'
        kept = json.loads(RESULTS.read_text())
        kept["benchmarks"].update(ran)
        results = kept | {"updated": results["started"]}
    RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"figures written to {RESULTS}")
    return 1 if any("failed" in result for result in ran.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
