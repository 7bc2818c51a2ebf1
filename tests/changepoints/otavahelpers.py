"""Helpers of the change-point tests: where Otava's venv is, and what a run of regressions.py gave."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from support import REPO_ROOT

OUTSIDE_EFFECTS = frozenset({"GITHUB_STEP_SUMMARY", "SLACK_WEBHOOK_URL", "SLACK_BOT_TOKEN", "SLACK_CHANNEL"})
OTAVA_PYTHON = REPO_ROOT / ".venv-otava" / "bin" / "python"


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.stdout)


def quiet_environment() -> dict[str, str]:
    """This process's environment without what would make the script write a job summary or call Slack."""
    return {k: v for k, v in os.environ.items() if k not in OUTSIDE_EFFECTS}
