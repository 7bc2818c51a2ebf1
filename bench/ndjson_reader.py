"""Benchmark 4: the reporter on k6's raw output (`--out json`), plain and gzipped, against the floor.

A generated NDJSON file in k6's own format (default 1 GB; every iteration writes the 14 samples of one HTTP
request, tagged as k6 tags them) and its `.gz` are read by:

- ours:  the reporter itself, `scripts/report_k6_result.py FILE URL - bench --variant v --dry-run` (it reads
         the file with scripts/k6ndjson.py, maps and prints the payload; nothing is sent);
- floor: `for line in f: json.loads(line)` over the same file (through `gzip.open` for the .gz).

Each runs in a child process of its own; its wall time gives MB/s (of the uncompressed file) and `os.wait4`
gives its peak RSS. The two are alternated, `repeat` times each, and the medians are compared in the same run.
Goal: ours at least 0.8x the floor's MB/s. Run alone: `.venv/bin/python bench/ndjson_reader.py [--size-mb N]`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
REPORTER = REPO_ROOT / "scripts" / "report_k6_result.py"
GOAL = 0.8
BLOCKS = 4000  # distinct iterations generated; the file repeats them until it has its size

FLOOR = """
import gzip, json, sys
path = sys.argv[1]
with (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) as f:
    for line in f:
        json.loads(line)
"""

TREND = ("http_req_duration", "http_req_blocked", "http_req_connecting", "http_req_tls_handshaking",
         "http_req_sending", "http_req_waiting", "http_req_receiving")  # fmt: skip
KINDS = {name: "trend" for name in (*TREND, "iteration_duration")} | {
    "http_reqs": "counter", "http_req_failed": "rate", "checks": "rate", "data_sent": "counter",
    "data_received": "counter", "iterations": "counter", "vus": "gauge",
}  # fmt: skip


def _point(metric: str, time_s: str, value: float | int, tags: str) -> str:
    return f'{{"metric":"{metric}","type":"Point","data":{{"time":"{time_s}","value":{value},"tags":{{{tags}}}}}}}\n'


def _block(rng: random.Random, second: int) -> str:
    """One iteration's samples, as k6 writes them for one GET."""
    endpoint = rng.choice(("GET /products/:id", "GET /products"))
    status = "200" if rng.random() > 0.01 else "503"
    http_tags = (
        f'"expected_response":"{"true" if status == "200" else "false"}","group":"","method":"GET",'
        f'"name":"{endpoint}","proto":"HTTP/1.1","scenario":"default","status":"{status}",'
        f'"url":"http://localhost:3001{endpoint.replace(":id", "123")}"'
    )
    plain = '"group":"","scenario":"default"'
    when = f"2026-12-02T08:{second // 60 % 60:02d}:{second % 60:02d}.{rng.randrange(10**9):09d}Z"
    duration = round(rng.lognormvariate(1.5, 0.5), 6)
    lines = [_point("http_reqs", when, 1, http_tags), _point("http_req_duration", when, duration, http_tags)]
    lines += [_point(name, when, round(rng.random() * 0.05, 6), http_tags) for name in TREND[1:]]
    lines.append(_point("http_req_failed", when, int(status != "200"), http_tags))
    lines.append(_point("checks", when, int(status == "200"), plain + ',"check":"status is 200"'))
    lines.append(_point("data_sent", when, 95, plain))
    lines.append(_point("data_received", when, rng.randrange(300, 400), plain))
    lines.append(_point("iteration_duration", when, round(duration + 0.2, 6), plain))
    lines.append(_point("iterations", when, 1, plain))
    if second % 7 == 0:
        lines.append(_point("vus", when, 20, ""))
    return "".join(lines)


def generate(path: Path, size_mb: float, seed: int = 1) -> int:
    """Write a k6 `--out json` file of about `size_mb` MB; returns its size in bytes."""
    rng = random.Random(seed)
    threshold = '["p(95)<500"]'
    header = "".join(
        f'{{"type":"Metric","data":{{"name":"{name}","type":"{kind}","contains":"default","thresholds":'
        f'{threshold if name == "http_req_duration" else "[]"},"submetrics":null}},"metric":"{name}"}}\n'
        for name, kind in KINDS.items()
    )
    blocks = [_block(rng, second).encode() for second in range(BLOCKS)]
    target = int(size_mb * 1024 * 1024)
    written = 0
    with open(path, "wb", buffering=4 * 1024 * 1024) as out:
        written += out.write(header.encode())
        chunk = b"".join(blocks)
        while written + len(chunk) <= target:
            written += out.write(chunk)
        for block in blocks:
            if written + len(block) > target:
                break
            written += out.write(block)
    return written


def compress(source: Path, target: Path) -> None:
    with open(source, "rb") as plain, gzip.open(target, "wb", compresslevel=1) as packed:
        shutil.copyfileobj(plain, packed, 4 * 1024 * 1024)


# Starts the measured command and reports its wall time and peak RSS. It runs in a fresh interpreter of its own:
# Linux counts a process's RSS before its exec in its peak, so a child forked straight from this (large) process
# would report this process's size.
LAUNCHER = """
import json, os, resource, subprocess, sys, time
started = time.perf_counter()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
elapsed = time.perf_counter() - started
peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
tail = code.stderr.decode()[-500:]
print(json.dumps({"seconds": elapsed, "peak_kb": peak_kb, "code": code.returncode, "stderr": tail}))
"""


def measure(argv: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one child process; it must succeed."""
    done = subprocess.run([sys.executable, "-c", LAUNCHER, *argv], capture_output=True, text=True, cwd=REPO_ROOT)
    figures = json.loads(done.stdout)
    if figures["code"] != 0:
        raise RuntimeError(f"{argv[1]} exited {figures['code']}: {figures['stderr']}")
    return figures["seconds"], figures["peak_kb"] / 1024  # Linux: kilobytes


def run(size_mb: float = 1024, repeat: int = 1, keep: str | None = None) -> dict[str, Any]:
    folder = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="k6-ndjson-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        plain = folder / "out.json"
        started = time.perf_counter()
        size = plain.stat().st_size if plain.exists() else generate(plain, size_mb)
        packed = folder / "out.json.gz"
        if not packed.exists():
            compress(plain, packed)
        generated_s = time.perf_counter() - started
        result: dict[str, Any] = {
            "size_mb": round(size / 1e6, 1),
            "gz_mb": round(packed.stat().st_size / 1e6, 1),
            "generate_s": round(generated_s, 1),
            "files": {},
        }
        for label, path in (("plain", plain), ("gz", packed)):
            ways = {
                "floor": [sys.executable, "-c", FLOOR, str(path)],
                "ours": [sys.executable, str(REPORTER), str(path), "http://127.0.0.1:9", "-", "bench",
                         "--variant", "v", "--dry-run"],
            }  # fmt: skip
            times: dict[str, list[float]] = {"floor": [], "ours": []}
            rss: dict[str, float] = {"floor": 0.0, "ours": 0.0}
            for round_ in range(repeat):
                for way in ("floor", "ours") if round_ % 2 == 0 else ("ours", "floor"):
                    seconds, peak = measure(ways[way])
                    times[way].append(seconds)
                    rss[way] = max(rss[way], peak)
            figures = {}
            for way in ("floor", "ours"):
                median = statistics.median(times[way])
                figures[way] = {
                    "seconds": round(median, 2),
                    "mb_s": round(size / 1e6 / median, 1),
                    "peak_rss_mb": round(rss[way], 1),
                }
            figures["ratio"] = round(figures["ours"]["mb_s"] / figures["floor"]["mb_s"], 2)
            result["files"][label] = figures
        return result
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


def table(result: dict[str, Any]) -> str:
    lines = [
        f"Benchmark 4: the reporter on k6 --out json, {result['size_mb']} MB ({result['gz_mb']} MB gzipped), "
        f"vs the floor `for line in f: json.loads(line)` (goal: ours >= {GOAL}x the floor's MB/s)",
        f"{'file':<6} {'way':<6} {'seconds':>8} {'MB/s':>8} {'peak RSS MB':>12}",
    ]
    for label, figures in result["files"].items():
        for way in ("floor", "ours"):
            f = figures[way]
            lines.append(f"{label:<6} {way:<6} {f['seconds']:>8} {f['mb_s']:>8} {f['peak_rss_mb']:>12}")
        verdict = "meets" if figures["ratio"] >= GOAL else "misses"
        lines.append(f"{label:<6} ours/floor throughput {figures['ratio']}x ({verdict} the goal)")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=1024, help="size of the generated file (default 1024)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each way (alternated; medians)")
    parser.add_argument("--keep", help="generate into (and reuse) this folder instead of a temporary one")
    args = parser.parse_args()
    print(table(run(args.size_mb, args.repeat, args.keep)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
