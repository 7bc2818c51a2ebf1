"""Benchmark 3: ingest throughput through the local API, driven by the real k6 binary.

`k6/ingest_load_test.js` (new reports under unique Idempotency-Keys, every 5th iteration a byte-identical
repeat that must be a 200 replay) runs against `scripts/local_api.py` at each VU level in turn, on a clean
table, after a short warm-up. Per level: requests per second, median and p95 latency, and the count of
201/200/other/5xx answers; and whether the table holds exactly the rows the 201s reported (it must).

The local API runs every report through one warm handler at a time, like one Lambda instance, so this
measures one instance: more VUs add queueing, not throughput.

    .venv/bin/python bench/ingest_throughput.py [--vus 20 50] [--duration 15s] [--json]

The database: DATABASE_URL's server, else 127.0.0.1:5432, else an embedded PostgreSQL; a database is
created for the run and dropped afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
from ingest_path import server_url  # the same server choice as benchmark 1

from devkit.localdb import scratch_database

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "k6" / "ingest_load_test.js"
LOCAL_API = REPO_ROOT / "scripts" / "local_api.py"
K6 = Path(sys.executable).parent / "k6"
READY_TIMEOUT_S = 60.0
COUNTERS = ("status_201", "status_200", "status_other", "status_5xx", "metrics_in_201", "replays_ok", "replays_bad")


@contextlib.contextmanager
def local_api(database_url: str, api_key: str, log: Path) -> Iterator[str]:
    """`scripts/local_api.py --port 0` against `database_url`; yields its base URL once it is ready."""
    env = os.environ | {"DATABASE_URL": database_url, "EXPERIMENTS_API_KEY": api_key, "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, str(LOCAL_API), "--port", "0"], cwd=REPO_ROOT, env=env, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        url = None
        while url is None and time.monotonic() < deadline and process.poll() is None:
            found = re.search(r"^Local API on (http://\S+)", log.read_text(errors="replace"), re.MULTILINE)
            url = found.group(1) if found else None
            time.sleep(0.05)
        if url is None:
            raise RuntimeError(f"the local API did not start:\n{log.read_text(errors='replace')}")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_k6(api_url: str, api_key: str, vus: int, duration: str, summary: Path, repeat_every: int) -> dict[str, Any]:
    """One k6 run of the ingest scenario; returns the summary's metrics (raises if k6 itself failed)."""
    env = os.environ | {
        "K6_NO_USAGE_REPORT": "true",
        "API_URL": api_url,
        "API_KEY": api_key,
        "VUS": str(vus),
        "DURATION": duration,
        "REPEAT_EVERY": str(repeat_every),
    }
    argv = [str(K6), "run", "--quiet", "--no-color", f"--summary-export={summary}", str(SCRIPT)]
    done = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    if not summary.exists():
        raise RuntimeError(f"k6 wrote no summary (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    metrics = json.loads(summary.read_text())["metrics"]
    metrics["_exit_code"] = done.returncode  # 99: a threshold failed (e.g. a 5xx), reported, not raised
    return metrics


def level_figures(metrics: dict[str, Any], rows: int, records: int) -> dict[str, Any]:
    """The figures of one VU level, from the k6 summary and the table's counts."""
    counts = {name: int(metrics.get(name, {}).get("count", 0)) for name in COUNTERS}
    duration = metrics["http_req_duration"]
    return {
        "requests": int(metrics["http_reqs"]["count"]),
        "rps": metrics["http_reqs"]["rate"],
        "median_ms": duration["med"],
        "p95_ms": duration["p(95)"],
        "p99_ms": duration["p(99)"],
        "201": counts["status_201"],
        "200": counts["status_200"],
        "other": counts["status_other"],
        "5xx": counts["status_5xx"],
        "replays_ok": counts["replays_ok"],
        "rows": rows,
        "metrics_in_201": counts["metrics_in_201"],
        # Exactly once: one row per metric of each 201, one idempotency record per 201, every repeat replayed.
        "consistent": rows == counts["metrics_in_201"]
        and records == counts["status_201"]
        and counts["replays_bad"] == 0
        and counts["status_200"] == counts["replays_ok"],
        "k6_exit_code": metrics["_exit_code"],
    }


def run(
    vus: Sequence[int] = (20, 50), duration: str = "15s", warmup: str = "3s", repeat_every: int = 5
) -> dict[str, Any]:
    """Run the scenario at each VU level on a clean table; returns the figures per level."""
    server, reached = server_url()
    api_key = secrets.token_urlsafe(16)
    levels: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="k6exp-throughput-") as tmp,
        scratch_database(server, "k6exp_throughput") as database,
    ):
        work = Path(tmp)
        with (
            local_api(database, api_key, work / "local_api.log") as api_url,
            psycopg.connect(database, autocommit=True) as conn,
        ):
            if warmup:
                run_k6(api_url, api_key, 5, warmup, work / "warmup.json", repeat_every)  # handler and pool warm
            for level in vus:
                conn.execute("TRUNCATE experiments, ingest.idempotency_keys")
                metrics = run_k6(api_url, api_key, level, duration, work / f"vus{level}.json", repeat_every)
                rows = conn.execute("SELECT count(*) FROM experiments").fetchone()[0]
                records = conn.execute("SELECT count(*) FROM ingest.idempotency_keys").fetchone()[0]
                levels[str(level)] = level_figures(metrics, rows, records)
    return {
        "benchmark": "throughput",
        "description": f"k6/ingest_load_test.js through scripts/local_api.py, PostgreSQL over {reached}",
        "duration": duration,
        "repeat_every": repeat_every,
        "levels": levels,
    }


def table(result: dict[str, Any]) -> str:
    """The result as a plain-text table."""
    lines = [
        f"Benchmark 3: {result['description']} ({result['duration']} per level, every "
        f"{result['repeat_every']}th iteration a repeat)",
        f"  {'VUs':>4} {'req/s':>8} {'median ms':>10} {'p95 ms':>8} {'201':>7} {'200':>6} {'other':>6} {'5xx':>5}"
        f" {'rows':>8}  exactly once",
    ]
    for level, f in result["levels"].items():
        lines.append(
            f"  {level:>4} {f['rps']:>8.1f} {f['median_ms']:>10.2f} {f['p95_ms']:>8.2f} {f['201']:>7} {f['200']:>6}"
            f" {f['other']:>6} {f['5xx']:>5} {f['rows']:>8}  {'yes' if f['consistent'] else 'NO'}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vus", type=int, nargs="+", default=[20, 50], help="VU levels (default 20 50)")
    parser.add_argument("--duration", default="15s", help="k6 duration per level (default 15s)")
    parser.add_argument("--warmup", default="3s", help="k6 warm-up at 5 VUs before measuring; '' for none")
    parser.add_argument("--repeat-every", type=int, default=5, help="every Nth iteration re-sends (0: never)")
    parser.add_argument("--json", action="store_true", help="also print the result as JSON")
    args = parser.parse_args(argv)
    result = run(vus=args.vus, duration=args.duration, warmup=args.warmup, repeat_every=args.repeat_every)
    print(table(result))
    if args.json:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
