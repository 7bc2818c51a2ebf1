"""A k6 summary document → the body of `POST /experiments/report`: the glue both ways of reporting share.

Standard library only, Python >= 3.9: the reporter (`scripts/report_k6_result.py`) imports `run_metadata` and the
time helpers, and the API's `POST /experiments/k6-summary` builds its report with `report_body`, so a run sent as
the file k6 wrote gets the same keys, values and metadata whichever way it reaches the API. The mapping itself is
`experiments.k6summary`; this module only decides what goes around it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from experiments import k6summary


@dataclass
class IngestOptions:
    """What a client may say about a run besides the document: the reporter's options, as query parameters."""

    notes: str | None = None
    include: list[str] = field(default_factory=list)  # --metric globs
    exclude: list[str] = field(default_factory=list)  # --exclude-metric globs
    higher: list[str] = field(default_factory=list)  # --higher-is-better globs
    lower: list[str] = field(default_factory=list)  # --lower-is-better globs
    k6_file: str | None = None
    git_sha: str | None = None
    ci_run_url: str | None = None
    raw_file: str | None = None


def format_seconds(seconds: float) -> str:
    """k6-style duration string: 2.0007 -> '2.001s', 30.0 -> '30s'."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


def format_utc(epoch_s: float) -> str:
    """Seconds since the epoch as ISO 8601 UTC with milliseconds (the column is TIMESTAMP(3))."""
    millis = round(epoch_s * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(millis // 1000)) + f".{millis % 1000:03d}Z"


def normalise_utc(value: str) -> str | None:
    """An RFC 3339 time (Go writes up to 9 fractional digits) as `YYYY-MM-DDTHH:MM:SS.mmmZ`; None if unreadable."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|z|[+-]\d\d:\d\d)", value.strip())
    if match is None:
        return None
    base, fraction, offset = match.groups()
    micros = (fraction or "").ljust(6, "0")[:6]
    try:  # fromisoformat of Python 3.9 wants exactly 6 fractional digits and no "Z"
        moment = datetime.fromisoformat(f"{base}.{micros}{'+00:00' if offset in ('Z', 'z') else offset}")
    except ValueError:
        return None
    return format_utc(moment.timestamp())


def run_metadata(
    shape: str,
    *,
    vus: float | None = None,
    duration_s: float | None = None,
    duration: str | None = None,
    thresholds: tuple[list[str], list[str]] = ([], []),
    k6_file: str | None = None,
    git_sha: str | None = None,
    ci_run_url: str | None = None,
    directions: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """The run's context stored with every metric row, in the order the reporter has always written it.

    `duration_s` is the measured duration (handleSummary, machine-readable); `duration` the configured one
    (e.g. the job's DURATION), used only when nothing was measured.
    """
    metadata: dict[str, Any] = {"k6Summary": shape}
    if directions:
        metadata["directions"] = directions
    if vus is not None:
        metadata["vus"] = int(vus) if float(vus).is_integer() else vus
    if duration_s:
        metadata["duration"] = format_seconds(duration_s)
    elif duration:
        metadata["duration"] = duration
    passed, failed = thresholds
    if passed or failed:
        metadata["thresholds"] = {"passed": list(passed), "failed": list(failed)}
    if k6_file:
        metadata["k6File"] = k6_file
    if git_sha:
        metadata["gitSha"] = git_sha
    if ci_run_url:
        metadata["ciRunUrl"] = ci_run_url
    return metadata


def _globs(values: Iterable[str]) -> list[str]:
    return [value for value in values if value]


def report_body(doc: Any, name: str, variant: str | None, options: IngestOptions | None = None) -> dict[str, Any]:
    """The `/experiments/report` body of a k6 summary document exactly as k6 wrote it (any of its three shapes).

    Raises `k6summary.SummaryError` when the document is not a k6 summary or none of its figures is chosen.
    The values are sent as k6 computed them; the report's model rounds them to the column, as for any report.
    """
    options = options or IngestOptions()
    summary = k6summary.read_summary(doc)
    metrics = k6summary.select_metrics(summary, _globs(options.include), _globs(options.exclude))
    if not metrics:
        raise k6summary.SummaryError(f"a k6 summary ({summary.shape}) with no metric to report")
    directions = {way: globs for way, globs in (("higher", options.higher), ("lower", options.lower)) if globs}
    body: dict[str, Any] = {"name": name}
    if variant:
        body["variant"] = variant
    date = normalise_utc(summary.generated_at) if summary.generated_at else None
    if date:
        body["date"] = date
    if options.notes:
        body["notes"] = options.notes
    body["metricsSummary"] = metrics
    if options.raw_file:
        body["rawFile"] = options.raw_file
    body["metadata"] = run_metadata(
        summary.shape,
        vus=summary.vus_max,
        duration_s=summary.duration_s,
        thresholds=summary.thresholds(),
        k6_file=options.k6_file or summary.script,
        git_sha=options.git_sha,
        ci_run_url=options.ci_run_url,
        directions=directions or None,
    )
    return body
