"""k6's raw output (`k6 run --out json=FILE`, plain or gzipped) → a k6 summary, computed from the samples.

Standard library only, Python >= 3.9 (the reporter imports it). The result is an `experiments.k6summary.K6Summary`
of shape `ndjson`, so the keys, the default selection and the metadata are the mapping's own (one mapping).

What is computed, as k6 computes its end-of-test summary:
- Trend: avg, min, med, max, p(90), p(95), p(99), count; a percentile is k6's: the sorted samples, linearly
  interpolated between the closest ranks (`i = p * (n - 1)`, k6's TrendSink.P).
- Rate: rate (non-zero samples / samples). Counter: count (the sum) and rate = count / duration.
  Gauge: value (the last sample), min, max.
- Submetrics: every submetric k6 lists for a metric (those thresholds name, and `http_req_duration
  {expected_response:true}`), and one per value of the tags `name`, `scenario`, `group`, `status`,
  `expected_response`, `method` and of any tag a threshold names, where the tag takes two values or more in the
  metric's samples (one value would only repeat the metric).
- Thresholds of whole metrics are evaluated (`p(95)<500` style); a threshold on a submetric is not in the file
  (k6 writes only the submetric), so its result is unknown and not recorded.
- The duration is the span from the first to the last sample read: k6's own (testRunDurationMs) is not in the
  file, so a Counter's `rate` can differ from k6's summary by a fraction of a percent.

Memory: only metrics being reported are decoded (the metric name is read from the line's first bytes, so the
lines of other metrics are never parsed); a Trend keeps its samples in `array('d')`, 8 bytes a sample, split by
the combination of the tags above; Rates, Counters and Gauges keep a few numbers per combination.
A truncated last line (k6 killed mid-write) or a truncated gzip stream is a warning; the samples before it count.
"""

from __future__ import annotations

import gzip
import json
import math
import operator
import os
import re
import sys
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from fnmatch import fnmatchcase
from typing import IO, Any

try:
    from experiments import k6summary
except ImportError:  # a bare `python3` in a checkout: the package is in layers/common
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "layers", "common"))
    from experiments import k6summary
from experiments.k6ingest import normalise_utc

SHAPE_NDJSON = "ndjson"
GZIP_MAGIC = b"\x1f\x8b"
# The tags whose values get a submetric each (when they take two values or more), plus any tag a threshold names.
SUBMETRIC_TAGS = ("name", "scenario", "group", "status", "expected_response", "method")
TREND_PERCENTILES = (("med", 0.5), ("p(90)", 0.90), ("p(95)", 0.95), ("p(99)", 0.99))
_POINT_PREFIX = b'{"metric":"'
_THRESHOLD = re.compile(
    r"^\s*([a-z]+(?:\(\d+(?:\.\d+)?\))?)\s*(<=|>=|===|==|!=|<|>)\s*(-?\d+(?:\.\d+)?(?:e-?\d+)?)\s*$"
)
_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
    "==": operator.eq, "===": operator.eq, "!=": operator.ne,
}  # fmt: skip


class NdjsonError(k6summary.SummaryError):
    """The file is not k6's JSON output, or a line other than the last is not JSON."""


def is_ndjson(head: bytes) -> bool:
    """Whether a file starting with `head` is k6's JSON output: gzip, or a first line that is a Metric or Point."""
    if head.startswith(GZIP_MAGIC):
        return True
    first = head.lstrip(b"\xef\xbb\xbf \t\r\n").split(b"\n", 1)[0]
    return first.startswith((b'{"type":"Metric"', b'{"type":"Point"', _POINT_PREFIX))


def quantile(ordered: Any, p: float) -> float:
    """k6's percentile of sorted samples: linear interpolation between the closest ranks (TrendSink.P)."""
    n = len(ordered)
    if n == 0:
        return 0.0
    if n == 1:
        return ordered[0]
    i = p * (n - 1)
    low = ordered[math.floor(i)]
    high = ordered[math.ceil(i)]
    return low + (high - low) * (i - math.floor(i))


@dataclass
class _Metric:
    """One metric's samples, split by the combination of its submetric tags' values."""

    name: str
    kind: str
    tag_names: tuple[str, ...]
    thresholds: list[str]
    submetrics: list[dict[str, str]]
    combos: dict[tuple[Any, ...], Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        adders = {
            k6summary.TREND: self._add_trend,
            k6summary.RATE: self._add_rate,
            k6summary.COUNTER: self._add_counter,
            k6summary.GAUGE: self._add_gauge,
        }
        self.add: Callable[[dict[str, Any], float, int], None] = adders[self.kind]

    def _add_trend(self, tags: dict[str, Any], value: float, seq: int) -> None:
        combo = tuple(map(tags.get, self.tag_names))
        acc = self.combos.get(combo)
        if acc is None:
            acc = self.combos[combo] = array("d")
        acc.append(value)

    def _add_rate(self, tags: dict[str, Any], value: float, seq: int) -> None:
        combo = tuple(map(tags.get, self.tag_names))
        acc = self.combos.get(combo)
        if acc is None:
            acc = self.combos[combo] = [0, 0]
        acc[0] += value != 0
        acc[1] += 1

    def _add_counter(self, tags: dict[str, Any], value: float, seq: int) -> None:
        combo = tuple(map(tags.get, self.tag_names))
        acc = self.combos.get(combo)
        if acc is None:
            self.combos[combo] = [value]
        else:
            acc[0] += value

    def _add_gauge(self, tags: dict[str, Any], value: float, seq: int) -> None:
        """[last value, its sequence number, min, max]"""
        combo = tuple(map(tags.get, self.tag_names))
        acc = self.combos.get(combo)
        if acc is None:
            self.combos[combo] = [value, seq, value, value]
        else:
            acc[0], acc[1] = value, seq
            acc[2] = min(acc[2], value)
            acc[3] = max(acc[3], value)

    def series(self) -> Iterator[tuple[tuple[tuple[str, str], ...], list[Any]]]:
        """(tags, accumulators) of the metric, its listed submetrics and its per-tag-value submetrics."""
        combos = list(self.combos.items())
        yield (), [acc for _, acc in combos]
        seen: set[tuple[tuple[str, str], ...]] = set()
        for wanted in self.submetrics:
            tags = tuple(sorted(wanted.items()))
            positions = [(self.tag_names.index(tag), value) for tag, value in tags]
            chosen = [acc for combo, acc in combos if all(combo[i] == value for i, value in positions)]
            if chosen and tags not in seen:
                seen.add(tags)
                yield tags, chosen
        for position, tag in enumerate(self.tag_names):
            values = sorted({combo[position] for combo, _ in combos if combo[position] is not None}, key=str)
            if len(values) < 2:
                continue
            for value in values:
                tags = ((tag, str(value)),)
                if tags not in seen:
                    seen.add(tags)
                    yield tags, [acc for combo, acc in combos if combo[position] == value]

    def stats(self, parts: list[Any], duration_s: float | None) -> dict[str, float]:
        """k6's summary figures of the samples in `parts` (accumulators of this metric's kind)."""
        if self.kind == k6summary.TREND:
            values = sorted(v for part in parts for v in part) if len(parts) > 1 else sorted(parts[0])
            if not values:
                return {}
            out = {stat: quantile(values, p) for stat, p in TREND_PERCENTILES}
            total = 0.0
            for part in parts:  # k6 sums in arrival order; the combinations keep that order within each
                total += sum(part)
            out.update(avg=total / len(values), min=values[0], max=values[-1], count=float(len(values)))
            return out
        if self.kind == k6summary.RATE:
            trues, total = sum(p[0] for p in parts), sum(p[1] for p in parts)
            return {"rate": trues / total} if total else {}
        if self.kind == k6summary.COUNTER:
            count = float(sum(p[0] for p in parts))
            return {"count": count, "rate": count / duration_s} if duration_s else {"count": count}
        last = max(parts, key=lambda p: p[1])
        return {"value": last[0], "min": min(p[2] for p in parts), "max": max(p[3] for p in parts)}


def evaluate_threshold(expression: str, stats: dict[str, float]) -> bool | None:
    """`p(95)<500` against the metric's stats: True passed, False failed, None when it cannot be evaluated."""
    match = _THRESHOLD.match(expression)
    if match is None:
        return None
    stat, op, number = match.groups()
    stat = "med" if stat == "p(50)" else stat
    if stat not in stats:
        return None
    return _OPERATORS[op](stats[stat], float(number))


@dataclass
class Selection:
    """Which metrics to decode: those the default selection reports, plus `include`, less `exclude` (globs)."""

    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)

    def wants(self, metric: str, has_thresholds: bool) -> bool:
        if any(fnmatchcase(metric, glob) for glob in self.exclude):
            return False
        if metric == "vus_max":  # the run's VUs, kept in its metadata
            return True
        if has_thresholds or metric not in k6summary.LEFT_OUT_BY_DEFAULT or not self._builtin(metric):
            return True
        # an include glob over keys (`http_req_waiting{name:*}:p(95)`) names its metric before `{` or `:`
        return any(fnmatchcase(metric, re.split(r"[{:]", glob, maxsplit=1)[0] or "*") for glob in self.include)

    @staticmethod
    def _builtin(metric: str) -> bool:
        return k6summary.K6Metric(metric, (), None, {}).builtin


@dataclass
class Reading:
    """What was read: the summary, how many lines and samples, and warnings (a truncated end)."""

    summary: k6summary.K6Summary
    lines: int
    samples: int
    warnings: list[str]


def _open(path: str) -> IO[bytes]:
    handle = open(path, "rb")  # noqa: SIM115 - returned to the caller's `with`
    if handle.peek(2)[:2] == GZIP_MAGIC:
        return gzip.open(handle, "rb")  # type: ignore[return-value]
    return handle


def read_ndjson(path: str, selection: Selection | None = None) -> Reading:
    """Stream a `--out json` file (plain or gzipped) into a K6Summary; NdjsonError when it is not one."""
    with _open(path) as handle:
        return read_lines(handle, selection or Selection(), source=path)


def read_lines(handle: Iterable[bytes], selection: Selection, source: str = "<stream>") -> Reading:
    """The work of `read_ndjson` over any iterable of byte lines."""
    metrics: dict[bytes, _Metric | None] = {}  # None: a metric not reported (its lines are skipped)
    order: list[_Metric] = []
    warnings: list[str] = []
    first_time = last_time = None
    lines = samples = 0
    loads = json.loads
    prefix, prefix_len = _POINT_PREFIX, len(_POINT_PREFIX)
    line = b""
    try:
        for line in handle:
            lines += 1
            if line.startswith(prefix):
                name = line[prefix_len : line.find(b'"', prefix_len)]
                if name in metrics:
                    state = metrics[name]
                    if state is None:  # a metric not reported: never decoded
                        continue
                    try:
                        data = loads(line)["data"]
                        state.add(data["tags"] or {}, data["value"], samples)
                    except (ValueError, KeyError, TypeError):
                        if not line.endswith(b"\n"):
                            warnings.append(f"{source}: line {lines} is cut short (k6 stopped mid-write); ignored")
                            break
                        raise NdjsonError(f"{source}: line {lines} is not a k6 sample") from None
                    last_time = data.get("time") or last_time
                    if first_time is None:
                        first_time = last_time
                    samples += 1
                    continue
            if not line.strip():
                continue
            try:
                doc = loads(line)
            except ValueError:
                if not line.endswith(b"\n"):
                    warnings.append(f"{source}: line {lines} is cut short (k6 stopped mid-write); ignored")
                    break
                raise NdjsonError(f"{source}: line {lines} is not JSON: not k6's --out json output") from None
            kind = doc.get("type") if isinstance(doc, dict) else None
            if kind == "Metric":
                _register(doc, metrics, order, selection)
            elif kind == "Point" and isinstance(doc.get("metric"), str):
                # a Point in another key order, or of a metric without its Metric line: register, then add
                name = doc["metric"].encode()
                if name not in metrics:
                    _register({"data": {"name": doc["metric"], "type": None}}, metrics, order, selection)
                state = metrics[name]
                data = doc.get("data") or {}
                if state is not None and isinstance(data.get("value"), (int, float)):
                    first_time = first_time or data.get("time")
                    last_time = data.get("time") or last_time
                    state.add(data.get("tags") or {}, data["value"], samples)
                    samples += 1
            elif lines == 1:
                raise NdjsonError(f"{source}: the first line is not a k6 Metric or Point: not k6's --out json output")
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:  # gzip cut short: k6 killed mid-write
        warnings.append(f"{source}: the compressed stream ends early ({exc}); read the {lines} lines before it")
    if lines and not warnings and not line.endswith(b"\n"):  # cut inside a line of a metric not decoded
        warnings.append(f"{source}: line {lines} is cut short (k6 stopped mid-write); ignored")
    return Reading(_summary(order, first_time, last_time), lines, samples, warnings)


def _register(
    doc: dict[str, Any], metrics: dict[bytes, _Metric | None], order: list[_Metric], selection: Selection
) -> None:
    data = doc.get("data") if isinstance(doc.get("data"), dict) else {}
    name = data.get("name")
    if not isinstance(name, str) or name.encode() in metrics:
        return
    thresholds = [t for t in data.get("thresholds") or [] if isinstance(t, str)]
    submetrics = [
        {str(k): str(v) for k, v in sub["tags"].items()}
        for sub in data.get("submetrics") or []
        if isinstance(sub, dict) and isinstance(sub.get("tags"), dict) and sub["tags"]
    ]
    kind = data.get("type") if data.get("type") in k6summary.KIND_STATS else None
    if kind is None or not selection.wants(name, bool(thresholds or submetrics)):
        metrics[name.encode()] = None
        return
    tag_names = list(SUBMETRIC_TAGS)
    for sub in submetrics:
        tag_names.extend(tag for tag in sub if tag not in tag_names)
    metric = _Metric(name, kind, tuple(tag_names), thresholds, submetrics)
    metrics[name.encode()] = metric
    order.append(metric)


def _seconds(moment: str | None) -> float | None:
    """An RFC 3339 time with up to 9 fractional digits (Go's) as seconds since the epoch; None if unreadable."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", (moment or "").strip())
    if match is None:
        return None
    base, fraction, offset = match.groups()
    try:
        whole = datetime.fromisoformat(base + ("+00:00" if offset == "Z" else offset)).timestamp()
    except ValueError:
        return None
    return whole + (float("0." + fraction) if fraction else 0.0)


def _summary(order: list[_Metric], first_time: str | None, last_time: str | None) -> k6summary.K6Summary:
    start, end = _seconds(first_time), _seconds(last_time)
    duration_s = end - start if start is not None and end is not None and end > start else None
    out = []
    for metric in order:
        if not metric.combos:
            continue
        for tags, parts in metric.series():
            stats = metric.stats(parts, duration_s)
            if not stats:
                continue
            results = {}
            if not tags:
                for expression in metric.thresholds:
                    ok = evaluate_threshold(expression, stats)
                    if ok is not None:
                        results[expression] = ok
            out.append(k6summary.K6Metric(metric.name, tags, metric.kind, stats, results))
    generated_at = normalise_utc(last_time) if last_time else None
    return k6summary.K6Summary(SHAPE_NDJSON, out, duration_s, None, generated_at)
