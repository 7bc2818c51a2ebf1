"""Wire shapes of the API and the rules every report must pass before anything is written.

A report that validates here can always be stored: strings hold no character PostgreSQL refuses (NUL, lone
surrogates), metadata is plain JSON of bounded depth, and a value `DECIMAL(10,4)` cannot hold is kept exactly in
the run's metadata instead of a row (`ExperimentReport.not_stored`). So storage errors are never the client's
fault, and a bad report is a 422 that names the field, never a 500. The limits live in `experiments.limits`.
"""

from __future__ import annotations

import math
import unicodedata
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from experiments.limits import (
    COLUMN_MAX,
    MAX_METRIC_KEY_LENGTH,
    MAX_METRICS,
    MAX_NAME_LENGTH,
    MAX_VARIANT_LENGTH,
    column_value,
)
from experiments.names import experiment_label

MAX_METADATA_DEPTH = 16
# Top-level metadata keys the service fills in itself.
RESERVED_METADATA_KEYS = frozenset({"rawFile", "ingest", "notStored"})
# metadata.directions: which way is good for the report's own metrics (globs), as the reporter sends it.
MAX_DIRECTION_GLOBS = 100


class Schema(BaseModel):
    """Base of every wire shape. Each model's validator is built when it is first used, not at import: a function
    builds only the shapes its own routes use (cold start)."""

    model_config = ConfigDict(defer_build=True)


def storable_text(text: str) -> str:
    """Reject what PostgreSQL cannot store in TEXT or JSONB: NUL characters and lone surrogates."""
    if "\x00" in text:
        raise ValueError("must not contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    return text


def metric_key(key: str) -> str:
    """A metric key of any convention (see README): printable, no control characters, no surrounding spaces."""
    storable_text(key)
    if not key or key != key.strip():
        raise ValueError("must not be empty or start or end with spaces")
    if any(unicodedata.category(char) == "Cc" for char in key):
        raise ValueError("must not contain control characters")
    return key


def check_directions(metadata: dict[str, Any]) -> None:
    """`metadata.directions`, when given, is {"higher": [glob, ...], "lower": [glob, ...]}."""
    directions = metadata.get("directions")
    if directions is None:
        return
    if not isinstance(directions, dict) or not set(directions) <= {"higher", "lower"}:
        raise ValueError('directions: must be {"higher": [glob, ...], "lower": [glob, ...]}')
    for way, globs in directions.items():
        if not isinstance(globs, list) or len(globs) > MAX_DIRECTION_GLOBS:
            raise ValueError(f"directions.{way}: must be a list of at most {MAX_DIRECTION_GLOBS} globs")
        if not all(isinstance(glob, str) and 0 < len(glob) <= MAX_METRIC_KEY_LENGTH for glob in globs):
            raise ValueError(f"directions.{way}: each glob must be a non-empty string")


def parse_iso_datetime(value: Any) -> Any:
    """Accept ISO 8601 strings only (no epoch numbers), so a date's meaning is never guessed."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 date-time string, e.g. 2025-11-01T12:00:00Z")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("must be an ISO 8601 date-time, e.g. 2025-11-01T12:00:00Z") from None


def to_utc_millis(moment: datetime) -> datetime:
    """UTC without time zone, to the millisecond: what `TIMESTAMP(3)` stores (a naive input counts as UTC)."""
    if moment.tzinfo is not None:
        try:
            moment = moment.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:  # e.g. 0001-01-01T00:00:00+00:01 is in year 0 in UTC
            raise ValueError("must fall within the years 1 to 9999 in UTC") from None
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def check_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """Bounded depth, storable strings and finite numbers everywhere, and no key the service sets itself."""
    reserved = RESERVED_METADATA_KEYS & metadata.keys()
    if reserved:
        raise ValueError(f"keys {sorted(reserved)} are reserved (rawFile goes at the top level)")
    check_directions(metadata)

    def walk(node: Any, path: str, depth: int) -> None:
        if depth > MAX_METADATA_DEPTH:
            raise ValueError(f"{path}: must not nest deeper than {MAX_METADATA_DEPTH} levels")
        try:
            if isinstance(node, str):
                storable_text(node)
            elif isinstance(node, float) and not math.isfinite(node):  # JSONB refuses them: a 422, not a 500
                raise ValueError("must be a finite number (NaN and Infinity are not JSON)")
            elif isinstance(node, dict):
                for key in node:
                    storable_text(key)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None
        children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in children:
            walk(child, f"{path}.{key}" if isinstance(key, str) else f"{path}[{key}]", depth + 1)

    walk(metadata, "metadata", 1)
    return metadata


# Names and variants follow `experiments.names.experiment_label` (NFC; no surrounding whitespace, no invisible
# characters), in reports and in query parameters alike.
Name = Annotated[str, StringConstraints(max_length=MAX_NAME_LENGTH), AfterValidator(experiment_label)]
Variant = Annotated[str, StringConstraints(max_length=MAX_VARIANT_LENGTH), AfterValidator(experiment_label)]
Notes = Annotated[str, StringConstraints(max_length=10_000), AfterValidator(storable_text)]
FilePath = Annotated[str, StringConstraints(max_length=1024), AfterValidator(storable_text)]
MetricName = Annotated[str, StringConstraints(max_length=MAX_METRIC_KEY_LENGTH), AfterValidator(metric_key)]
MetricValue = Annotated[float, Field(strict=True, allow_inf_nan=False)]
ReportDate = Annotated[datetime, BeforeValidator(parse_iso_datetime), AfterValidator(to_utc_millis)]
Metadata = Annotated[dict[str, JsonValue], AfterValidator(check_metadata)]


class ExperimentReport(Schema):
    """The body of `POST /experiments/report`: the original doc's reporter payload plus `variant` and `metadata`."""

    model_config = ConfigDict(extra="forbid")

    name: Name = Field(description="Experiment name; without `variant`, the part after its last `_` is the variant")
    variant: Variant | None = Field(default=None, validate_default=True, description="e.g. baseline, cached")
    date: ReportDate | None = Field(default=None, description="When the run happened (ISO 8601); default now")
    notes: Notes | None = Field(default=None, description="Stored as the rows' description")
    metricsSummary: dict[MetricName, MetricValue] = Field(
        min_length=1,
        max_length=MAX_METRICS,
        description=f"1 to {MAX_METRICS} metrics: headline keys (p95_ms, rps, ...) or k6 keys "
        "(`http_req_duration{name:GET /x}:p(95)`, see README); finite numbers. A value DECIMAL(10,4) cannot hold "
        f"(beyond ±{COLUMN_MAX}) is kept exactly in the run's metadata (`notStored`) instead of a row",
    )
    rawFile: FilePath | None = Field(default=None, description="Path of the k6 summary file")
    metadata: Metadata | None = None

    @field_validator("variant")
    @classmethod
    def _variant_given_or_in_name(cls, variant: str | None, info: ValidationInfo) -> str | None:
        name = info.data.get("name")
        if variant is None and name is not None:
            head, _, tail = name.rpartition("_")
            if not head.strip() or not tail.strip():
                raise ValueError("required when the name does not end in _<variant> (e.g. lru_cache_baseline)")
            try:
                experiment_label(head), experiment_label(tail)
            except ValueError as error:
                raise ValueError(f"the name's parts before and after its last _ each {error}") from None
        return variant

    @field_validator("metricsSummary")
    @classmethod
    def _some_metric_fits_a_row(cls, metrics: dict[str, float]) -> dict[str, float]:
        """The run's metadata lives on its rows: at least one value must fit the column."""
        if metrics and all(column_value(value) is None for value in metrics.values()):
            raise ValueError(f"no value fits the column DECIMAL(10,4) (within ±{COLUMN_MAX}); at least one must")
        return metrics

    @model_validator(mode="after")
    def _split_variant_from_name(self) -> ExperimentReport:
        """`lru_cache_baseline` without a variant is experiment `lru_cache`, variant `baseline`."""
        if self.variant is None:
            self.name, _, self.variant = self.name.rpartition("_")
        return self

    def rows(self) -> dict[str, Decimal]:
        """metric → the value as the column stores it, for every value that fits."""
        stored = {key: column_value(value) for key, value in self.metricsSummary.items()}
        return {key: value for key, value in stored.items() if value is not None}

    def not_stored(self) -> dict[str, float]:
        """metric → exact value, for the values the column cannot hold (kept in the run's metadata)."""
        return {key: value for key, value in self.metricsSummary.items() if column_value(value) is None}


class NotStored(Schema):
    metric: str
    value: float
    reason: str


class ReportStored(Schema):
    """The 201 answer (and the 200 replay of it): what was stored, with the id of each metric's row."""

    name: str
    variant: str
    createdAt: str = Field(description="UTC, ISO 8601 with milliseconds")
    ids: dict[str, str] = Field(description="metric name → row id (uuid)")
    notStored: list[NotStored] = Field(
        default_factory=list, description="Metrics kept in the run's metadata instead of a row, and why"
    )


class ErrorDetail(Schema):
    field: str = Field(description="where the problem is, e.g. metricsSummary.p95_ms or header Idempotency-Key")
    reason: str


class ErrorBody(Schema):
    """Every error answer of the API."""

    error: str = Field(description="machine-readable code, e.g. validation_failed")
    message: str
    details: list[ErrorDetail] = Field(default_factory=list)


class GatewayError(Schema):
    """API Gateway's own answer, before any function runs: 403 when the API key is missing or wrong."""

    message: str = Field(description="e.g. Forbidden")


# --- reading back -------------------------------------------------------------------------------------------


class ExperimentRow(Schema):
    """One row of `experiments`, as `GET /experiments` lists it."""

    id: str
    name: str
    description: str | None
    variant: str
    metric: str
    value: float
    metadata: JsonValue = Field(
        description="Any JSON value or null: our reports store objects, but the column is the Prisma backend's `Json?`"
    )
    createdAt: str = Field(description="UTC, ISO 8601 with milliseconds")


class ExperimentPage(Schema):
    items: list[ExperimentRow]
    nextCursor: str | None = Field(description="Pass as `cursor` for the next (older) page; null on the last")


class VariantSummary(Schema):
    """One variant's recent runs of one metric, and its verdict against the baseline."""

    variant: str
    runs: int = Field(description="All runs of this metric stored for the variant")
    latest: float
    median: float = Field(description="Median over the last `runs` requested")
    changePct: float | None = Field(description="Median change against the baseline, in percent")
    verdict: str | None = Field(
        description="better, worse, changed (no direction known), no_change or not_enough_data; null for the baseline"
    )
    method: str | None = Field(default=None, description="mann_whitney_u, no_overlap or none")
    pValue: float | None = None


class MetricComparison(Schema):
    metric: str
    k6Metric: str = Field(description="The k6 metric the key reads back to (the key itself for other keys)")
    tags: dict[str, str] = Field(description='The key\'s tags, e.g. {"name": "GET /products/:id"}')
    stat: str | None = Field(description="The key's stat (`p(95)`, `rate`, ...); null for keys of no convention")
    higherIsBetter: bool | None = Field(description="null when neither direction is known (verdict `changed`)")
    variants: list[VariantSummary]


class ComparisonReport(Schema):
    name: str
    baseline: str
    runs: int
    thresholdPct: float
    metrics: list[MetricComparison]


class SeriesPoint(Schema):
    createdAt: str = Field(description="UTC, ISO 8601 with milliseconds")
    value: float


class MetricSeries(Schema):
    """One metric of one variant over time, oldest first."""

    variant: str
    metric: str
    totalRuns: int = Field(description="All runs of this metric stored for the variant")
    downsampled: bool = Field(description="True when `points` keeps only each bucket's lowest and highest run")
    points: list[SeriesPoint]


class SeriesReport(Schema):
    name: str
    series: list[MetricSeries]


class MetricInfo(Schema):
    metric: str
    higherIsBetter: bool | None = Field(description="null when neither direction is known")


class MetricList(Schema):
    name: str
    metrics: list[MetricInfo] = Field(description="The experiment's metric keys, sorted")
    truncated: bool = Field(default=False, description="True when more keys are stored than listed")


class ChangePointOut(Schema):
    """One change point of a variant's metric over time, as Apache Otava found it (`make regressions`)."""

    variant: str
    metric: str
    createdAt: str = Field(description="When the first run at the new level ran (UTC, ISO 8601 with milliseconds)")
    runIndex: int = Field(description="0-based position of that run in the variant's series of this metric")
    before: float = Field(description="Mean of the runs before the change (since the previous change point)")
    after: float = Field(description="Mean of the runs from the change on (up to the next change point)")
    changePct: float | None = Field(description="(after - before) in percent of before; null when before is 0")
    pValue: float = Field(description="Otava's p-value for the split (Student's t-test of the two sides)")
    verdict: str = Field(description="better, worse, or changed (neither direction known for the metric)")


class ChangesReport(Schema):
    name: str
    changes: list[ChangePointOut] = Field(description="Oldest first; empty when the last analysis found none")
