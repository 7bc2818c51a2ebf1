"""Benchmark 2: cold start, i.e. a fresh interpreter that imports the handler and serves its first request.

Each sample is a new `python` process (the project's interpreter) doing one of three jobs, alternated run by run:

- ours:      import `functions/report/app.py` and call `lambda_handler` with one API Gateway event
             (a 10-metric report): connect, validate, store, answer;
- reference: import only psycopg and json, parse the same event, connect and insert the same rows in one
             transaction with one statement, and build a JSON answer: the same work without the framework;
- libraries: the reference's work, with the libraries our functions must use imported too (pydantic, Powertools'
             Logger, Metrics and resolver): the floor for any handler built on them.

Our modules run from bytecode written by the warm-up run, as `make build` ships the functions and the layer.

Both report, from inside the child, the time from their first line to the answer ready ("in-process"); the
parent also measures the whole process from spawn to exit ("process"), which adds interpreter start-up and
shutdown (the same for both). Lambda's own start-up (runtime, layer download) is not part of either.
Run alone: `.venv/bin/python bench/cold_start.py [--repeat N]`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from ingest_path import REPO_ROOT, REPORT, REPORT_APP, count_rows, report_event, server_url

from devkit.localdb import scratch_database

TEMPLATE = REPO_ROOT / "template.yaml"
# What the Lambda runtime sets and Powertools looks at (e.g. its Tracer only traces, and imports the X-Ray SDK,
# where LAMBDA_TASK_ROOT is set): the child runs as it would in Lambda, not as a local script.
LAMBDA_ENV = {
    "LAMBDA_TASK_ROOT": str(REPORT_APP.parent),
    "AWS_LAMBDA_FUNCTION_NAME": "ReportFunction",
    "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
    "AWS_REGION": "eu-west-1",
    "AWS_DEFAULT_REGION": "eu-west-1",
    "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
    "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
}

METRICS = len(REPORT["metricsSummary"])

# The child's first line starts the clock; its answer is printed to stderr as one JSON line prefixed "BENCH ".
OURS = """
import time; started = time.perf_counter(); cpu_started = time.process_time()
import importlib.util, sys
spec = importlib.util.spec_from_file_location("report_app", sys.argv[1])
app = importlib.util.module_from_spec(spec)
spec.loader.exec_module(app)
imported = time.perf_counter()

from devkit.lambdaevents import LambdaContext  # what Lambda passes; after the import is timed

import json
with open(sys.argv[2]) as file:
    event = json.load(file)
response = app.lambda_handler(event, LambdaContext())
done = time.perf_counter()
cpu = time.process_time() - cpu_started
assert response["statusCode"] == 201, response
print("BENCH " + json.dumps({"import": imported - started, "total": done - started, "cpu": cpu}), file=sys.stderr)
"""

REFERENCE = """
import time; started = time.perf_counter(); cpu_started = time.process_time()
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
cpu = time.process_time() - cpu_started
print("BENCH " + json.dumps({"import": imported - started, "total": done - started, "cpu": cpu}), file=sys.stderr)
"""

# The reference's work with the libraries every function is built on imported too (psycopg, pydantic with one
# model, Powertools' Logger, Metrics and resolver with validation), and none of our code: the cold start no handler
# on these libraries can go below, however lean its own code.
LIBRARIES = REFERENCE.replace(
    "imported = time.perf_counter()",
    """from pydantic import BaseModel
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.event_handler.openapi.params import Body

class Shape(BaseModel):
    name: str

resolver = APIGatewayRestResolver(enable_validation=True)
imported = time.perf_counter()""",
)

assert LIBRARIES != REFERENCE, "the libraries child must import more than the reference"
CHILDREN = {"ours": OURS, "libraries": LIBRARIES, "reference": REFERENCE}


GOAL = 1.5  # ours/reference, in-process (issue 11: imports + first request at most 1.5x psycopg's alone)
IMPORTTIME_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)$")


def spawn(code: str, event_file: Path, env: dict[str, str], *, importtime: bool = False) -> dict[str, Any]:
    """Run one fresh interpreter; return its in-process times and the whole process's wall time (seconds).

    With `importtime`, the interpreter runs with `-X importtime` and the result also holds `imports`: for every
    module, its own import time in microseconds (`-X importtime`'s "self" column).
    """
    started = time.perf_counter()
    child = subprocess.run(
        [sys.executable, *(["-X", "importtime"] if importtime else []), "-c", code, str(REPORT_APP), str(event_file)],
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
    result: dict[str, Any] = {**json.loads(lines[-1].removeprefix("BENCH ")), "process": process}
    if importtime:
        result["imports"] = {
            match.group(4): int(match.group(1))
            for match in map(IMPORTTIME_LINE.match, child.stderr.splitlines())
            if match
        }
    return result


def function_environment(logical_id: str = "ReportFunction") -> dict[str, str]:
    """The plain environment template.yaml gives the function (Globals included), read the way the local API does."""
    spec = importlib.util.spec_from_file_location("bench_local_api", REPO_ROOT / "scripts" / "local_api.py")
    local_api = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = local_api  # its dataclasses look their module up there
    spec.loader.exec_module(local_api)
    routes, _ = local_api.routes_from_template(TEMPLATE)
    [environment] = {json.dumps(r.function.environment) for r in routes if r.function.logical_id == logical_id}
    return {name: value for name, value in json.loads(environment).items() if value}


def package_of(module: str) -> str:
    """The distribution-level name a module is counted under: `pydantic_core.core_schema` -> `pydantic_core`."""
    top = module.split(".")[0]
    if top in sys.stdlib_module_names or top.startswith("_") or top == "encodings":
        return "(standard library)"
    return top


def import_breakdown(samples: list[dict[str, int]], top: int = 8) -> dict[str, Any]:
    """Medians over `samples` of `-X importtime`'s self times, summed per package, and the slowest modules (ms)."""
    modules = sorted({name for sample in samples for name in sample})
    median_us = {name: statistics.median(sample.get(name, 0) for sample in samples) for name in modules}
    packages: dict[str, float] = defaultdict(float)
    for name, micros in median_us.items():
        packages[package_of(name)] += micros / 1000
    slowest = sorted(median_us.items(), key=lambda item: item[1], reverse=True)[:top]
    return {
        "total_ms": sum(median_us.values()) / 1000,
        "modules": len(modules),
        "packages_ms": dict(sorted(packages.items(), key=lambda item: item[1], reverse=True)),
        "slowest_modules_ms": {name: micros / 1000 for name, micros in slowest},
    }


def run(repeat: int = 7, warmup: int = 1, profiles: int = 3) -> dict[str, Any]:
    """Alternate the two children `repeat` times (after `warmup` unrecorded runs that fill the bytecode cache),
    then run each `profiles` more times under `python -X importtime` for the breakdown of the imports."""
    url, transport = server_url()
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in CHILDREN}
    imports: dict[str, list[dict[str, int]]] = {name: [] for name in CHILDREN}
    with (
        scratch_database(url, "k6exp_bench_cold") as database,
        tempfile.TemporaryDirectory(prefix="k6exp-bench-") as folder,
    ):
        # No PYTHONDONTWRITEBYTECODE: the warm-up run writes our modules' bytecode, as `make build` ships it.
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("AWS_", "DB_")) and key != "PYTHONDONTWRITEBYTECODE"
        }
        env |= function_environment() | LAMBDA_ENV  # as deployed: POWERTOOLS_*, PYDANTIC_DISABLE_PLUGINS, ...
        env["DATABASE_URL"] = database
        for round_number in range(warmup + repeat + profiles):
            order = list(CHILDREN) if round_number % 2 == 0 else list(reversed(CHILDREN))
            profiling = round_number >= warmup + repeat
            for name in order:
                event_file = Path(folder) / f"event-{round_number}-{name}.json"
                event_file.write_text(json.dumps(report_event(REPORT, f"cold-{round_number}-{name}")))
                sample = spawn(CHILDREN[name], event_file, env, importtime=profiling)
                if profiling:
                    imports[name].append(sample["imports"])
                elif round_number >= warmup:
                    samples[name].append(sample)
        rows = count_rows(database)
    runs = warmup + repeat + profiles
    if rows != len(CHILDREN) * runs * METRICS:
        raise RuntimeError(f"cold start runs stored {rows} rows, expected {len(CHILDREN) * runs * METRICS}")

    def median_ms(name: str, key: str) -> float:
        return statistics.median(sample[key] for sample in samples[name]) * 1000

    figures = {
        name: {
            "import_ms": median_ms(name, "import"),
            "first_request_ms": median_ms(name, "total") - median_ms(name, "import"),
            "in_process_ms": median_ms(name, "total"),
            "cpu_ms": median_ms(name, "cpu"),
            "process_ms": median_ms(name, "process"),
            "n": len(samples[name]),
        }
        for name in CHILDREN
    }
    ratio = figures["ours"]["in_process_ms"] / figures["reference"]["in_process_ms"]
    floor = figures["libraries"]["in_process_ms"] / figures["reference"]["in_process_ms"]
    return {
        "benchmark": "cold_start",
        "description": f"fresh interpreter: imports + first request, PostgreSQL over {transport}",
        "repeat": repeat,
        "python": sys.version.split()[0],
        "variants": figures,
        "ratios": {
            "ours/reference (in-process)": ratio,
            "ours/reference (CPU, in-process)": figures["ours"]["cpu_ms"] / figures["reference"]["cpu_ms"],
            "ours/reference (process)": figures["ours"]["process_ms"] / figures["reference"]["process_ms"],
            "libraries/reference (in-process)": floor,
            "ours/libraries (in-process)": figures["ours"]["in_process_ms"] / figures["libraries"]["in_process_ms"],
        },
        "imports": {name: import_breakdown(profile) for name, profile in imports.items()},
        "goal": f"ours/reference (in-process) <= {GOAL}",
        "meets_goal": ratio <= GOAL,
    }


def table(result: dict[str, Any]) -> str:
    """The result as a plain-text table, then where the imports' time goes."""
    lines = [
        f"Benchmark 2: {result['description']} ({result['repeat']} runs each, alternated; medians)",
        f"  {'variant':<10} {'imports ms':>10} {'1st request ms':>14} {'in-process ms':>13} {'CPU ms':>8}"
        f" {'process ms':>10}",
    ]
    for name, figures in result["variants"].items():
        lines.append(
            f"  {name:<10} {figures['import_ms']:>10.1f} {figures['first_request_ms']:>14.1f}"
            f" {figures['in_process_ms']:>13.1f} {figures.get('cpu_ms', float('nan')):>8.1f}"
            f" {figures['process_ms']:>10.1f}"
        )
    for name, ratio in result["ratios"].items():
        lines.append(f"  {name:<33} {ratio:>6.2f}x")
    if "goal" in result:
        lines.append(f"  goal {result['goal']}: {'met' if result['meets_goal'] else 'NOT met'}")
    for name, breakdown in result.get("imports", {}).items():
        lines.append(
            f"  python -X importtime, {name}: {breakdown['total_ms']:.1f} ms in {breakdown['modules']} modules"
            " (median self times)"
        )
        packages = list(breakdown["packages_ms"].items())[:6]
        lines.append("    by package: " + ", ".join(f"{package} {ms:.1f}" for package, ms in packages))
        slowest = breakdown["slowest_modules_ms"].items()
        lines.append("    slowest:    " + ", ".join(f"{module} {ms:.1f}" for module, ms in slowest))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--profiles", type=int, default=3, help="extra runs under -X importtime")
    args = parser.parse_args(argv)
    print(table(run(args.repeat, args.warmup, args.profiles)))


if __name__ == "__main__":
    sys.exit(main())
