#!/usr/bin/env python3
"""Report a k6 end-of-test summary to the experiments API (POST <base_url>/experiments/report).

    python scripts/report_k6_result.py <k6_summary.json> <base_url> <api_key|-> "<name>" ["notes"]
           [--variant V] [--metadata KEY=VALUE ...] [--k6-file PATH] [--dry-run] [--timeout S] [--retries N]
           [--compare-to BASELINE [--fail-on-regression PCT] [--runs N]]

The original doc's positional call keeps working. `-` (or an empty string) as the key reads it from
`EXPERIMENTS_API_KEY`, so CI logs never show it; the key itself is never printed.

It reads the three JSON shapes k6 writes and says which one it found:
  * `k6 run --summary-export=FILE`        metrics.<name>.{med,"p(95)",...}; thresholds {expr: true if FAILED}
  * `handleSummary(data)` -> JSON.stringify metrics.<name>.values.{...}; thresholds {expr: {"ok": bool}}
  * `--new-machine-readable-summary` (k6 1.5+) results.metrics is a list; counters carry only `count`
and k6's raw output, `k6 run --out json=FILE` (plain or .gz), from whose samples it computes the same figures
(scripts/k6ndjson.py: streamed, only the reported metrics' lines decoded; a cut-off last line is a warning).

The body never carries "now": `date` is sent only when the file records when k6 wrote it (machine-readable
summaries), else the API stamps its own time. Reporting the same file again (a re-run CI job) therefore
sends the same bytes with the same Idempotency-Key, which the API answers as a replay, not a conflict.

The regression gate (CI): with `--compare-to BASELINE`, once the report is stored (or replayed) the reporter
asks GET <base_url>/experiments/compare?name=&baseline=BASELINE&runs=N&threshold=PCT for the verdicts, prints
a table of the reported variant against the baseline and, when GITHUB_STEP_SUMMARY is set, appends the same
as Markdown to that file. With `--fail-on-regression PCT` it exits 4 when any metric's verdict is `worse`:
the API calls a metric worse only when the change passes PCT percent AND the run-to-run noise (Mann-Whitney U
with 4+ runs a side, else no overlap between the runs). Without it the table is informational (exit 0).

Exit codes (the contract in DESIGN.md):
  0 stored, or replayed (the same report was already stored)    2 rejected by the API (4xx; message printed)
  1 usage error, or k6 file missing/unreadable/invalid (nothing sent)   3 API unreachable after retries
  4 regression gate failed: a metric got worse than the baseline (--fail-on-regression)

Standard library only, Python >= 3.9: a CI job needs nothing but `python3`.
"""

from __future__ import annotations

import argparse
import email.utils
import hashlib
import http.client
import json
import math
import os
import random
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NoReturn

try:  # The k6 mapping and the API's limits: the API's own modules, standard library only (one mapping, not two).
    from experiments import k6summary
except ImportError:  # a bare `python3` in a checkout, without `pip install -e .`: the package is in layers/common
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "layers", "common"))
    from experiments import k6summary
from experiments.k6ingest import normalise_utc, run_metadata
from experiments.k6summary import finite_number

try:  # k6's raw output (`--out json`): a module of its own next to this script, standard library only
    import k6ndjson
except ImportError:  # loaded by path (tests), without scripts/ on sys.path
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import k6ndjson
from experiments.limits import COLUMN_DECIMALS, MAX_COMPARE_RUNS, MAX_THRESHOLD_PCT, column_value

EXIT_OK = 0
EXIT_USAGE = 1
EXIT_REJECTED = 2
EXIT_UNREACHABLE = 3
EXIT_REGRESSION = 4  # --fail-on-regression: a metric got worse than the baseline

API_KEY_ENV = "EXPERIMENTS_API_KEY"
K6_FILE_ENV = "K6_FILE"
REPORT_PATH = "/experiments/report"
COMPARE_PATH = "/experiments/compare"
STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"
USER_AGENT = "k6-experiments-reporter/1"

SHAPE_SUMMARY_EXPORT = k6summary.SHAPE_SUMMARY_EXPORT
SHAPE_HANDLE_SUMMARY = k6summary.SHAPE_HANDLE_SUMMARY
SHAPE_MACHINE_READABLE = k6summary.SHAPE_MACHINE_READABLE

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_RETRIES = 4
DEFAULT_BACKOFF_BASE_S = 0.5
BACKOFF_CAP_FACTOR = 20  # cap = 20 x base: 10 s with the default base
RETRY_AFTER_MAX_S = 60.0  # honour the server's Retry-After, but never hang a CI job for minutes

DEFAULT_GATE_RUNS = 5
MAX_GATE_RUNS = MAX_COMPARE_RUNS  # the compare endpoint's bounds for `runs` and `threshold`
# The gate's table lists the reporter's own metrics in this order (latencies, throughput, failures), then any other.
METRIC_ORDER = (
    "p50_ms", "p90_ms", "p95_ms", "p99_ms", "avg_ms", "min_ms", "max_ms",
    "rps", "requests_count", "error_rate", "checks_pass_rate",
)  # fmt: skip


class ReporterError(Exception):
    """A failure that ends the run with a one-line message and a documented exit code."""

    exit_code = EXIT_USAGE


class UsageError(ReporterError):
    """Bad command line or settings (exit 1)."""


class SummaryError(ReporterError):
    """The k6 file is missing, not JSON, or lacks what a report needs (exit 1, nothing sent)."""


class RejectedError(ReporterError):
    """The API answered 4xx: the report is wrong or the key is, and retrying cannot help (exit 2)."""

    exit_code = EXIT_REJECTED


class UnreachableError(ReporterError):
    """Connection errors, timeouts, 429 or 5xx on every attempt (exit 3)."""

    exit_code = EXIT_UNREACHABLE


# --------------------------------------------------------------------------------------------- k6 summary


@dataclass
class K6Report:
    """What the reporter sends of one k6 file: its shape, the chosen metrics (key -> value) and the run's context."""

    shape: str
    metrics: dict[str, float]
    vus: float | None = None
    duration_s: float | None = None
    script: str | None = None
    generated_at: str | None = None
    thresholds_passed: list[str] = field(default_factory=list)
    thresholds_failed: list[str] = field(default_factory=list)


def load_summary_file(path: str) -> tuple[bytes, Any]:
    """Read the k6 file; returns its exact bytes (for the idempotency key) and the decoded JSON."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise SummaryError(f"k6 summary file not found: {path}") from None
    except OSError as exc:
        raise SummaryError(f"cannot read k6 summary file {path}: {exc.strerror or exc}") from None
    try:
        doc = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise SummaryError(f"{path} is not JSON (not UTF-8 text): not a k6 summary") from None
    except json.JSONDecodeError as exc:
        raise SummaryError(
            f"{path} is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno}): not a k6 summary"
        ) from None
    return raw, doc


def parse_summary(doc: Any, path: str, include: Iterable[str] = (), exclude: Iterable[str] = ()) -> K6Report:
    """Every chosen figure of any k6 summary shape, keyed by the convention of `experiments.k6summary`.

    Only a file with no metric at all is refused: a run without HTTP is reported with what it has.
    """
    try:
        summary = k6summary.read_summary(doc)
    except k6summary.SummaryError as exc:
        raise SummaryError(f"{path} is {exc}") from None
    return report_of(summary, path, include, exclude)


def is_ndjson_file(path: str) -> bool:
    """Whether `path` is k6's raw output (`--out json`, plain or gzipped) rather than a summary document."""
    try:
        with open(path, "rb") as handle:
            return k6ndjson.is_ndjson(handle.read(64 * 1024))
    except OSError:
        return False  # load_summary_file says what is wrong with it


def parse_ndjson(
    path: str, include: Iterable[str] = (), exclude: Iterable[str] = (), warn: Callable[[str], None] = print
) -> K6Report:
    """Every chosen figure of a `--out json` file, computed from its samples as k6 computes its summary."""
    try:
        reading = k6ndjson.read_ndjson(path, k6ndjson.Selection(list(include), list(exclude)))
    except OSError as exc:
        raise SummaryError(f"cannot read k6 output file {path}: {exc.strerror or exc}") from None
    except k6summary.SummaryError as exc:
        raise SummaryError(str(exc)) from None
    for warning in reading.warnings:
        warn(f"warning: {warning}")
    return report_of(reading.summary, path, include, exclude)


def report_of(summary: k6summary.K6Summary, path: str, include: Iterable[str], exclude: Iterable[str]) -> K6Report:
    """The reporter's view of a summary: the chosen metrics and the run's context."""
    metrics = k6summary.select_metrics(summary, include, exclude)
    if not metrics:
        raise SummaryError(f"{path} ({summary.shape}) has no metric to report")
    passed, failed = summary.thresholds()
    return K6Report(
        shape=summary.shape,
        metrics=metrics,
        vus=summary.vus_max,
        duration_s=summary.duration_s,
        script=summary.script,
        generated_at=normalise_utc(summary.generated_at) if summary.generated_at else None,
        thresholds_passed=passed,
        thresholds_failed=failed,
    )


# --------------------------------------------------------------------------------------------- payload


def clean_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Each value as the column will store it (4 decimals, the API's rounding rule); a value the column cannot
    hold is sent as it is, and the API keeps it exactly in the run's metadata (the answer lists it)."""
    cleaned: dict[str, float] = {}
    for name, value in metrics.items():
        stored = column_value(value)
        number = value if stored is None else float(stored) + 0.0  # + 0.0 turns -0.0 into 0.0
        cleaned[name] = int(number) if number.is_integer() and abs(number) < 2**53 else number
    return cleaned


def parse_metadata_value(text: str) -> Any:
    """`--metadata` values: int, float or bool when they look like one, else the string itself."""
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if re.fullmatch(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?", text):
        number = float(text)
        if math.isfinite(number):
            return number
    return text


def parse_metadata_pairs(pairs: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` strings into a dict, later ones winning; a pair without `=` or key is a usage error."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--metadata expects KEY=VALUE, got {pair!r}")
        out[key] = parse_metadata_value(value)
    return out


def git_sha(env: dict[str, str]) -> str | None:
    """The commit under test: GITHUB_SHA in Actions, else `git rev-parse HEAD`, else None."""
    sha = env.get("GITHUB_SHA", "").strip()
    if sha:
        return sha
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    sha = done.stdout.strip()
    return sha if done.returncode == 0 and re.fullmatch(r"[0-9a-f]{7,64}", sha) else None


def ci_run_url(env: dict[str, str]) -> str | None:
    """Link to the GitHub Actions run that produced the report, when running in one."""
    repo, run_id = env.get("GITHUB_REPOSITORY", "").strip(), env.get("GITHUB_RUN_ID", "").strip()
    if not repo or not run_id:
        return None
    server = env.get("GITHUB_SERVER_URL", "").strip() or "https://github.com"
    return f"{server.rstrip('/')}/{repo}/actions/runs/{run_id}"


def build_metadata(
    summary: K6Report,
    extra: dict[str, Any],
    k6_file: str | None,
    env: dict[str, str],
    directions: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """Context stored with every metric row; `--metadata` pairs are applied last and win.

    `directions` ({"higher": [glob], "lower": [glob]}) tells the API's verdicts which way the run's own metrics
    should go (--higher-is-better / --lower-is-better).
    """
    metadata = run_metadata(
        summary.shape,
        vus=summary.vus,
        duration_s=summary.duration_s,
        duration=env.get("DURATION", "").strip() or None,
        thresholds=(summary.thresholds_passed, summary.thresholds_failed),
        k6_file=k6_file or env.get(K6_FILE_ENV, "").strip() or summary.script,
        git_sha=git_sha(env),
        ci_run_url=ci_run_url(env),
        directions=directions,
    )
    metadata.update(extra)
    return metadata


def build_payload(
    *,
    name: str,
    variant: str | None,
    notes: str | None,
    metrics: dict[str, float],
    raw_file: str,
    metadata: dict[str, Any],
    date: str | None,
) -> dict[str, Any]:
    """The request body: only the contract's top-level keys (the API rejects unknown ones).

    `date` is sent only when the k6 file records when it was written. It is never "now": the API hashes the
    body to tell a replay (same Idempotency-Key, same body -> 200) from a conflict (-> 409), so reporting the
    same file again, e.g. a re-run CI job, must produce the same bytes. Without it the API uses its own now.
    """
    payload: dict[str, Any] = {"name": name}
    if variant:
        payload["variant"] = variant
    if date:
        payload["date"] = date
    if notes:
        payload["notes"] = notes
    payload["metricsSummary"] = metrics
    payload["rawFile"] = raw_file
    payload["metadata"] = metadata
    return payload


def canonical_json(payload: dict[str, Any]) -> bytes:
    """The payload's bytes with sorted keys: the same report always gives the same bytes."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8")


def idempotency_key(raw: bytes, name: str, variant: str | None) -> str:
    """Same file, name and variant -> same key, so a retried or re-run report is stored only once."""
    digest = hashlib.sha256()
    for part in (raw, name.encode("utf-8"), (variant or "").encode("utf-8")):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def api_base(base_url: str) -> str:
    """The API's base URL without a trailing slash; it may carry a stage path (https://x.execute-api.../dev)."""
    base = base_url.strip().rstrip("/")
    parts = urllib.parse.urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"base_url must be an http(s) URL, got {base_url!r}")
    return base


def report_url(base_url: str) -> str:
    """`<base_url>/experiments/report`."""
    return api_base(base_url) + REPORT_PATH


def compare_url(base_url: str, name: str, baseline: str, runs: int, threshold_pct: float | None) -> str:
    """`<base_url>/experiments/compare?name=&baseline=&runs=[&threshold=]` (no threshold: the API's default)."""
    query: dict[str, str] = {"name": name, "baseline": baseline, "runs": str(runs)}
    if threshold_pct is not None:
        query["threshold"] = repr(float(threshold_pct))
    return f"{api_base(base_url)}{COMPARE_PATH}?{urllib.parse.urlencode(query)}"


def resolve_api_key(arg: str, env: dict[str, str], required: bool) -> str:
    """The key from the argument, or from EXPERIMENTS_API_KEY when the argument is `-` or empty."""
    key = arg.strip()
    if key in ("", "-"):
        key = env.get(API_KEY_ENV, "").strip()
    if not key and required:
        raise UsageError(f"no API key: pass it as the third argument, or pass '-' and set {API_KEY_ENV}")
    return key


# --------------------------------------------------------------------------------------------- HTTP


@dataclass
class ApiResponse:
    """A final HTTP answer (2xx or 4xx): status, headers (lower-case names) and the decoded body."""

    status: int
    headers: dict[str, str]
    body: Any
    text: str


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect would turn the POST into a body-less GET; surface the 3xx instead of following it."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None


def _decode(raw: bytes) -> tuple[Any, str]:
    """Response bytes as (JSON or None, text)."""
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text), text
    except ValueError:
        return None, text


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """`Retry-After` as seconds to wait: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - now) if when is not None else None


def backoff_delay(attempt: int, base: float, retry_after: float | None, rng: random.Random) -> float:
    """Seconds to wait before retry number `attempt` (0-based).

    The server's Retry-After wins (bounded by RETRY_AFTER_MAX_S); otherwise exponential backoff with full
    jitter: uniform in [0, min(cap, base * 2**attempt)] with cap = 20 x base.
    """
    if retry_after is not None:
        return min(retry_after, RETRY_AFTER_MAX_S)
    ceiling = min(base * BACKOFF_CAP_FACTOR, base * (2**attempt))
    return rng.uniform(0, ceiling)


def post_report(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout: float,
    retries: int,
    backoff_base: float,
    log: Callable[[str], None],
) -> ApiResponse:
    """POST `body`, retrying connection errors, timeouts, 429 and 5xx; returns the first 2xx or 4xx answer.

    Every attempt sends the same bytes and the same Idempotency-Key, so the API stores the report once
    however many attempts reach it. Raises UnreachableError when all `retries + 1` attempts fail.
    """
    return send_request(
        "POST", url, body, headers, timeout=timeout, retries=retries, backoff_base=backoff_base, log=log
    )


def send_request(
    method: str,
    url: str,
    body: bytes | None,
    headers: dict[str, str],
    *,
    timeout: float,
    retries: int,
    backoff_base: float,
    log: Callable[[str], None],
) -> ApiResponse:
    """One API call with the reporter's retry rules: connection errors, timeouts, 429 and 5xx are retried
    with backoff (honouring Retry-After), 2xx and 4xx (and 3xx: redirects are not followed) are final.
    Raises UnreachableError when all `retries + 1` attempts fail.
    """
    rng = random.Random()
    opener = urllib.request.build_opener(_NoRedirect)
    last_problem = ""
    attempts = retries + 1
    for attempt in range(attempts):
        retry_after = None
        # The scheme is checked in api_base (http or https only).
        request = urllib.request.Request(url, data=body, headers=headers, method=method)  # noqa: S310
        try:
            with opener.open(request, timeout=timeout) as response:
                data, text = _decode(response.read())
                return ApiResponse(response.status, _lower(response.headers), data, text)
        except urllib.error.HTTPError as exc:
            status = exc.code
            resp_headers = _lower(exc.headers)
            data, text = _decode(exc.read() if exc.fp is not None else b"")
            if status != 429 and status < 500:
                return ApiResponse(status, resp_headers, data, text)
            retry_after = retry_after_seconds(resp_headers.get("retry-after"), time.time())
            last_problem = f"HTTP {status}{_error_suffix(data, text)}"
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            last_problem = f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__
        if attempt + 1 < attempts:
            delay = backoff_delay(attempt, backoff_base, retry_after, rng)
            log(f"attempt {attempt + 1}/{attempts} failed ({last_problem}); retrying in {delay:.2f}s")
            time.sleep(delay)
    raise UnreachableError(f"API unreachable at {url} after {attempts} attempt(s): {last_problem}")


def _lower(headers: Any) -> dict[str, str]:
    """Header names in lower case (an HTTPMessage or None)."""
    return {k.lower(): v for k, v in headers.items()} if headers is not None else {}


def _error_suffix(data: Any, text: str) -> str:
    """` <error>: <message>` from an error body, for one-line logs."""
    if isinstance(data, dict):
        parts = [str(data[k]) for k in ("error", "message") if data.get(k)]
        return f" {': '.join(parts)}" if parts else ""
    snippet = " ".join(text.split())[:200]
    return f" {snippet}" if snippet else ""


def describe_rejection(response: ApiResponse) -> str:
    """The server's error, message and details, for a human reading the CI log."""
    lines = [f"rejected by the API: HTTP {response.status}{_error_suffix(response.body, response.text)}"]
    details = response.body.get("details") if isinstance(response.body, dict) else None
    for detail in details if isinstance(details, list) else []:
        if isinstance(detail, dict):
            where = detail.get("field") or detail.get("loc") or detail.get("path") or ""
            if isinstance(where, list):
                where = ".".join(str(part) for part in where)
            what = (
                detail.get("reason") or detail.get("message") or detail.get("msg") or json.dumps(detail, sort_keys=True)
            )
            lines.append(f"  - {where}: {what}" if where else f"  - {what}")
        else:
            lines.append(f"  - {detail}")
    return "\n".join(lines)


def describe_stored(response: ApiResponse, payload: dict[str, Any]) -> str:
    """What the API stored (or had already stored), from its answer."""
    body = response.body if isinstance(response.body, dict) else {}
    replayed = response.headers.get("idempotent-replayed", "").lower() == "true"
    ids = body.get("ids") if isinstance(body.get("ids"), dict) else {}
    name = body.get("name", payload["name"])
    variant = body.get("variant", payload.get("variant", "?"))
    count = len(ids) if ids else len(payload["metricsSummary"])
    verb = "replayed (already stored, nothing new written)" if replayed else "stored"
    lines = [f"{verb}: name={name} variant={variant} metrics={count} (HTTP {response.status})"]
    if body.get("createdAt"):
        lines.append(f"  createdAt {body['createdAt']}")
    lines.extend(f"  {metric:<17} {row_id}" for metric, row_id in sorted(ids.items()))
    not_stored = body.get("notStored") if isinstance(body.get("notStored"), list) else []
    if not_stored:
        lines.append(f"not stored as rows ({len(not_stored)}), kept in the run's metadata:")
    for item in not_stored:
        if isinstance(item, dict):
            lines.append(f"  {item.get('metric')}={item.get('value')}: {item.get('reason')}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- regression gate


@dataclass
class GateRow:
    """One metric of the reported variant against the baseline, as GET /experiments/compare judged it."""

    metric: str
    baseline_median: float | None
    baseline_runs: int  # runs the medians were taken over (at most the window), 0: no baseline run
    median: float | None
    runs: int
    change_pct: float | None
    verdict: str | None  # better / worse / no_change / not_enough_data; None when this IS the baseline
    method: str | None
    p_value: float | None


@dataclass
class GateResult:
    """The comparison of the reported variant against the baseline, and whether it fails the gate."""

    name: str
    variant: str
    baseline: str
    window: int
    threshold_pct: float
    enforce: bool  # --fail-on-regression given: a `worse` verdict fails the job
    rows: list[GateRow]

    def metrics_with(self, verdict: str) -> list[str]:
        """Names of the metrics whose verdict is `verdict`."""
        return [row.metric for row in self.rows if row.verdict == verdict]

    @property
    def failed(self) -> bool:
        """True when the gate fails the job: enforced, and some metric got worse."""
        return self.enforce and bool(self.metrics_with("worse"))

    @property
    def exit_code(self) -> int:
        return EXIT_REGRESSION if self.failed else EXIT_OK


def split_name(name: str, variant: str | None) -> tuple[str, str]:
    """(experiment, variant) by the API's rule: the given variant, else the name split at its last `_`."""
    if variant:
        return name, variant
    head, sep, tail = name.rpartition("_")
    if not sep or not head or not tail:
        raise UsageError(f"cannot tell the variant of {name!r}: pass --variant")
    return head, tail


def stored_identity(response: ApiResponse, payload: dict[str, Any]) -> tuple[str, str]:
    """(experiment, variant) as the API stored them (its answer says), else by the API's own rule."""
    body = response.body if isinstance(response.body, dict) else {}
    name, variant = body.get("name"), body.get("variant")
    if isinstance(name, str) and name and isinstance(variant, str) and variant:
        return name, variant
    return split_name(payload["name"], payload.get("variant"))


def _row_of(variants: list[Any], variant: str) -> dict[str, Any] | None:
    """The compare answer's row for `variant` within one metric, if any."""
    for row in variants:
        if isinstance(row, dict) and row.get("variant") == variant:
            return row
    return None


def _window(row: dict[str, Any] | None, window: int) -> int:
    """How many runs a median was taken over: the stored runs, at most the window."""
    runs = row.get("runs") if row else None
    return min(runs, window) if isinstance(runs, int) else 0


def gate_rows(comparison: dict[str, Any], variant: str, baseline: str, window: int) -> list[GateRow]:
    """The reported variant's row of every metric it has, next to the baseline's median."""
    rows = []
    for metric in comparison.get("metrics") or []:
        variants = metric.get("variants") if isinstance(metric, dict) else None
        mine = _row_of(variants or [], variant)
        if mine is None:
            continue
        base = _row_of(variants or [], baseline)
        rows.append(
            GateRow(
                metric=str(metric.get("metric")),
                baseline_median=finite_number(base.get("median")) if base else None,
                baseline_runs=_window(base, window),
                median=finite_number(mine.get("median")),
                runs=_window(mine, window),
                change_pct=finite_number(mine.get("changePct")),
                verdict=mine.get("verdict"),
                method=mine.get("method"),
                p_value=finite_number(mine.get("pValue")),
            )
        )
    return sorted(rows, key=_metric_rank)


def _metric_rank(row: GateRow) -> tuple[int, str]:
    """Sort key: the reporter's metrics in METRIC_ORDER, then the others by name."""
    known = row.metric in METRIC_ORDER
    return (METRIC_ORDER.index(row.metric) if known else len(METRIC_ORDER), row.metric)


def fetch_comparison(args: argparse.Namespace, api_key: str, name: str, log: Callable[[str], None]) -> dict[str, Any]:
    """GET /experiments/compare with the same key and retry rules as the report; 4xx -> RejectedError."""
    threshold = args.fail_on_regression
    url = compare_url(args.base_url, name, args.compare_to, args.runs, threshold)
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT, "x-api-key": api_key}
    response = send_request(
        "GET", url, None, headers, timeout=args.timeout, retries=args.retries, backoff_base=args.backoff_base, log=log
    )
    if not 200 <= response.status < 300:
        raise RejectedError("comparison " + describe_rejection(response))
    if not isinstance(response.body, dict) or not isinstance(response.body.get("metrics"), list):
        raise RejectedError(f"comparison: unexpected answer from {url} (HTTP {response.status}): {response.text[:200]}")
    return response.body


def build_gate_result(comparison: dict[str, Any], args: argparse.Namespace, name: str, variant: str) -> GateResult:
    """The gate's view of the compare answer for the reported variant."""
    window = comparison.get("runs") if isinstance(comparison.get("runs"), int) else args.runs
    threshold = finite_number(comparison.get("thresholdPct"))
    return GateResult(
        name=name,
        variant=variant,
        baseline=args.compare_to,
        window=window,
        threshold_pct=threshold if threshold is not None else (args.fail_on_regression or 0.0),
        enforce=args.fail_on_regression is not None,
        rows=gate_rows(comparison, variant, args.compare_to, window),
    )


def format_value(value: float | None) -> str:
    """A stored value at the column's precision (4 decimals), without trailing zeros; `-` when absent."""
    if value is None:
        return "-"
    return f"{value:.{COLUMN_DECIMALS}f}".rstrip("0").rstrip(".")


def format_change(change_pct: float | None) -> str:
    """`+25.00%`; `n/a` when there is no change to show (no baseline, or a baseline of 0)."""
    return "n/a" if change_pct is None else f"{change_pct:+.2f}%"


def format_method(row: GateRow) -> str:
    """The API's method, with the p-value of a Mann-Whitney U test; `-` when no test was needed."""
    if not row.method or row.method == "none":
        return "-"
    return f"{row.method} p={row.p_value:.3f}" if row.p_value is not None else row.method


def _with_runs(value: float | None, runs: int) -> str:
    """`median (n)`: a median and how many runs it was taken over."""
    return "-" if value is None else f"{format_value(value)} ({runs})"


def table_cells(result: GateResult) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the comparison table, shared by the text and the Markdown rendering."""
    header = ["metric", f"{result.baseline} median (n)", f"{result.variant} median (n)", "change", "verdict", "method"]
    rows = [
        [
            row.metric,
            _with_runs(row.baseline_median, row.baseline_runs),
            _with_runs(row.median, row.runs),
            format_change(row.change_pct),
            row.verdict or "(baseline)",
            format_method(row),
        ]
        for row in result.rows
    ]
    return header, rows


def gate_heading(result: GateResult) -> str:
    """One line saying what is compared with what, over how many runs and at which threshold."""
    return (
        f"{result.name}: variant {result.variant!r} vs baseline {result.baseline!r} "
        f"(medians of the last {result.window} runs each, threshold {result.threshold_pct:g}%)"
    )


def gate_outcome(result: GateResult) -> str:
    """The overall result in one or two sentences: failed, passed, or why nothing could be decided."""
    if result.variant == result.baseline:
        return f"this run is the baseline {result.baseline!r} itself: nothing to compare, not failing"
    if all(row.baseline_runs == 0 for row in result.rows):
        return f"not enough data: no run of baseline {result.baseline!r} is stored for {result.name!r}, not failing"
    worse, better = result.metrics_with("worse"), result.metrics_with("better")
    if worse:
        what = f"{', '.join(worse)} got worse than {result.baseline!r} beyond {result.threshold_pct:g}% and the noise"
        lines = [f"FAILED: {what}" if result.enforce else f"{what} (not failing: no --fail-on-regression)"]
    else:
        lines = ["PASSED: no metric got worse" + (f"; better: {', '.join(better)}" if better else "")]
    noisy = [
        row.metric
        for row in result.rows
        if row.verdict == "no_change" and row.change_pct and abs(row.change_pct) >= result.threshold_pct
    ]
    if noisy:
        lines.append(f"past {result.threshold_pct:g}% but within the run-to-run noise (not called): {', '.join(noisy)}")
    changed = result.metrics_with("changed")
    if changed:
        lines.append(f"changed, direction unknown (not judged): {', '.join(changed)}")
    no_data = result.metrics_with("not_enough_data")
    if no_data:
        lines.append(f"not enough data (not judged): {', '.join(no_data)}")
    return "\n".join(lines)


def render_text(result: GateResult) -> str:
    """The table for the CI log, columns aligned."""
    header, rows = table_cells(result)
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    right = {1, 2, 3}  # numbers right-aligned

    def line(cells: list[str]) -> str:
        padded = (cells[i].rjust(widths[i]) if i in right else cells[i].ljust(widths[i]) for i in range(len(cells)))
        return "  ".join(padded)

    body = [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]
    if not rows:
        body.append("(no metric of this variant in the comparison)")
    return "\n".join([f"regression gate: {gate_heading(result)}", *(b.rstrip() for b in body), gate_outcome(result)])


def _md(text: str) -> str:
    """A table cell's text with Markdown's table and code characters escaped."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("`", "\\`")


def render_markdown(result: GateResult) -> str:
    """The GitHub step summary: heading, table, overall result."""
    if result.failed:
        mark, status = ":x:", "failed"
    elif result.metrics_with("worse"):
        mark, status = ":warning:", "found a regression (not enforced)"
    else:
        mark, status = ":white_check_mark:", "passed"
    header, rows = table_cells(result)
    lines = [
        f"### {mark} k6 regression gate {status}",
        "",
        _md(gate_heading(result)),
        "",
        "| " + " | ".join(_md(cell) for cell in header) + " |",
        "| --- | ---: | ---: | ---: | --- | --- |",
        *("| " + " | ".join(_md(cell) for cell in row) + " |" for row in rows),
        "",
        *(f"**{_md(line)}**" if i == 0 else _md(line) for i, line in enumerate(gate_outcome(result).splitlines())),
        "",
    ]
    return "\n".join(lines)


def append_step_summary(result: GateResult, env: dict[str, str], warn: Callable[[str], None]) -> None:
    """Append the Markdown summary to $GITHUB_STEP_SUMMARY when set; a write failure only warns."""
    path = env.get(STEP_SUMMARY_ENV, "").strip()
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(render_markdown(result) + "\n")
    except OSError as exc:
        warn(f"cannot write the step summary to {path}: {exc.strerror or exc}")


def run_gate(
    args: argparse.Namespace, api_key: str, response: ApiResponse, payload: dict[str, Any], env: dict[str, str]
) -> int:
    """After a stored (or replayed) report: compare it with the baseline, print, summarise, decide."""
    name, variant = stored_identity(response, payload)
    comparison = fetch_comparison(args, api_key, name, log=lambda msg: print(msg, file=sys.stderr))
    result = build_gate_result(comparison, args, name, variant)
    print(render_text(result))
    append_step_summary(result, env, warn=lambda msg: print(f"warning: {msg}", file=sys.stderr))
    return result.exit_code


# --------------------------------------------------------------------------------------------- CLI


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on usage errors; our contract says 1, so raise instead and let main() decide."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """The command line: the original doc's five positionals, then options."""
    parser = _Parser(
        prog="report_k6_result.py",
        usage="%(prog)s <k6_summary.json> <base_url> <api_key|-> <name> [notes]\n"
        "       [--variant V] [--metadata KEY=VALUE ...] [--k6-file PATH] [--dry-run] [--timeout S] [--retries N]\n"
        "       [--metric GLOB] [--exclude-metric GLOB] [--higher-is-better GLOB] [--lower-is-better GLOB]\n"
        "       [--compare-to BASELINE [--fail-on-regression PCT] [--runs N]]",
        description="Send a k6 summary (any of its three JSON shapes) to POST <base_url>/experiments/report.",
        epilog="Exit codes: 0 stored or replayed, 1 usage or bad k6 file (nothing sent), "
        "2 rejected by the API, 3 API unreachable after retries, 4 regression gate failed.",
    )
    parser.add_argument("summary", help="k6 JSON: --summary-export, handleSummary data or machine-readable")
    parser.add_argument("base_url", help="API base URL, may include a stage path (https://x.execute-api.../dev)")
    parser.add_argument("api_key", help=f"API key, or '-' (or '') to read it from {API_KEY_ENV}")
    parser.add_argument("name", help="experiment name; without --variant the API splits it at the last '_'")
    parser.add_argument("notes", nargs="?", default=None, help="optional free text, stored as the description")
    parser.add_argument("--variant", help="variant (e.g. baseline, cached); default: derived from the name")
    parser.add_argument(
        "--metadata",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="extra metadata (--metadata a=1 b=x, or repeat the flag); numbers and true/false are typed",
    )
    parser.add_argument("--k6-file", help=f"k6 script path to record (default: ${K6_FILE_ENV} or from the file)")
    parser.add_argument("--dry-run", action="store_true", help="print the JSON payload and send nothing")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per attempt (default %(default)s)"
    )
    parser.add_argument(
        "--retries", type=int, default=DEFAULT_RETRIES, help="retries after the first attempt (default %(default)s)"
    )
    # Scales every backoff (cap = 20 x base); tests shrink it so retry paths run in milliseconds.
    parser.add_argument("--backoff-base", type=float, default=DEFAULT_BACKOFF_BASE_S, help=argparse.SUPPRESS)
    chosen = parser.add_argument_group(
        "which metrics (globs over a key such as 'http_req_duration{name:*}:p(95)' or a k6 metric name)"
    )
    chosen.add_argument(
        "--metric",
        action="append",
        default=[],
        metavar="GLOB",
        help="also report these (the default: your own metrics, every tagged submetric, anything with a threshold, "
        "and k6's main figures); '*' reports everything",
    )
    chosen.add_argument("--exclude-metric", action="append", default=[], metavar="GLOB", help="do not report these")
    chosen.add_argument(
        "--higher-is-better", dest="higher", action="append", default=[], metavar="GLOB",
        help="your metrics that should go up (stored with the run; the verdicts use it)",
    )  # fmt: skip
    chosen.add_argument(
        "--lower-is-better", dest="lower", action="append", default=[], metavar="GLOB",
        help="your metrics that should go down",
    )  # fmt: skip
    gate = parser.add_argument_group("regression gate (after the report is stored)")
    gate.add_argument(
        "--compare-to",
        metavar="BASELINE",
        help="compare the reported variant with this variant (GET /experiments/compare) and print the table",
    )
    gate.add_argument(
        "--fail-on-regression",
        type=float,
        metavar="PCT",
        help="exit 4 when a metric got worse by more than PCT percent and more than the run-to-run noise",
    )
    gate.add_argument(
        "--runs",
        type=int,
        metavar="N",
        help=f"compare the medians of the last N runs of each variant (default {DEFAULT_GATE_RUNS})",
    )
    return parser


def _validate(args: argparse.Namespace) -> None:
    """Checks argparse cannot express."""
    if not args.name.strip():
        raise UsageError("the experiment name must not be empty")
    if args.variant is not None and not args.variant.strip():
        raise UsageError("--variant must not be empty")
    if not (args.timeout > 0):
        raise UsageError("--timeout must be > 0")
    if args.retries < 0:
        raise UsageError("--retries must be >= 0")
    if not (args.backoff_base >= 0):
        raise UsageError("--backoff-base must be >= 0")
    _validate_gate(args)


def _validate_gate(args: argparse.Namespace) -> None:
    """The gate's options: they need --compare-to, and stay within what the compare endpoint accepts."""
    if args.compare_to is not None and not args.compare_to.strip():
        raise UsageError("--compare-to must not be empty")
    if args.compare_to is None:
        for option, value in (("--fail-on-regression", args.fail_on_regression), ("--runs", args.runs)):
            if value is not None:
                raise UsageError(f"{option} requires --compare-to BASELINE")
        return
    args.compare_to = args.compare_to.strip()
    pct = args.fail_on_regression
    if pct is not None and not (0 <= pct <= MAX_THRESHOLD_PCT):  # also false for NaN
        raise UsageError(f"--fail-on-regression must be a percentage from 0 to {MAX_THRESHOLD_PCT:g}, got {pct}")
    if args.runs is None:
        args.runs = DEFAULT_GATE_RUNS
    if not 1 <= args.runs <= MAX_GATE_RUNS:
        raise UsageError(f"--runs must be from 1 to {MAX_GATE_RUNS}, got {args.runs}")


def run(args: argparse.Namespace, env: dict[str, str]) -> int:
    """Read, build, send, print. Raises ReporterError for every documented failure."""
    _validate(args)
    url = report_url(args.base_url)
    extra = parse_metadata_pairs(args.metadata)
    api_key = resolve_api_key(args.api_key, env, required=not args.dry_run)

    if is_ndjson_file(args.summary):
        raw = None
        summary = parse_ndjson(
            args.summary, args.metric, args.exclude_metric, warn=lambda msg: print(msg, file=sys.stderr)
        )
    else:
        raw, doc = load_summary_file(args.summary)
        summary = parse_summary(doc, args.summary, include=args.metric, exclude=args.exclude_metric)
    metrics = clean_metrics(summary.metrics)
    directions = {way: globs for way, globs in (("higher", args.higher), ("lower", args.lower)) if globs}
    variant = args.variant.strip() if args.variant else None
    payload = build_payload(
        name=args.name.strip(),
        variant=variant,
        notes=args.notes or None,
        metrics=metrics,
        raw_file=args.summary,
        metadata=build_metadata(summary, extra, args.k6_file, env, directions),
        date=summary.generated_at,
    )
    # A raw output file can be gigabytes: its key is that of what it yields (the same file, the same payload).
    key = idempotency_key(raw if raw is not None else canonical_json(payload), payload["name"], variant)

    if args.dry_run:
        print(json.dumps(payload, indent=2))
        print(f"dry run ({summary.shape}): nothing sent to {url} (Idempotency-Key {key})", file=sys.stderr)
        if args.compare_to:
            print("dry run: no comparison either (the regression gate needs the stored report)", file=sys.stderr)
        return EXIT_OK

    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
        "x-api-key": api_key,
        "Idempotency-Key": key,
    }
    response = post_report(
        url,
        body,
        headers,
        timeout=args.timeout,
        retries=args.retries,
        backoff_base=args.backoff_base,
        log=lambda msg: print(msg, file=sys.stderr),
    )
    if not 200 <= response.status < 300:
        raise RejectedError(describe_rejection(response))
    print(describe_stored(response, payload))
    if args.compare_to:
        return run_gate(args, api_key, response, payload, env)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code instead of exiting so tests and callers can use it."""
    parser = build_parser()
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help
            return int(exc.code or 0)
        return run(args, dict(os.environ))
    except UsageError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        print(parser.format_usage().rstrip(), file=sys.stderr)
        return exc.exit_code
    except ReporterError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
