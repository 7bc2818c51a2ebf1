"""Child servers for the demo, the tests and the benchmarks: start one, wait for its ready line, stop it.

Every server of this repository (the local API, the product service) prints `<what> on http://host:port ...`
once it listens; `--port 0` lets the OS choose a free port, so there is no race between choosing and binding.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 60.0


class ServerDidNotStart(RuntimeError):
    """The child exited, or printed no ready line in time; the message ends with its output."""


@dataclass
class ChildServer:
    """A started server: its URL and ready line, its log file, and how to stop it."""

    process: subprocess.Popen[bytes]
    url: str
    ready_line: str
    log: Path

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM (the servers shut down cleanly on it), SIGKILL if that does not end it in time."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(
    argv: Sequence[str], log: Path, ready_prefix: str, env: dict[str, str], timeout_s: float = READY_TIMEOUT_S
) -> ChildServer:
    """Start `argv` with its output appended to `log`; return once it printed `<ready_prefix> http://...`."""
    start = log.stat().st_size if log.exists() else 0  # a restarted server appends: look only at its own lines
    with log.open("ab") as out:
        process = subprocess.Popen(list(argv), cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with log.open("rb") as output:
            output.seek(start)
            for line in output.read().decode(errors="replace").splitlines():
                match = re.search(r"(http://\S+)", line) if line.startswith(ready_prefix) else None
                if match:
                    return ChildServer(process, match.group(1), line.strip(), log)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    if process.poll() is None:
        process.kill()
        process.wait()
    raise ServerDidNotStart(
        f"{' '.join(argv[:2])} did not become ready; its output:\n{log.read_text(errors='replace')}"
    )
