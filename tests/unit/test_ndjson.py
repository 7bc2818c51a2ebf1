"""scripts/k6ndjson.py: k6's raw output → the summary k6 would print, from generated samples."""

from __future__ import annotations

import gzip
import io
import json
import random
import statistics

import pytest

from experiments import k6summary
from support import load_script

k6ndjson = load_script("k6ndjson")


def metric_line(name: str, kind: str, thresholds: list[str] = (), submetrics: list[dict[str, str]] = ()) -> bytes:
    subs = [
        {"name": f"{name}{{{k}:{v}}}", "suffix": f"{k}:{v}", "tags": {k: v}} for s in submetrics for k, v in s.items()
    ]
    data = {"name": name, "type": kind, "contains": "default", "thresholds": list(thresholds)}
    data["submetrics"] = subs or None
    return json.dumps({"type": "Metric", "data": data, "metric": name}, separators=(",", ":")).encode() + b"\n"


def point(metric: str, value: float, second: float = 0.0, **tags: str) -> bytes:
    time = f"2026-01-01T00:00:{second:09.6f}Z"
    doc = {"metric": metric, "type": "Point", "data": {"time": time, "value": value, "tags": tags}}
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


def read(lines: list[bytes], **selection: list[str]) -> k6ndjson.Reading:
    return k6ndjson.read_lines(io.BytesIO(b"".join(lines)), k6ndjson.Selection(**selection))


def figures(lines: list[bytes]) -> dict[str, float]:
    return k6summary.select_metrics(read(lines).summary)


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [
        ([], 0.95, 0.0),
        ([7.0], 0.95, 7.0),
        ([1.0, 2.0, 3.0, 4.0], 0.9, 3.7),  # i = 0.9 * 3 = 2.7 → 3 + 0.7 * (4 - 3)
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.5),
        ([10.0, 20.0], 0.0, 10.0),
        ([10.0, 20.0], 1.0, 20.0),
    ],
)
def test_percentile_is_k6s_linear_interpolation_between_closest_ranks(values, p, expected) -> None:
    assert k6ndjson.quantile(values, p) == pytest.approx(expected)


def test_a_million_samples_give_k6s_figures() -> None:
    rng = random.Random(7)
    values = [round(rng.lognormvariate(1, 0.6), 6) for _ in range(1_000_000)]
    names = ("GET /a", "GET /b")
    head = [metric_line("http_req_duration", "trend", ["p(95)<1000"]), metric_line("http_req_waiting", "trend")]
    template = (
        '{"metric":"http_req_duration","type":"Point","data":{"time":"2026-01-01T00:00:%09.6fZ","value":%r,'
        '"tags":{"name":"%s","scenario":"default","status":"200"}}}\n'
    )  # what point() writes, formatted faster
    body = [(template % (i / 100_000, v, names[i % 2])).encode() for i, v in enumerate(values)]
    tags = {"name": "GET /b", "scenario": "default", "status": "200"}
    assert body[3] == point("http_req_duration", values[3], 3 / 100_000, **tags)
    reading = read(head + body)
    ours = k6summary.select_metrics(reading.summary)
    assert reading.samples == 1_000_000 and reading.warnings == []
    cuts = statistics.quantiles(values, n=100, method="inclusive")  # the same interpolation, computed another way
    assert ours["p95_ms"] == pytest.approx(cuts[94], abs=1e-9)
    assert ours["p90_ms"] == pytest.approx(cuts[89], abs=1e-9)
    assert ours["p50_ms"] == pytest.approx(cuts[49], abs=1e-9)
    assert ours["avg_ms"] == pytest.approx(statistics.fmean(values))
    assert (ours["min_ms"], ours["max_ms"]) == (min(values), max(values))
    assert ours["http_req_duration{name:GET /b}:count"] == 500_000
    assert ours["http_req_duration{name:GET /a}:p(99)"] == pytest.approx(
        statistics.quantiles(values[0::2], n=100, method="inclusive")[98], abs=1e-9
    )
    assert not any(key.startswith(("http_req_duration{scenario", "http_req_duration{status")) for key in ours)
    assert reading.summary.thresholds() == (["http_req_duration: p(95)<1000"], [])


def test_rates_counters_and_gauges() -> None:
    lines = [
        metric_line("vus_max", "gauge"),
        point("vus_max", 10, 0),
        metric_line("checks", "rate", ["rate>0.9"]),
        point("checks", 1, 0, check="a"),
        point("checks", 0, 1, check="a"),
        point("checks", 1, 2, check="b"),
        point("checks", True, 2, check="b"),
        metric_line("queue_depth", "gauge"),
        point("queue_depth", 5, 1),
        point("queue_depth", 9, 2),
        point("queue_depth", 2, 3),
        metric_line("http_reqs", "counter"),
        point("http_reqs", 1, 3.5),
        point("http_reqs", 1, 4),
    ]
    reading = read(lines)
    ours = k6summary.select_metrics(reading.summary)
    assert ours["checks_pass_rate"] == 0.75
    assert ours["requests_count"] == 2 and ours["rps"] == pytest.approx(2 / 4)  # count / (last - first sample)
    assert (ours["queue_depth:value"], ours["queue_depth:min"], ours["queue_depth:max"]) == (2, 2, 9)
    assert reading.summary.vus_max == 10 and "vus_max:value" not in ours
    assert reading.summary.thresholds() == ([], ["checks: rate>0.9"])
    assert reading.summary.duration_s == pytest.approx(4.0)


def test_threshold_submetrics_and_tags_named_in_them() -> None:
    lines = [
        metric_line("http_req_duration", "trend", submetrics=[{"expected_response": "true"}, {"tenant": "x"}]),
        point("http_req_duration", 10, 0, expected_response="true", tenant="x"),
        point("http_req_duration", 20, 1, expected_response="true", tenant="y"),
        point("http_req_duration", 30, 2, expected_response="false", tenant="y"),
    ]
    ours = figures(lines)
    assert ours["http_req_duration{expected_response:true}:max"] == 20
    assert ours["http_req_duration{expected_response:false}:max"] == 30
    assert ours["http_req_duration{tenant:x}:count"] == 1  # k6's listed submetric
    assert ours["http_req_duration{tenant:y}:count"] == 2  # and the tag's other value


def test_only_reported_metrics_are_decoded() -> None:
    lines = [
        metric_line("http_req_waiting", "trend"),
        b'{"metric":"http_req_waiting","type":"Point","data":{not json at all}}\n',
        metric_line("iterations", "counter"),
        point("iterations", 1, 0),
    ]
    assert figures(lines) == {"iterations:count": 1}
    with pytest.raises(k6ndjson.NdjsonError, match="line 2"):
        read(lines, include=["http_req_waiting"])


def test_a_cut_off_last_line_is_a_warning_and_a_cut_in_the_middle_an_error() -> None:
    good = [metric_line("iterations", "counter"), point("iterations", 1, 0), point("iterations", 1, 1)]
    reading = read([*good, point("iterations", 1, 2)[:25]])
    assert reading.warnings == ["<stream>: line 4 is cut short (k6 stopped mid-write); ignored"]
    assert k6summary.select_metrics(reading.summary)["iterations:count"] == 2
    with pytest.raises(k6ndjson.NdjsonError, match="line 2"):
        read([good[0], point("iterations", 1, 2)[:25] + b"\n", good[1]])


def test_gzip_and_detection(tmp_path) -> None:
    lines = b"".join([metric_line("iterations", "counter"), point("iterations", 1, 0)])
    plain, packed = tmp_path / "out.json", tmp_path / "out.json.gz"
    plain.write_bytes(lines)
    packed.write_bytes(gzip.compress(lines))
    assert k6ndjson.is_ndjson(lines) and k6ndjson.is_ndjson(packed.read_bytes())
    assert not k6ndjson.is_ndjson(b'{"metrics": {}}')
    one = k6summary.select_metrics(k6ndjson.read_ndjson(str(plain)).summary)
    assert one == k6summary.select_metrics(k6ndjson.read_ndjson(str(packed)).summary) == {"iterations:count": 1}


def test_not_k6_output_is_refused() -> None:
    with pytest.raises(k6ndjson.NdjsonError, match="not k6"):
        read([b'{"hello": "world"}\n', b"{}\n"])


@pytest.mark.parametrize(
    ("expression", "expected"),
    [("p(95)<500", True), ("p(95) > 500", False), ("avg<=100", True), ("rate==0.5", None), ("p(50)<2", True),
     ("count>=3", True), ("max < 1e3", True), ("whatever", None)],
)  # fmt: skip
def test_threshold_evaluation(expression: str, expected: bool | None) -> None:
    stats = {"p(95)": 250.0, "avg": 100.0, "med": 1.0, "count": 3.0, "max": 999.0}
    assert k6ndjson.evaluate_threshold(expression, stats) is expected
