"""k6 summaries → metric keys: THE mapping, used by the reporter, the API's k6-summary route and the verdicts.

Standard library only, Python >= 3.9 (the reporter runs on a CI job's bare `python3`).

Every figure of a k6 run gets a key a person recognises from their own script and thresholds:

    <k6 metric>[{<tag>:<value>,...}]:<stat>      e.g.  http_req_duration{name:GET /products/:id}:p(95)
                                                        cache_hit_rate:rate      iterations:count

- Tags are sorted by name and written without spaces or quotes, so `{ name: "x" }` and `{name:x}` (the same
  k6 submetric) give one key. In tag names and values `%`, `,` and control characters are percent-encoded.
- Stats are k6's own names: avg, min, med (k6's `p(50)` is the same figure), max, p(N), count (Trend and
  Counter), rate (Rate and Counter), value/min/max (Gauge).
- The headline keys (`HEADLINE`: p50_ms ... rps, error_rate, checks_pass_rate) replace the keys of the
  untagged HTTP metrics they come from, so rows stored before this convention keep their meaning.
- `parse_key` turns any key back into (metric, tags, stat); a key sent without the convention (e.g. a client's
  own `cache_hit_rate`) parses as that metric with no tags and no stat.

The same run gives the same keys and values whichever of k6's shapes wrote it: `--summary-export`,
`handleSummary` data, or the machine-readable summary (k6 1.5+). Where a Rate has counts, the counts are the
truth (k6 <= 0.29 wrote `"value": 0` next to `"passes": 29, "fails": 0`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

SHAPE_SUMMARY_EXPORT = "summary-export"
SHAPE_HANDLE_SUMMARY = "handle-summary"
SHAPE_MACHINE_READABLE = "machine-readable"

HIGHER = "higher"
LOWER = "lower"

TREND, RATE, COUNTER, GAUGE = "trend", "rate", "counter", "gauge"
# The stats each kind of metric reports, in the order keys are listed (a Trend's percentiles follow med).
KIND_STATS = {
    TREND: ("med", "p(*)", "avg", "min", "max", "count"),
    RATE: ("rate",),
    COUNTER: ("count", "rate"),
    GAUGE: ("value", "min", "max"),
}

# (k6 metric, stat) → headline key. The keys stored since the first release; one line per figure.
HEADLINE: dict[tuple[str, str], str] = {
    ("http_req_duration", "med"): "p50_ms",
    ("http_req_duration", "p(90)"): "p90_ms",
    ("http_req_duration", "p(95)"): "p95_ms",
    ("http_req_duration", "p(99)"): "p99_ms",
    ("http_req_duration", "avg"): "avg_ms",
    ("http_req_duration", "min"): "min_ms",
    ("http_req_duration", "max"): "max_ms",
    ("http_reqs", "count"): "requests_count",
    ("http_reqs", "rate"): "rps",
    ("http_req_failed", "rate"): "error_rate",
    ("checks", "rate"): "checks_pass_rate",
}
HEADLINE_SOURCE = {key: figure for figure, key in HEADLINE.items()}

# Which way is good for k6's own metrics (globs over the metric name; the first match wins). None: neither.
K6_METRICS: list[tuple[str, str | None]] = [
    ("http_req_failed", LOWER),
    ("http_req_*", LOWER),  # http_req_duration and its timing breakdown
    ("http_reqs", HIGHER),
    ("iterations", HIGHER),
    ("iteration_duration", LOWER),
    ("group_duration", LOWER),
    ("dropped_iterations", LOWER),
    ("checks", HIGHER),
    ("checks_succeeded", HIGHER),  # k6 1.5+: checks_succeeded is `checks`; these two repeat it
    ("checks_failed", LOWER),
    ("checks_total", None),
    ("data_received", HIGHER),
    ("data_sent", HIGHER),
    ("vus", None),
    ("vus_max", None),
    ("grpc_req_duration", LOWER),
    ("grpc_streams*", None),
    ("ws_connecting", LOWER),
    ("ws_ping", LOWER),
    ("ws_session_duration", None),
    ("ws_sessions", None),
    ("ws_msgs_*", HIGHER),
    ("browser_web_vital_*", LOWER),
    ("browser_http_req_failed", LOWER),
    ("browser_http_req_duration", LOWER),
    ("browser_data_*", None),
]
# The default selection leaves these out: the HTTP timing breakdown (six Trends of every request, which add
# dozens of rows and rarely answer a question that http_req_duration does not) and the VU gauges (their
# maximum is kept in the run's metadata), and k6 1.5's two check counters that repeat `checks`. A threshold or a
# tag on one of them brings it back.
LEFT_OUT_BY_DEFAULT = (
    "http_req_blocked", "http_req_connecting", "http_req_tls_handshaking",
    "http_req_sending", "http_req_waiting", "http_req_receiving", "vus", "vus_max",
    "checks_failed", "checks_total",
)  # fmt: skip
# Words that say which way a custom metric should go, when nothing else does.
UP_WORDS = frozenset(
    {"success", "successes", "successful", "succeeded", "pass", "passed", "passes", "hit", "hits", "ok", "rps"}
)
DOWN_WORDS = frozenset(
    {"error", "errors", "fail", "failed", "fails", "failure", "failures", "timeout", "timeouts", "duration",
     "durations", "latency", "latencies", "time", "times", "ms"}
)  # fmt: skip

_PERCENTILE = re.compile(r"^p\((\d+(?:\.\d+)?)\)$")
_ESCAPED = re.compile(r"[%,\x00-\x1f\x7f-\x9f]")


class SummaryError(ValueError):
    """The document is not a k6 summary, or holds no metric at all."""


@dataclass
class K6Metric:
    """One k6 metric or submetric: its stats by k6's names, and its thresholds (expression → passed)."""

    name: str
    tags: tuple[tuple[str, str], ...]
    kind: str | None
    stats: dict[str, float]
    thresholds: dict[str, bool] = field(default_factory=dict)

    @property
    def builtin(self) -> bool:
        return _k6_entry(self.name) is not None


@dataclass
class K6Summary:
    """What a k6 summary file holds, whatever its shape."""

    shape: str
    metrics: list[K6Metric]
    duration_s: float | None = None
    script: str | None = None
    generated_at: str | None = None

    def metric(self, name: str) -> K6Metric | None:
        """The untagged metric `name`, if the run has it."""
        return next((m for m in self.metrics if m.name == name and not m.tags), None)

    @property
    def vus_max(self) -> float | None:
        gauge = self.metric("vus_max")
        return None if gauge is None else _first(gauge.stats, "max", "value")

    def thresholds(self) -> tuple[list[str], list[str]]:
        """(`metric: expression` that passed, those that failed), in key order."""
        passed: list[str] = []
        failed: list[str] = []
        for metric in sorted(self.metrics, key=lambda m: series_name(m.name, m.tags)):
            for expr, ok in metric.thresholds.items():
                (passed if ok else failed).append(f"{series_name(metric.name, metric.tags)}: {expr}")
        return passed, failed


# --------------------------------------------------------------------------------------------- keys


def _escape(text: str) -> str:
    return _ESCAPED.sub(lambda match: f"%{ord(match.group()):02X}", text)


def _unescape(text: str) -> str:
    return re.sub(r"%([0-9A-F]{2})", lambda match: chr(int(match.group(1), 16)), text)


def series_name(metric: str, tags: Iterable[tuple[str, str]] = ()) -> str:
    """`metric{tag:value,...}` with the tags sorted, as a threshold would name it."""
    tags = sorted(tags)
    if not tags:
        return metric
    return metric + "{" + ",".join(f"{_escape(k)}:{_escape(v)}" for k, v in tags) + "}"


def metric_key(metric: str, tags: Iterable[tuple[str, str]], stat: str) -> str:
    """The key of one figure: the headline key for the untagged HTTP figures, else `series:stat`."""
    tags = tuple(tags)
    if not tags and (metric, stat) in HEADLINE:
        return HEADLINE[metric, stat]
    return f"{series_name(metric, tags)}:{stat}"


def parse_key(key: str) -> tuple[str, tuple[tuple[str, str], ...], str | None]:
    """(k6 metric, tags, stat) of a key; the inverse of `metric_key` (a key of no convention: (key, (), None))."""
    if key in HEADLINE_SOURCE:
        metric, stat = HEADLINE_SOURCE[key]
        return metric, (), stat
    brace = key.find("{")
    close = key.rfind("}")
    if brace > 0 and close > brace:
        metric, inner, rest = key[:brace], key[brace + 1 : close], key[close + 1 :]
        tags = tuple(sorted(_parse_tag(part) for part in inner.split(",") if part))
        return metric, tags, rest[1:] if rest.startswith(":") and rest[1:] else None
    metric, colon, stat = key.rpartition(":")
    return (metric, (), stat) if colon and metric and stat else (key, (), None)


def _parse_tag(text: str) -> tuple[str, str]:
    name, _, value = text.partition(":")
    return _unescape(name), _unescape(value)


def split_series(name: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """`http_req_duration{ name: "x" }` → (`http_req_duration`, (("name", "x"),)), read the way k6 reads it."""
    brace = name.find("{")
    if brace <= 0 or not name.endswith("}"):
        return name.strip(), ()
    tags = []
    for part in name[brace + 1 : -1].split(","):
        if not part.strip():
            continue
        tag, _, value = part.partition(":")
        tags.append((tag.strip().strip("\"'"), value.strip().strip("\"'")))
    return name[:brace].strip(), tuple(sorted(tags))


# --------------------------------------------------------------------------------------------- direction


def _k6_entry(metric: str) -> tuple[str, str | None] | None:
    return next((entry for entry in K6_METRICS if fnmatchcase(metric, entry[0])), None)


def direction(key: str, higher: Iterable[str] = (), lower: Iterable[str] = ()) -> str | None:
    """Which way is good for a key: HIGHER, LOWER or None (neither is known: a change is only "changed").

    In order: the report's own globs (`higher`, `lower`: over the key or its k6 metric), k6's own metrics,
    then the metric's words (success/pass/hit/ok up; error/fail/timeout/duration/latency/time down).
    A Trend's `count` (how many samples) has no direction.
    """
    metric, _, stat = parse_key(key)
    for globs, way in ((higher, HIGHER), (lower, LOWER)):
        if any(fnmatchcase(key, glob) or fnmatchcase(metric, glob) for glob in globs):
            return way
    entry = _k6_entry(metric)
    if entry is not None:
        return None if stat == "count" and entry[1] == LOWER else entry[1]
    words = set(re.split(r"[^a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", metric).lower()))
    up, down = bool(words & UP_WORDS), bool(words & DOWN_WORDS)
    if up != down:
        return HIGHER if up else LOWER
    return None


# --------------------------------------------------------------------------------------------- reading


def finite_number(value: Any) -> float | None:
    """A JSON number as float; None for anything else (bool, string, null, NaN, infinity)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _numbers(values: Any) -> dict[str, float]:
    if not isinstance(values, dict):
        return {}
    numbers = {str(key): finite_number(value) for key, value in values.items()}
    return {key: value for key, value in numbers.items() if value is not None}


def _first(values: dict[str, float], *keys: str) -> float | None:
    return next((values[key] for key in keys if key in values), None)


def detect_shape(doc: Any) -> str:
    """Which of k6's three JSON shapes `doc` is; SummaryError when none."""
    if not isinstance(doc, dict):
        raise SummaryError(f"not a k6 summary: expected a JSON object, got {type(doc).__name__}")
    results = doc.get("results")
    if isinstance(results, dict) and isinstance(results.get("metrics"), list):
        return SHAPE_MACHINE_READABLE
    metrics = doc.get("metrics")
    if not isinstance(metrics, dict):
        raise SummaryError("not a k6 summary: no 'metrics' object (nor a 'results.metrics' list)")
    if any(isinstance(m, dict) and isinstance(m.get("values"), dict) for m in metrics.values()):
        return SHAPE_HANDLE_SUMMARY
    return SHAPE_SUMMARY_EXPORT


def read_summary(doc: Any) -> K6Summary:
    """Every metric of a k6 summary document, whatever its shape."""
    shape = detect_shape(doc)
    if shape == SHAPE_SUMMARY_EXPORT:
        entries = [(name, None, e, e.get("thresholds"), _failed_flag) for name, e in _items(doc["metrics"])]
    elif shape == SHAPE_HANDLE_SUMMARY:
        entries = [
            (name, e.get("type"), e.get("values"), e.get("thresholds"), _ok_flag) for name, e in _items(doc["metrics"])
        ]
    else:
        entries = [(name, e.get("type"), e.get("values"), None, _ok_flag) for name, e in _machine_items(doc)]
    duration_s = _duration_s(doc, shape)
    metrics = []
    for name, kind, raw_stats, raw_thresholds, passed in entries:
        metric, tags = split_series(name)
        stats = _numbers(raw_stats)
        kind = kind if kind in KIND_STATS else _infer_kind(stats)
        metrics.append(
            K6Metric(metric, tags, kind, _normalise(stats, kind, duration_s), _thresholds(raw_thresholds, passed))
        )
    return K6Summary(shape, metrics, duration_s, _script(doc, shape), _generated_at(doc, shape))


def _items(metrics: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(str(name), entry) for name, entry in metrics.items() if isinstance(entry, dict)]


def _machine_items(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """k6 1.5+: a list of {name, type, values}; the checks' rates sit in `results.checks.metrics`."""
    results = doc["results"]
    listed = [results["metrics"]]
    checks = results.get("checks")
    if isinstance(checks, dict):
        listed.append(checks.get("metrics"))
    items: dict[str, dict[str, Any]] = {}
    for entries in listed:
        entries = list(entries.values()) if isinstance(entries, dict) else entries
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                items.setdefault(entry["name"], entry)
    if "checks" not in items and "checks_succeeded" in items:
        items["checks"] = items.pop("checks_succeeded")
    return list(items.items())


def _infer_kind(stats: dict[str, float]) -> str | None:
    """`--summary-export` does not say a metric's type; its stats do."""
    if "passes" in stats or "fails" in stats:
        return RATE
    if "count" in stats and "rate" in stats:
        return COUNTER
    if "value" in stats:
        return GAUGE
    if any(stat in stats for stat in ("avg", "med", "min", "max")) or any(_PERCENTILE.match(s) for s in stats):
        return TREND
    return None


def _normalise(stats: dict[str, float], kind: str | None, duration_s: float | None) -> dict[str, float]:
    """A metric's stats under the names its keys use, the same from every shape."""
    if kind == RATE:
        passes, fails = stats.get("passes"), stats.get("fails")
        if passes is not None and fails is not None:
            rate = passes / (passes + fails) if passes + fails else None
        elif "matches" in stats and stats.get("total"):
            rate = stats["matches"] / stats["total"]
        else:
            rate = _first(stats, "rate", "value")
        return {} if rate is None else {"rate": rate}
    if kind == COUNTER:
        out = {stat: stats[stat] for stat in ("count", "rate") if stat in stats}
        if "rate" not in out and "count" in out and duration_s:
            out["rate"] = out["count"] / duration_s
        return out
    if kind == GAUGE:
        return {stat: stats[stat] for stat in ("value", "min", "max") if stat in stats}
    out = {}
    for stat, value in stats.items():
        match = _PERCENTILE.match(stat)
        if match:
            percent = float(match.group(1))
            stat = "med" if percent == 50 else f"p({match.group(1)})"
            if stat == "med" and "med" in stats:
                continue
        elif stat not in KIND_STATS[TREND]:
            continue
        out[stat] = value
    return out


def _failed_flag(result: Any) -> bool | None:
    """`--summary-export` writes `true` when a threshold FAILED."""
    return (not result) if isinstance(result, bool) else None


def _ok_flag(result: Any) -> bool | None:
    ok = result.get("ok") if isinstance(result, dict) else None
    return ok if isinstance(ok, bool) else None


def _thresholds(raw: Any, passed: Callable[[Any], bool | None]) -> dict[str, bool]:
    if not isinstance(raw, dict):
        return {}
    results = {str(expr): passed(result) for expr, result in raw.items()}
    return {expr: ok for expr, ok in results.items() if ok is not None}


def _duration_s(doc: dict[str, Any], shape: str) -> float | None:
    """Measured test-run duration in seconds, where the shape records it (summary-export does not)."""
    if shape == SHAPE_HANDLE_SUMMARY:
        state = doc.get("state")
        ms = finite_number(state.get("testRunDurationMs")) if isinstance(state, dict) else None
        return ms / 1000 if ms else None
    if shape == SHAPE_MACHINE_READABLE:
        config = doc.get("config")
        return (finite_number(config.get("duration")) if isinstance(config, dict) else None) or None
    return None


def _script(doc: dict[str, Any], shape: str) -> str | None:
    config = doc.get("config") if shape == SHAPE_MACHINE_READABLE else None
    script = config.get("script") if isinstance(config, dict) else None
    return script if isinstance(script, str) and script else None


def _generated_at(doc: dict[str, Any], shape: str) -> str | None:
    meta = doc.get("metadata") if shape == SHAPE_MACHINE_READABLE else None
    value = meta.get("generatedAt") if isinstance(meta, dict) else None
    return value if isinstance(value, str) else None


# --------------------------------------------------------------------------------------------- choosing


def _stat_order(stat: str) -> tuple[int, float, str]:
    match = _PERCENTILE.match(stat)
    if match:
        return (1, float(match.group(1)), stat)
    order = ("med", "p(*)", "avg", "min", "max", "count", "rate", "value")
    return (order.index(stat) if stat in order else len(order), 0.0, stat)


def figures(summary: K6Summary) -> list[tuple[str, K6Metric, str, float]]:
    """Every figure of the run as (key, metric, stat, value): headline keys first, then by series and stat."""
    headline = list(HEADLINE.values())
    out = [
        (metric_key(metric.name, metric.tags, stat), metric, stat, value)
        for metric in summary.metrics
        for stat, value in metric.stats.items()
    ]

    def order(figure: tuple[str, K6Metric, str, float]) -> tuple[int, str, tuple[int, float, str]]:
        key, metric, stat, _ = figure
        rank = headline.index(key) if key in headline else len(headline)
        return rank, series_name(metric.name, metric.tags), _stat_order(stat)

    return sorted(out, key=order)


def chosen_by_default(metric: K6Metric) -> bool:
    """What the user defined or put a threshold on, every tagged submetric, and k6's main figures."""
    return bool(metric.thresholds or metric.tags or not metric.builtin or metric.name not in LEFT_OUT_BY_DEFAULT)


def select_metrics(summary: K6Summary, include: Iterable[str] = (), exclude: Iterable[str] = ()) -> dict[str, float]:
    """key → value of the chosen figures: the default, plus `include` globs, less `exclude` globs.

    A glob matches a key (`http_req_duration{name:*}:p(95)`) or a k6 metric name (`http_req_waiting`).
    """
    include, exclude = list(include), list(exclude)

    def matches(globs: list[str], key: str, metric: K6Metric) -> bool:
        return any(fnmatchcase(key, glob) or fnmatchcase(metric.name, glob) for glob in globs)

    chosen = {}
    for key, metric, _stat, value in figures(summary):
        if (chosen_by_default(metric) or matches(include, key, metric)) and not matches(exclude, key, metric):
            chosen.setdefault(key, value)
    return chosen
