"""One rule for names and variants (issue 10, item 8), checked by one table: the rule, the report model, the
query parameters' model and the reporter CLI all give the outcome `support.NAME_CASES` lists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from experiments.models import ExperimentReport
from experiments.names import experiment_label
from support import NAME_CASES, load_reporter

rk = load_reporter()
CASES = pytest.mark.parametrize(("text", "stored"), NAME_CASES.values(), ids=NAME_CASES.keys())


@CASES
def test_the_rule(text: str, stored: str | None) -> None:
    if stored is None:
        with pytest.raises(ValueError, match="must not"):
            experiment_label(text)
    else:
        assert experiment_label(text) == stored


@CASES
@pytest.mark.parametrize("field", ["name", "variant"])
def test_the_report_model(text: str, stored: str | None, field: str) -> None:
    body = {"name": "n", "variant": "v", "metricsSummary": {"p95_ms": 1}, field: text}
    if stored is None:
        with pytest.raises(ValidationError) as caught:
            ExperimentReport.model_validate(body)
        assert [error["loc"] for error in caught.value.errors()] == [(field,)]
    else:
        assert getattr(ExperimentReport.model_validate(body), field) == stored


@CASES
def test_a_variant_taken_from_the_name_follows_the_rule_too(text: str, stored: str | None) -> None:
    body = {"name": f"exp_{text}", "metricsSummary": {"p95_ms": 1}}
    if stored is None:
        with pytest.raises(ValidationError):
            ExperimentReport.model_validate(body)
    else:
        assert ExperimentReport.model_validate(body).variant == stored


@CASES
@pytest.mark.parametrize("option", ["name", "--variant", "--compare-to"])
def test_the_reporter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, stored: str | None, option: str
) -> None:
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"metrics": {"http_reqs": {"count": 10, "rate": 2.0}}}))
    name = text if option == "name" else "exp"
    extra = [option, text] if option != "name" else ["--variant", "v"]
    code = rk.main([str(summary), "http://127.0.0.1:9", "key", name, *extra, "--dry-run"])
    out, err = capsys.readouterr()
    if stored is None:
        assert code == rk.EXIT_USAGE
        assert "must not" in err
    else:
        assert code == rk.EXIT_OK, err
        payload = json.loads(out)
        if option != "--compare-to":
            assert payload[option.lstrip("-")] == stored
