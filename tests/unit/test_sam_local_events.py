"""`make sam-local` (scripts/sam_local.py) reads each event's status from its name and its function from the template.

The run itself needs Docker and takes minutes, so CI runs it as `make sam-local`; these checks keep a new event
file from breaking it quietly.
"""

from __future__ import annotations

import json

import pytest

from support import REPO_ROOT, load_script

sam_local = load_script("sam_local")
EVENT_FILES = sorted(path for path in (REPO_ROOT / "events").glob("*.json") if path.name != "env.json")


@pytest.mark.parametrize("event_file", EVENT_FILES, ids=lambda path: path.name)
def test_every_event_file_names_a_status_and_reaches_a_template_function(event_file) -> None:
    assert 200 <= sam_local.expected_status(event_file) <= 599
    event = json.loads(event_file.read_text())
    assert sam_local.function_for(event) in {"ReportFunction", "QueryFunction"}


def test_every_event_file_is_invoked() -> None:
    assert sorted(sam_local.event_files()) == EVENT_FILES


def test_the_events_that_create_run_before_the_replays_and_conflicts_that_refer_to_them() -> None:
    statuses = [sam_local.expected_status(path) for path in sam_local.event_files()]
    first_other = next(index for index, status in enumerate(statuses) if status != 201)
    assert set(statuses[:first_other]) == {201}
    assert 201 not in statuses[first_other:]


def test_a_name_without_a_status_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="no status in the name"):
        sam_local.expected_status(tmp_path / "report_valid.json")
