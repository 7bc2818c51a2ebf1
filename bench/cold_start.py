"""Benchmark 2: cold start, i.e. a fresh interpreter that imports the handler and serves its first request.

Each sample is a new `python` process (the project's interpreter) doing one of two jobs, alternated run by run:

- ours:      import `functions/report/app.py` and call `lambda_handler` with one API Gateway event
             (a 10-metric report): connect, validate, store, answer;
- reference: import only psycopg and json, parse the same event, connect and insert the same rows in one
             transaction with one statement, and build a JSON answer: the same work without the framework.

Both report, from inside the child, the time from their first line to the answer ready ("in-process"); the
parent also measures the whole process from spawn to exit ("process"), which adds interpreter start-up and
shutdown (the same for both). Lambda's own start-up (runtime, layer download) is not part of either.
Run alone: `.venv/bin/python bench/cold_start.py [--repeat N]`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ingest_path import METRICS, REPO_ROOT, REPORT, REPORT_APP, bench_database, count_rows, report_event, server_url

# The child's first line starts the clock; its answer is printed to stderr as one JSON line prefixed "BENCH ".
OURS = """
import time; started = time.perf_counter()
import importlib.util, sys
spec = importlib.util.spec_from_file_location("report_app", sys.argv[1])
app = importlib.util.module_from_spec(spec)
spec.loader.exec_module(app)
imported = time.perf_counter()

class LambdaContext:
    function_name = "ReportFunction"
    function_version = "$LATEST"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:ReportFunction"
    aws_request_id = "00000000-0000-4000-8000-000000000000"
    def get_remaining_time_in_millis(self):
        return 10_000

import json
with open(sys.argv[2]) as file:
    event = json.load(file)
response = app.lambda_handler(event, LambdaContext())
done = time.perf_counter()
assert response["statusCode"] == 201, response
print("BENCH " + json.dumps({"import": imported - started, "total": done - started}), file=sys.stderr)
"""

REFERENCE = """
import time; started = time.perf_counter()
import json, os, sys, uuid
from datetime import datetime, timezone
import psycopg
from psycopg.types.json import Jsonb
imported = time.perf_counter()

with open(sys.argv[2]) as file:
    event = json.load(file)
report = json.loads(event["body"])
created_at = datetime.fromisoformat(report["date"]).astimezone(timezone.utc).replace(tzinfo=None)
metadata = Jsonb({**report["metadata"], "rawFile": report["rawFile"], "ingest": {"requestId": str(uuid.uuid4())}})
ids = {metric: str(uuid.uuid4()) for metric in report["metricsSummary"]}
rows = [
    (ids[metric], report["name"], report["notes"], report["variant"], metric, value, metadata, created_at)
    for metric, value in report["metricsSummary"].items()
]
columns = 'id, name, description, variant, metric, value, metadata, "createdAt"'
statement = f"INSERT INTO experiments ({columns}) VALUES " + ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s)"] * len(rows))
with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
    conn.execute(statement, [value for row in rows for value in row])
    conn.commit()
answer = json.dumps({"name": report["name"], "variant": report["variant"], "ids": ids})
done = time.perf_counter()
print("BENCH " + json.dumps({"import": imported - started, "total": done - started}), file=sys.stderr)
"""

CHILDREN = {"ours": OURS, "reference": REFERENCE}


def spawn(code: str, event_file: Path, env: dict[str, str]) -> dict[str, float]:
    """Run one fresh interpreter; return its in-process times and the whole process's wall time (seconds)."""
    started = time.perf_counter()
    child = subprocess.run(
        [sys.executable, "-c", code, str(REPORT_APP), str(event_file)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,  # the handler's logs and metrics
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
        check=False,
    )
    process = time.perf_counter() - started
    lines = [line for line in child.stderr.splitlines() if line.startswith("BENCH ")]
    if child.returncode != 0 or not lines:
        raise RuntimeError(f"child failed ({child.returncode}):\n{child.stderr[-2000:]}")
    return {**json.loads(lines[-1].removeprefix("BENCH ")), "process": process}


def run(repeat: int = 30, warmup: int = 3) -> dict[str, Any]:
    """Alternate the two children `repeat` times (after `warmup` unrecorded runs that fill the bytecode cache)."""
    url, transport = server_url()
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in CHILDREN}
    with bench_database(url) as database, tempfile.TemporaryDirectory(prefix="k6exp-bench-") as folder:
        env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "DB_"))}
        env["DATABASE_URL"] = database
        for round_number in range(warmup + repeat):
            order = list(CHILDREN) if round_number % 2 == 0 else list(reversed(CHILDREN))
            for name in order:
                event_file = Path(folder) / f"event-{round_number}-{name}.json"
                event_file.write_text(json.dumps(report_event(REPORT, f"cold-{round_number}-{name}")))
                sample = spawn(CHILDREN[name], event_file, env)
                if round_number >= warmup:
                    samples[name].append(sample)
        rows = count_rows(database)
    if rows != 2 * (warmup + repeat) * METRICS:
        raise RuntimeError(f"cold start runs stored {rows} rows, expected {2 * (warmup + repeat) * METRICS}")

    def median_ms(name: str, key: str) -> float:
        return statistics.median(sample[key] for sample in samples[name]) * 1000

    figures = {
        name: {
            "import_ms": median_ms(name, "import"),
            "first_request_ms": median_ms(name, "total") - median_ms(name, "import"),
            "in_process_ms": median_ms(name, "total"),
            "process_ms": median_ms(name, "process"),
            "n": len(samples[name]),
        }
        for name in CHILDREN
    }
    return {
        "benchmark": "cold_start",
        "description": f"fresh interpreter: imports + first request, PostgreSQL over {transport}",
        "repeat": repeat,
        "python": sys.version.split()[0],
        "variants": figures,
        "ratios": {
            "ours/reference (in-process)": figures["ours"]["in_process_ms"] / figures["reference"]["in_process_ms"],
            "ours/reference (process)": figures["ours"]["process_ms"] / figures["reference"]["process_ms"],
        },
    }


def table(result: dict[str, Any]) -> str:
    """The result as a plain-text table."""
    lines = [
        f"Benchmark 2: {result['description']} ({result['repeat']} runs each, alternated; medians)",
        f"  {'variant':<10} {'imports ms':>10} {'1st request ms':>14} {'in-process ms':>13} {'process ms':>10}",
    ]
    for name, figures in result["variants"].items():
        lines.append(
            f"  {name:<10} {figures['import_ms']:>10.1f} {figures['first_request_ms']:>14.1f}"
            f" {figures['in_process_ms']:>13.1f} {figures['process_ms']:>10.1f}"
        )
    for name, ratio in result["ratios"].items():
        lines.append(f"  {name:<28} {ratio:>6.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)
    print(table(run(args.repeat, args.warmup)))


if __name__ == "__main__":
    sys.exit(main())
