"""Change points in an experiment's history, found by Apache Otava: `make regressions NAME=<experiment>`.

Runs in `.venv-otava` (the Makefile creates it): Otava is too heavy for `.venv` and the Lambda layer.

    python scripts/regressions.py NAME [--variant V] [--metric M] [--recent 3] [--json]
    python scripts/regressions.py --demo      # plant a 15 % regression in a generated nightly history, find it

Reads every (variant, metric) series of NAME (through `experiments.history.read_history`) from DATABASE_URL,
else the embedded PostgreSQL (migrated first); runs Otava's change-point detection (the Hunter variant of
E-Divisive: split with sliding windows, merge by Student's t-test at `--max-pvalue`) on each; prints every
change point (when, metric, variant, mean before -> after, change %, p-value, better/worse/changed by the
metric's direction); replaces the experiment's stored change points (`ingest.change_points`, served by
GET /experiments/changes) in one transaction; appends a Markdown table to $GITHUB_STEP_SUMMARY when set;
notifies Slack through Otava's own notifier when SLACK_WEBHOOK_URL, or SLACK_BOT_TOKEN with --slack-channel /
SLACK_CHANNEL, is set and a change starts within the last RECENT runs.

Exit codes: 0 no change made a metric worse within the last RECENT runs of its series; 1 usage error or nothing
stored under NAME; 3 database unreachable; 4 a change made a metric worse within the last RECENT runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC
from importlib.metadata import version

import psycopg

try:
    from otava.analysis import TTestStats
    from otava.data_selector import DataSelector
    from otava.series import AnalysisOptions, AnalyzedSeries, Metric, Series
    from otava.slack import SlackNotification, SlackNotifier
except ImportError as error:  # pragma: no cover - the message is the point
    sys.exit(f"Apache Otava is not installed here ({error}); run `make regressions NAME=...` (it uses .venv-otava)")

from devkit.localdb import database_url, scratch_database
from devkit.nightly import nightly_values, store_nightly
from experiments.changes import Change, make_change, replace_changes, worse_within
from experiments.history import History, read_history
from experiments.k6summary import HIGHER, direction
from experiments.migrations import apply_migrations

EXIT_OK, EXIT_USAGE, EXIT_DATABASE, EXIT_WORSE = 0, 1, 3, 4
STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"
DEMO_NAME = "nightly_demo"


@dataclass(frozen=True)
class Settings:
    name: str
    variant: str | None
    metric: str | None
    recent: int
    max_pvalue: float
    min_magnitude: float
    window: int
    store: bool
    as_json: bool
    slack_channels: tuple[str, ...]

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        channels = args.slack_channel or [c for c in os.environ.get("SLACK_CHANNEL", "").split(",") if c.strip()]
        return cls(
            name=args.name,
            variant=args.variant,
            metric=args.metric,
            recent=args.recent,
            max_pvalue=args.max_pvalue,
            min_magnitude=args.min_magnitude,
            window=args.window,
            store=not args.no_store,
            as_json=args.json,
            slack_channels=tuple(c.strip() for c in channels),
        )


@dataclass
class Analysis:
    """Otava's result for every series of one experiment, and the change points in our terms."""

    history: History
    changes: list[Change]
    analysed: dict[str, AnalyzedSeries]  # Otava's own objects, keyed "variant · metric", for its Slack notifier
    recent: int

    @property
    def worse(self) -> list[Change]:
        return worse_within(self.changes, self.recent)

    @property
    def recent_changes(self) -> list[Change]:
        return [change for change in self.changes if change.within_last(self.recent)]


def otava_options(settings: Settings) -> AnalysisOptions:
    options = AnalysisOptions()
    options.max_pvalue = settings.max_pvalue
    options.min_magnitude = settings.min_magnitude
    options.window_len = settings.window
    return options


def analyse(history: History, settings: Settings) -> Analysis:
    """Run Otava on each series and turn its change points into `Change`s (with our verdicts)."""
    options = otava_options(settings)
    changes: list[Change] = []
    analysed: dict[str, AnalyzedSeries] = {}
    higher, lower = history.directions.get("higher", ()), history.directions.get("lower", ())
    for series in history.series:
        way = direction(series.metric, higher, lower)
        otava_series = Series(
            test_name=f"{history.name} {series.variant}",
            branch=None,
            time=[int(moment.replace(tzinfo=UTC).timestamp()) for moment in series.times],
            # Otava's direction: 1 when higher is better, -1 when lower is; it only colours its Slack message.
            metrics={series.metric: Metric(direction=1 if way in (HIGHER, None) else -1)},
            data={series.metric: list(series.values)},
            attributes={},
        )
        result = otava_series.analyze(options)
        analysed[f"{series.variant} · {series.metric}"] = result
        for point in result.change_points[series.metric]:
            stats: TTestStats = point.stats
            changes.append(
                make_change(
                    series.variant,
                    series.metric,
                    run_index=int(point.index),
                    times=series.times,
                    before=float(stats.mean_before()),
                    after=float(stats.mean_after()),
                    p_value=float(stats.pvalue),
                    directions=history.directions,
                )
            )
    changes.sort(key=lambda change: (change.created_at, change.variant, change.metric))
    return Analysis(history=history, changes=changes, analysed=analysed, recent=settings.recent)


# --------------------------------------------------------------------------------------------------- output


def wire(change: Change) -> dict:
    """A change in the API's shape (GET /experiments/changes), plus the series length."""
    return {**change.out().model_dump(), "runs": change.runs}


def _pct(change: Change) -> str:
    return "n/a" if change.change_pct is None else f"{change.change_pct:+.1f}%"


def render_text(analysis: Analysis, settings: Settings) -> str:
    history, changes = analysis.history, analysis.changes
    lines = [
        f"Change points in {history.name!r} (Apache Otava {version('apache-otava')}, p < {settings.max_pvalue:g}): "
        f"{len(changes)} in {len(history.series)} series"
    ]
    if changes:
        lines.append(
            f"{'when (UTC)':<23} {'variant':<12} {'metric':<24} {'run':>7} {'before':>12}   {'after':>12} "
            f"{'change':>8} {'p-value':>9}  verdict"
        )
        for change in changes:
            when = change.created_at.isoformat(sep=" ", timespec="milliseconds")
            recent = f"  (within the last {settings.recent} runs)" if change.within_last(settings.recent) else ""
            lines.append(
                f"{when:<23} {change.variant:<12} {change.metric:<24} {change.run_index + 1:>3}/{change.runs:<3} "
                f"{change.before:>12,.2f} → {change.after:>12,.2f} {_pct(change):>8} {change.p_value:>9.2g}  "
                f"{change.verdict}{recent}"
            )
    worse = analysis.worse
    if worse:
        lines.append(f"FAIL: {len(worse)} change(s) made a metric worse within the last {settings.recent} runs")
    else:
        lines.append(f"OK: no change made a metric worse within the last {settings.recent} runs")
    return "\n".join(lines)


def render_markdown(analysis: Analysis, settings: Settings) -> str:
    history, worse = analysis.history, analysis.worse
    title = "regression" if worse else "no regression"
    lines = [
        f"### Change points in `{history.name}`: {title} within the last {settings.recent} runs",
        "",
        f"Apache Otava over {len(history.series)} series, p < {settings.max_pvalue:g}.",
        "",
    ]
    if analysis.changes:
        lines += ["| when (UTC) | variant | metric | run | before → after | change | p-value | verdict |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for change in analysis.changes:
            flag = " ⚠" if change in worse else ""
            lines.append(
                f"| {change.created_at:%Y-%m-%d %H:%M} | {change.variant} | `{change.metric}` | "
                f"{change.run_index + 1}/{change.runs} | {change.before:,.2f} → {change.after:,.2f} | {_pct(change)} "
                f"| {change.p_value:.2g} | {change.verdict}{flag} |"
            )
    else:
        lines.append("No change points.")
    return "\n".join(lines) + "\n"


def append_step_summary(analysis: Analysis, settings: Settings) -> None:
    path = os.environ.get(STEP_SUMMARY_ENV, "").strip()
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(render_markdown(analysis, settings))


def notify_slack(analysis: Analysis, settings: Settings) -> str | None:
    """Otava's Slack message of the changes within the last RECENT runs; what was done, or None when nothing."""
    webhook = os.environ.get("SLACK_WEBHOOK_URL", "").strip()
    token = os.environ.get("SLACK_BOT_TOKEN", "").strip()
    if not analysis.recent_changes or not (webhook or (token and settings.slack_channels)):
        return None
    since = min(change.created_at for change in analysis.recent_changes).replace(tzinfo=UTC)
    selector = DataSelector()
    if token and settings.slack_channels:
        from slack_sdk import WebClient

        SlackNotifier(WebClient(token=token)).notify(
            analysis.analysed, selector=selector, channels=list(settings.slack_channels), since=since
        )
        return f"Slack: sent to {', '.join(settings.slack_channels)}"
    from slack_sdk.webhook import WebhookClient

    # An incoming webhook posts to its own channel: Otava's message blocks, sent through it.
    client = WebhookClient(webhook)
    dispatches = SlackNotification(
        analysis.analysed, data_selection_description=f"experiment {analysis.history.name}", since=since
    ).create_dispatches()
    for blocks in dispatches:
        answer = client.send(text=f"Change points in {analysis.history.name}", blocks=blocks)
        if answer.status_code >= 300:
            raise RuntimeError(f"Slack webhook answered {answer.status_code}: {answer.body}")
    return f"Slack: {len(dispatches)} message(s) sent to the webhook"


# ------------------------------------------------------------------------------------------------------ run


def run(connection: psycopg.Connection, settings: Settings) -> tuple[int, Analysis | None]:
    """Analyse, store, report; the exit code and the analysis (None when nothing is stored under the name)."""
    history = read_history(connection, settings.name, variant=settings.variant, metric=settings.metric)
    if not history.series:
        scope = "".join(f" {k}={v!r}" for k, v in (("variant", settings.variant), ("metric", settings.metric)) if v)
        print(f"no runs stored for experiment {settings.name!r}{scope}", file=sys.stderr)
        return EXIT_USAGE, None
    analysis = analyse(history, settings)
    if settings.store:
        replace_changes(connection, settings.name, analysis.changes, variant=settings.variant, metric=settings.metric)
    if settings.as_json:
        body = {"name": settings.name, "series": len(history.series), "changes": [wire(c) for c in analysis.changes],
                "worse": [wire(c) for c in analysis.worse]}  # fmt: skip
        print(json.dumps(body, indent=2))
    else:
        print(render_text(analysis, settings))
    append_step_summary(analysis, settings)
    try:
        sent = notify_slack(analysis, settings)
    except Exception as error:  # a failed notification must not hide the verdict: warn, keep the exit code
        sent = f"Slack notification failed: {error}"
    if sent:
        print(sent, file=sys.stderr)
    return (EXIT_WORSE if analysis.worse else EXIT_OK), analysis


def demo(settings: Settings) -> int:
    """A 30-night history in a scratch database: p95 15 % slower from night 27 on, rps flat; find the change."""
    nights, step_at = 30, 27
    print(f"Demo: {nights} nightly runs of {DEMO_NAME!r}, p95_ms 15 % slower from night {step_at + 1} on (3 % noise)")
    server = database_url()
    with scratch_database(server, "k6exp_regressions_demo") as url, psycopg.connect(url, autocommit=True) as conn:
        store_nightly(
            conn,
            DEMO_NAME,
            "nightly",
            {
                "p95_ms": nightly_values(120.0, nights, step_at=step_at, step_pct=15, noise_pct=3, seed=7),
                "rps": nightly_values(850.0, nights, noise_pct=3, seed=8),
            },
        )
        print("Stored through the report API's store path in a scratch database; running Otava:\n")
        code, analysis = run(conn, replace(settings, name=DEMO_NAME, variant=None, metric=None))
    found = analysis is not None and any(
        c.metric == "p95_ms" and abs(c.run_index - step_at) <= 1 and c.verdict == "worse" for c in analysis.changes
    )
    outcome = "fails" if code == EXIT_WORSE else "passes"
    make = f" (make: Error {code})" if code else ""
    print(f"\nregressions.py exits {code} on this history{make}: the nightly job {outcome}.")
    print("planted regression found" if found and code == EXIT_WORSE else "planted regression NOT found")
    return EXIT_OK if found and code == EXIT_WORSE else EXIT_USAGE


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", help="the experiment (rows' name)")
    parser.add_argument("--variant", help="only this variant")
    parser.add_argument("--metric", help="only this metric key")
    parser.add_argument("--recent", type=int, default=3, help="fail (exit 4) on a worse change in the last N runs")
    parser.add_argument("--max-pvalue", type=float, default=0.001, help="Otava's significance level (0.001)")
    parser.add_argument("--min-magnitude", type=float, default=0.0, help="Otava's smallest relative change (0)")
    parser.add_argument("--window", type=int, default=50, help="Otava's sliding window, in runs (50)")
    parser.add_argument("--no-store", action="store_true", help="print only; leave ingest.change_points as it is")
    parser.add_argument("--json", action="store_true", help="print the change points as JSON (the API's shape)")
    parser.add_argument("--slack-channel", action="append", help="with SLACK_BOT_TOKEN: channel to notify")
    parser.add_argument("--demo", action="store_true", help="plant a regression in a generated history, find it")
    args = parser.parse_args(argv)
    if not args.demo and not args.name:
        parser.error("the experiment name is required (or --demo)")
    if args.recent < 1 or args.window < 2 or not 0 < args.max_pvalue < 1 or args.min_magnitude < 0:
        parser.error("--recent >= 1, --window >= 2, 0 < --max-pvalue < 1 and --min-magnitude >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")  # pgserver's, on machines without one
    settings = Settings.from_args(args)
    try:
        if args.demo:
            return demo(settings)
        url = database_url()
        if not os.environ.get("DATABASE_URL"):
            apply_migrations(url)  # the embedded database is ours to migrate; a shared one is migrated by its deploy
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as connection:
            return run(connection, settings)[0]
    except psycopg.errors.UndefinedTable as error:
        print(f"{error}: apply the migrations first (`make migrate`, or deploy the stack)", file=sys.stderr)
        return EXIT_USAGE
    except psycopg.OperationalError as error:
        print(f"database unreachable: {error}", file=sys.stderr)
        return EXIT_DATABASE


if __name__ == "__main__":
    sys.exit(main())
