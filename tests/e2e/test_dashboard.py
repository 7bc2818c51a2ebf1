"""GET /dashboard in a real headless Chromium: Debian's /usr/bin/chromium driven by Playwright (no browser download).

The local API serves template.yaml's routes against the test database, seeded with an experiment of three
variants: `cached` clearly better than `baseline` over six runs each (Mann-Whitney U decides), `slow_db`
clearly worse over two runs (no overlap decides). The page is loaded without a key, given the key and the
experiment, and must draw the three charts with one series per variant and show each verdict. A screenshot
goes to test-artifacts/dashboard.png.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from playwright.sync_api import Browser, Page, Playwright, Route, expect, sync_playwright

from devkit.nightly import nightly_values, store_nightly
from experiments.models import ExperimentReport
from experiments.store import save_report

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VARIANTS = ["baseline", "cached", "slow_db"]  # the page orders the baseline first, then by name
CHART_METRICS = ["p50_ms", "p95_ms", "rps"]
START = datetime(2025, 11, 1, 9, 0, 0)
# Per variant: runs and each metric's value on run i (small run-to-run noise, clear differences between).
RUNS = {
    "baseline": (6, lambda i: {"p50_ms": 120 + 3 * (i % 3), "p95_ms": 350 + 9 * (i % 4), "rps": 20 + 0.4 * (i % 2)}),
    "cached": (6, lambda i: {"p50_ms": 12 + 0.5 * (i % 3), "p95_ms": 40 + 2 * (i % 4), "rps": 180 + 3 * (i % 2)}),
    "slow_db": (2, lambda i: {"p50_ms": 210 + 4 * i, "p95_ms": 640 + 10 * i, "rps": 11 + 0.5 * i}),
}
# The experiment's own figures: a custom Rate and the p95 of two endpoints named by the `name` tag.
CUSTOM = "cache_hit_rate:rate"
ENDPOINTS = {
    "GET /products": "http_req_duration{name:GET /products}:p(95)",
    "GET /products/:id": "http_req_duration{name:GET /products/:id}:p(95)",
}
OWN_FIGURES = {
    "baseline": lambda i: {
        CUSTOM: 0.01 * (i % 2),
        ENDPOINTS["GET /products"]: 400 + 5 * (i % 3),
        ENDPOINTS["GET /products/:id"]: 300 + 4 * (i % 3),
    },
    "cached": lambda i: {
        CUSTOM: 0.97 + 0.01 * (i % 2),
        ENDPOINTS["GET /products"]: 402 + 5 * (i % 3),
        ENDPOINTS["GET /products/:id"]: 35 + 2 * (i % 3),
    },
    "slow_db": lambda i: {
        CUSTOM: 0.0,
        ENDPOINTS["GET /products"]: 700 + 9 * i,
        ENDPOINTS["GET /products/:id"]: 600 + 8 * i,
    },
}


@dataclass
class Experiment:
    base_url: str
    api_key: str
    name: str


@pytest.fixture(scope="module")
def experiment(local_api, database_url: str) -> Experiment:
    """A uniquely named experiment stored the way the report function stores it (same code path)."""
    name = f"dashboard_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url) as conn:
        for offset, variant in enumerate(VARIANTS):
            runs, values = RUNS[variant]
            for i in range(runs):
                metrics = {**values(i), **OWN_FIGURES[variant](i), "error_rate": 0.0}
                at = START + timedelta(hours=2 * i, minutes=20 * offset)
                body = {"name": name, "variant": variant, "date": at.isoformat() + "Z", "metricsSummary": metrics}
                with conn.transaction():
                    save_report(conn, ExperimentReport.model_validate(body))
    return Experiment(local_api.url, local_api.api_key, name)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Debian's Chromium; Playwright gives it a fresh temporary profile (user-data-dir) and removes it after."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (as root), or `apt-get install -y chromium`")
    launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
    yield launched
    launched.close()


@dataclass
class Tab:
    """A page in its own browser context, with what it logged and requested."""

    page: Page
    problems: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def tab(browser: Browser) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
    page = context.new_page()
    opened = Tab(page)
    page.on("console", lambda m: opened.problems.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda error: opened.problems.append(str(error)))
    page.on("request", lambda request: opened.requests.append(request.url))
    yield opened
    context.close()


def open_dashboard(tab: Tab, url: str) -> None:
    response = tab.page.goto(url)
    assert response is not None
    assert response.status == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-store"
    assert "connect-src 'self'" in response.headers["content-security-policy"]


def show(page: Page, key: str, name: str) -> None:
    page.fill("#api-key", key)
    page.fill("#experiment", name)
    page.click("#load")


def series_pixels(page: Page, metric: str) -> dict[str, int]:
    """For each series in the chart's legend: how many canvas pixels have that series' colour."""
    return page.evaluate(
        """(metric) => {
            const box = [...document.querySelectorAll("#charts .chart")].find((b) => b.dataset.metric === metric);
            const canvas = box.querySelector("canvas");
            const image = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
            const counts = {};
            for (const row of box.querySelectorAll(".u-legend .u-series")) {
                const marker = row.querySelector(".u-marker");
                const label = row.querySelector(".u-label").textContent;
                const rgb = getComputedStyle(marker).borderColor.match(/\\d+/g).slice(0, 3).map(Number);
                if (label === "time") continue;
                let n = 0;
                for (let i = 0; i < image.length; i += 4) {
                    const d = Math.abs(image[i] - rgb[0]) + Math.abs(image[i + 1] - rgb[1])
                        + Math.abs(image[i + 2] - rgb[2]);
                    if (image[i + 3] > 200 && d < 40) n += 1;
                }
                counts[label] = n;
            }
            return counts;
        }""",
        metric,
    )


def chart(page: Page, metric: str):
    return page.locator(f'#charts .chart[data-metric="{metric}"]')


def wait_until_drawn(page: Page, metric: str) -> dict[str, int]:
    deadline = time.monotonic() + 5  # uPlot draws on its next micro task; give it a moment, not more
    while True:
        pixels = series_pixels(page, metric)
        if all(count >= 30 for count in pixels.values()) or time.monotonic() > deadline:
            return pixels
        time.sleep(0.1)


def verdicts(page: Page) -> dict[tuple[str, str], str]:
    rows = page.locator("#comparison tbody tr")
    found = {}
    for i in range(rows.count()):
        row = rows.nth(i)
        verdict = row.locator("td[data-verdict]")
        found[row.get_attribute("data-metric"), row.get_attribute("data-variant")] = verdict.get_attribute(
            "data-verdict"
        )
    return found


def test_dashboard_draws_charts_and_verdicts(tab: Tab, experiment: Experiment) -> None:
    page = tab.page
    open_dashboard(tab, f"{experiment.base_url}/dashboard")
    show(page, experiment.api_key, experiment.name)
    try:
        page.wait_for_selector("#comparison tbody tr")
        expect(page.locator(".chart canvas")).to_have_count(3)  # (wait_for_function would need the CSP's eval)
    finally:  # the artifact, whatever the page shows
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    for metric in CHART_METRICS:
        box = chart(page, metric)
        assert box.get_attribute("data-variants") == " ".join(VARIANTS)
        assert box.get_attribute("data-points") == str(sum(runs for runs, _ in RUNS.values()))
        pixels = wait_until_drawn(page, metric)
        assert sorted(pixels) == sorted(VARIANTS), pixels
        assert all(count >= 30 for count in pixels.values()), (metric, pixels)  # each series is drawn

    found = verdicts(page)
    for metric in CHART_METRICS:
        assert found[metric, "baseline"] == "baseline"
        assert found[metric, "cached"] == "better"
        assert found[metric, "slow_db"] == "worse"
    assert found["error_rate", "cached"] == "no_change"
    cached_p95 = page.locator('#comparison tr[data-metric="p95_ms"][data-variant="cached"]')
    assert re.search(r"\N{MINUS SIGN}8\d\.\d\s%", cached_p95.inner_text()), cached_p95.inner_text()  # 41 vs 354
    assert "Mann-Whitney U, p = " in cached_p95.inner_text()
    slow_rps = page.locator('#comparison tr[data-metric="rps"][data-variant="slow_db"]')
    assert "runs do not overlap" in slow_rps.inner_text()
    better = page.locator('#comparison tr[data-variant="cached"] .verdict').first
    worse = page.locator('#comparison tr[data-variant="slow_db"] .verdict').first
    assert better.evaluate("e => getComputedStyle(e).color") != worse.evaluate("e => getComputedStyle(e).color")
    assert page.locator("#error").is_hidden()

    # The key lives in this tab's session storage only: not in local storage, not in the URL.
    assert page.evaluate("Object.values(sessionStorage)") == [experiment.api_key]
    assert page.evaluate("localStorage.length") == 0
    assert experiment.api_key not in page.url
    assert all(experiment.api_key not in url for url in tab.requests)
    # Everything came from the API itself (no CDN), and the page's CSP let all of it run.
    assert all(url.startswith(experiment.base_url) or url.startswith("data:") for url in tab.requests), tab.requests
    assert tab.problems == []


def test_custom_metric_is_charted_and_endpoints_are_compared(tab: Tab, experiment: Experiment) -> None:
    page = tab.page
    open_dashboard(tab, f"{experiment.base_url}/dashboard")
    show(page, experiment.api_key, experiment.name)
    page.wait_for_selector("#comparison tbody tr")
    expect(page.locator(".chart canvas")).to_have_count(3)

    # The picker lists the experiment's keys grouped by k6 metric; searching narrows it; a tick draws a chart.
    page.click("#metric-picker summary")
    groups = page.locator("#metric-groups fieldset").evaluate_all("els => els.map(e => e.dataset.group)")
    assert "cache_hit_rate" in groups and "http_req_duration" in groups, groups
    page.fill("#metric-search", "hit")
    visible = page.locator("#metric-groups label:visible")
    assert visible.evaluate_all("els => els.map(e => e.dataset.metric)") == [CUSTOM]
    page.check(f'#metric-groups input[value="{CUSTOM}"]')
    expect(page.locator(".chart canvas")).to_have_count(4)
    assert chart(page, CUSTOM).get_attribute("data-points") == str(sum(runs for runs, _ in RUNS.values()))
    pixels = wait_until_drawn(page, CUSTOM)
    assert sorted(pixels) == sorted(VARIANTS) and all(count >= 30 for count in pixels.values()), pixels
    assert f"metric={CUSTOM.replace(':', '%3A')}" in page.url  # the choice is in the shareable URL
    # Charts read only the metrics they draw: the first read the three defaults, the new chart its own key.
    series_reads = [parse_qs(urlsplit(url).query) for url in tab.requests if "/experiments/series?" in url]
    assert [read["metric"] for read in series_reads] == [CHART_METRICS, [CUSTOM]]
    found = verdicts(page)
    assert found[CUSTOM, "cached"] == "better"  # a hit rate: higher is better, by its name

    # The comparison table covers every metric, and its filter narrows it.
    assert {metric for metric, _ in found} == {*CHART_METRICS, "error_rate", CUSTOM, *ENDPOINTS.values()}
    page.fill("#comparison-filter", "name:GET")
    shown_rows = page.locator("#comparison tbody tr:visible").evaluate_all("els => els.map(e => e.dataset.metric)")
    assert set(shown_rows) == set(ENDPOINTS.values())
    assert "2 of 7 metrics" in page.inner_text("#comparison-caption")

    # By tag: rows are the `name` values, columns the variants, each cell the p95 with its verdict.
    assert page.input_value("#by-tag-tag") == "name"
    assert page.input_value("#by-tag-metric") == "http_req_duration"
    assert page.input_value("#by-tag-stat") == "p(95)"
    rows = page.locator("#by-tag tbody tr")
    assert rows.evaluate_all("els => els.map(e => e.dataset.tagValue)") == sorted(ENDPOINTS)
    cell = page.locator('#by-tag tr[data-tag-value="GET /products/:id"] td[data-variant="cached"]')
    assert cell.get_attribute("data-verdict") == "better"
    assert cell.inner_text().startswith("37")  # the median of 35, 37, 39, ...
    assert (
        page.get_attribute('#by-tag tr[data-tag-value="GET /products"] td[data-variant="cached"]', "data-verdict")
        == "no_change"
    )
    assert (
        page.get_attribute('#by-tag tr[data-tag-value="GET /products"] td[data-variant="slow_db"]', "data-verdict")
        == "worse"
    )
    assert [h.strip() for h in page.locator("#by-tag thead th").all_inner_texts()] == ["name", *VARIANTS]

    # Reloading the shared URL draws the same charts.
    page.reload()
    expect(page.locator(".chart canvas")).to_have_count(4)
    assert chart(page, CUSTOM).count() == 1
    assert tab.problems == []


def colour_pixels(page: Page, metric: str, rgb: tuple[int, int, int]) -> int:
    """How many canvas pixels of the metric's chart have the colour `rgb`."""
    return page.evaluate(
        """([metric, rgb]) => {
            const box = [...document.querySelectorAll("#charts .chart")].find((b) => b.dataset.metric === metric);
            const canvas = box.querySelector("canvas");
            const image = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
            let n = 0;
            for (let i = 0; i < image.length; i += 4) {
                const d = Math.abs(image[i] - rgb[0]) + Math.abs(image[i + 1] - rgb[1])
                    + Math.abs(image[i + 2] - rgb[2]);
                if (image[i + 3] > 200 && d < 40) n += 1;
            }
            return n;
        }""",
        [metric, list(rgb)],
    )


def test_a_regression_otava_found_is_marked_on_its_chart_and_listed(
    tab: Tab, local_api: Any, database_url: str, regressions: Callable[..., Any]
) -> None:
    """A nightly history with a 15 % step at night 25, analysed by the real `scripts/regressions.py` (Otava)."""
    name = f"nightly_{uuid.uuid4().hex[:8]}"
    p95 = nightly_values(100.0, 40, step_at=25, step_pct=15, noise_pct=3, seed=3)
    with psycopg.connect(database_url) as conn:
        store_nightly(conn, name, "nightly", {"p95_ms": p95, "rps": nightly_values(50.0, 40, noise_pct=3, seed=4)})
    analysed = regressions(name, "--metric", "p95_ms")
    assert analysed.code == 0, analysed.stdout + analysed.stderr  # the step is older than the last 3 runs

    page = tab.page
    open_dashboard(tab, f"{local_api.url}/dashboard")
    show(page, local_api.api_key, name)
    page.wait_for_selector("#changes tbody tr")
    expect(page.locator(".chart canvas")).to_have_count(2)  # p95_ms and rps (no p50_ms stored)
    [row] = page.locator("#changes tbody tr").all()
    assert (row.get_attribute("data-metric"), row.get_attribute("data-variant")) == ("p95_ms", "nightly")
    assert row.get_attribute("data-verdict") == "worse"
    assert re.match(r"2026-01-2[567] ", row.inner_text()), row.inner_text()  # night 25 (+-1) of 2026-01-01 on
    assert chart(page, "p95_ms").get_attribute("data-changes") == "1"
    assert chart(page, "rps").get_attribute("data-changes") == "0"
    worse_red = (0xA4, 0x0E, 0x26)
    deadline = time.monotonic() + 5
    while colour_pixels(page, "p95_ms", worse_red) < 50 and time.monotonic() < deadline:
        time.sleep(0.1)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-changes.png"), full_page=True)
    assert colour_pixels(page, "p95_ms", worse_red) >= 50  # the dashed line is drawn
    assert colour_pixels(page, "rps", worse_red) == 0
    readback = "Canvas2D: Multiple readback operations"  # Chromium's hint about this test's own pixel reads
    assert [problem for problem in tab.problems if not problem.startswith(readback)] == []


@pytest.mark.parametrize("send", ["leave the field, then Show", "Enter in the key field"])
def test_wrong_key_is_refused_and_asked_again(tab: Tab, experiment: Experiment, send: str) -> None:
    page = tab.page
    open_dashboard(tab, f"{experiment.base_url}/dashboard")
    if send == "Enter in the key field":
        page.fill("#experiment", experiment.name)
        page.fill("#api-key", "not-the-key")
        page.press("#api-key", "Enter")
    else:
        show(page, "not-the-key", experiment.name)  # leaving the key field already asks for the names
    error = page.locator("#error")
    error.wait_for(state="visible")
    assert "refused (403 Forbidden)" in error.inner_text()
    assert "Enter the key again" in error.inner_text()
    assert page.input_value("#api-key") == ""
    assert page.get_attribute("#api-key", "aria-invalid") == "true"
    assert page.evaluate("sessionStorage.length") == 0
    assert page.locator("#comparison tbody tr").count() == 0
    assert page.locator(".chart canvas").count() == 0

    show(page, experiment.api_key, experiment.name)  # the right key then works
    page.wait_for_selector("#comparison tbody tr")
    assert error.is_hidden()


def test_unknown_experiment_says_so(tab: Tab, experiment: Experiment) -> None:
    page = tab.page
    open_dashboard(tab, f"{experiment.base_url}/dashboard")
    show(page, experiment.api_key, "no_such_experiment")
    error = page.locator("#error")
    error.wait_for(state="visible")
    assert "No experiment named “no_such_experiment” (404)" in error.inner_text()
    assert page.evaluate("Object.values(sessionStorage)") == [experiment.api_key]  # the key was fine


def test_names_are_offered_once_the_key_is_given(tab: Tab, experiment: Experiment) -> None:
    page = tab.page
    open_dashboard(tab, f"{experiment.base_url}/dashboard")
    page.fill("#api-key", experiment.api_key)
    page.press("#api-key", "Tab")  # `change` fires when the field is left
    page.wait_for_selector(f'#experiment-names option[value="{experiment.name}"]', state="attached")


def test_page_works_under_a_stage_path(tab: Tab, experiment: Experiment) -> None:
    """Deployed, the page is at /dev/dashboard: its requests must stay under /dev (relative URLs)."""
    page = tab.page
    outside: list[str] = []

    def stage(route: Route) -> None:
        url = route.request.url
        prefix = f"{experiment.base_url}/dev/"
        if url.startswith(prefix):
            route.fulfill(response=route.fetch(url=f"{experiment.base_url}/{url.removeprefix(prefix)}"))
        else:
            outside.append(url)
            route.abort()

    page.route(f"{experiment.base_url}/**", stage)
    open_dashboard(tab, f"{experiment.base_url}/dev/dashboard")
    show(page, experiment.api_key, experiment.name)
    page.wait_for_selector("#comparison tbody tr")
    expect(page.locator(".chart canvas")).to_have_count(3)
    assert outside == []
