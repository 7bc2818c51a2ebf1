"""The shared `experiments` table against Prisma's own tooling, from npm packages alone (issue 11 item 8).

- tests/prisma/migrate: Prisma 6.19's CLI on its wasm schema engine (`engine: "js"` + @prisma/adapter-pg):
  the DDL it generates for the model is ours; our migrations and `prisma migrate deploy` work in either
  order (ours first needs the baselining that scripts/migrate.py prints); `prisma db pull` of the live
  database, diffed against the model by `prisma migrate diff --exit-code`, finds no drift.
- tests/prisma/client: Prisma 7's client on @prisma/adapter-pg: it reads our rows field for field, and our
  API reads the rows it writes, whatever JSON their metadata holds.

No native Prisma engine is downloaded: PRISMA_SCHEMA_ENGINE_BINARY points at a stub that fails. The npm
projects are installed with `npm ci` once (a stamp in node_modules names the lock file's hash). Node 20+ and
npm are required; without them these tests fail, they are never skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote, urlencode

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from devkit.localdb import scratch_database
from experiments.migrations import PRISMA_BASELINE_HINT
from support import PRISMA_INIT_MIGRATION

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
PRISMA_DIR = REPO_ROOT / "tests" / "prisma"
MIGRATE_DIR = PRISMA_DIR / "migrate"
CLIENT_DIR = PRISMA_DIR / "client"
OUR_MIGRATION = REPO_ROOT / "db" / "migrations" / "0001_experiments.sql"
BASELINE_COMMAND = "prisma migrate resolve --applied"

Run = Callable[..., subprocess.CompletedProcess]


# --- running npm, node and the Prisma CLI ---------------------------------------------------------------------


def node_url(conninfo: str) -> str:
    """A libpq conninfo (what scratch_database yields) as the postgresql:// URL node-postgres takes."""
    params = conninfo_to_dict(conninfo)
    auth = quote(params.get("user", ""), safe="")
    if params.get("password"):
        auth += ":" + quote(params["password"], safe="")
    host, port, query = params.get("host", "localhost"), params.get("port"), {}
    if host.startswith("/"):  # a Unix socket folder (the embedded PostgreSQL)
        query = {"host": host, **({"port": port} if port else {})}
        netloc = f"{auth}@" if auth else ""
    else:
        netloc = (f"{auth}@" if auth else "") + host + (f":{port}" if port else "")
    return f"postgresql://{netloc}/{quote(params['dbname'], safe='')}" + (f"?{urlencode(query)}" if query else "")


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"`{name}` is not on PATH. tests/integration/test_prisma.py checks the shared table with Prisma's own "
            "tooling and needs Node.js 20 (>= 20.19) and npm: install them (Debian: apt-get install nodejs npm).",
            pytrace=False,
        )
    return path


def run_in(folder: Path, args: list[str], *, database: str | None = None, check: bool = True):
    """Run a command in an npm project, with Prisma kept offline: no engine download, no update check."""
    env = {
        **os.environ,
        "PRISMA_SCHEMA_ENGINE_BINARY": str(PRISMA_DIR / "no-native-engine.sh"),
        "CHECKPOINT_DISABLE": "1",
        "PRISMA_HIDE_UPDATE_MESSAGE": "1",
        "NO_COLOR": "1",
        # Without DATABASE_URL, Prisma cannot read migrate/schema.prisma's datasource and falls back to
        # downloading a native query engine; every command here is given a database.
        **({"DATABASE_URL": node_url(database)} if database else {}),
    }
    result = subprocess.run(args, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        pytest.fail(
            f"`{' '.join(args)}` in {folder.relative_to(REPO_ROOT)} exited {result.returncode}:\n"
            f"{result.stdout}\n{result.stderr}",
            pytrace=False,
        )
    return result


def npm_project(folder: Path) -> None:
    """`npm ci` the project unless node_modules already holds what its lock file names."""
    node, npm = tool("node"), tool("npm")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    major, minor = (int(part) for part in version.lstrip("v").split(".")[:2])
    if (major, minor) < (20, 19):
        pytest.fail(f"Prisma 7 needs Node.js >= 20.19; this is {version}", pytrace=False)
    lock_hash = hashlib.sha256((folder / "package-lock.json").read_bytes()).hexdigest()[:16]
    stamp = folder / "node_modules" / f".installed-{lock_hash}"
    if not stamp.exists():
        run_in(folder, [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"])
        stamp.touch()


@pytest.fixture(scope="session")
def prisma6() -> Run:
    """Prisma 6.19's CLI in tests/prisma/migrate: `prisma6("migrate", "deploy", database=url)`."""
    npm_project(MIGRATE_DIR)
    cli = str(MIGRATE_DIR / "node_modules" / ".bin" / "prisma")
    return lambda *args, **kwargs: run_in(MIGRATE_DIR, [cli, *args], **kwargs)


@pytest.fixture(scope="session")
def prisma7_client() -> Callable[..., object]:
    """Prisma 7's generated client, through check.cjs: `prisma7_client("read", name, database=url)`."""
    npm_project(CLIENT_DIR)
    run_in(CLIENT_DIR, [str(CLIENT_DIR / "node_modules" / ".bin" / "prisma"), "generate"])
    node = tool("node")

    def call(*args: str, database: str) -> object:
        return json.loads(run_in(CLIENT_DIR, [node, "check.cjs", *args], database=database).stdout)

    return call


@pytest.fixture
def empty_database(server_url: str) -> Iterator[str]:
    """A database of its own, not migrated by anyone yet; dropped afterwards."""
    with scratch_database(server_url, "k6exp_prisma", migrate=False) as url:
        yield url


def our_migrate(url: str) -> str:
    """scripts/migrate.py against `url`, as a user runs it; its output."""
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "migrate.py")],
        cwd=REPO_ROOT,
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout


def assert_no_drift(prisma6: Run, url: str, tmp_path: Path) -> None:
    """Prisma introspects the live database and diffs it against the model: nothing to change."""
    pulled = prisma6("db", "pull", "--print", database=url).stdout
    # The schema starts at its first block; before it, 6.19 prints a warning on stdout (the datasource's `url`,
    # which the adapter replaces, is still needed for 6.19 to read the schema at all).
    live = tmp_path / "live.prisma"
    live.write_text(pulled[re.search(r"^(generator|datasource) ", pulled, re.MULTILINE).start() :])
    diff = prisma6(
        "migrate", "diff", "--from-schema-datamodel", str(live), "--to-schema-datamodel", "schema.prisma",
        "--exit-code", database=url, check=False,
    )  # fmt: skip
    assert diff.returncode == 0, f"drift (exit {diff.returncode}):\n{diff.stdout}\n{diff.stderr}"


def assert_up_to_date(prisma6: Run, url: str) -> None:
    status = prisma6("migrate", "status", database=url)
    assert "Database schema is up to date" in status.stdout, status.stdout


def statements(script: str) -> list[str]:
    """The `experiments` DDL of a script, one normalised statement each: no comments, no IF NOT EXISTS,
    no `CREATE SCHEMA "public"` (Prisma 6.19 adds it), nothing of schema `ingest`."""
    without_comments = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("--"))
    found = []
    for statement in without_comments.split(";"):
        text = " ".join(statement.split()).replace(" IF NOT EXISTS", "")
        if text and not text.startswith("CREATE SCHEMA") and "ingest." not in text:
            found.append(text)
    return found


# --- the model in both projects -------------------------------------------------------------------------------


def model_block(schema: Path) -> str:
    return re.search(r"^model Experiment \{.*?^\}", schema.read_text(), re.MULTILINE | re.DOTALL).group(0)


def test_both_prisma_projects_hold_the_same_model() -> None:
    assert model_block(MIGRATE_DIR / "schema.prisma") == model_block(CLIENT_DIR / "schema.prisma")


# --- Prisma 6.19's CLI: DDL, both orders of migration, drift -----------------------------------------------------


def test_prisma_generates_our_ddl(prisma6: Run, empty_database: str, tmp_path: Path) -> None:
    script = tmp_path / "generated.sql"
    generate = ["--from-empty", "--to-schema-datamodel", "schema.prisma", "--script", "-o", str(script)]
    prisma6("migrate", "diff", *generate, database=empty_database)  # connects (the adapter) though it reads nothing
    generated = script.read_text()

    # The backend's init migration is exactly what Prisma generates.
    assert generated == PRISMA_INIT_MIGRATION.read_text()
    assert statements(generated) == statements(OUR_MIGRATION.read_text())
    assert len(statements(generated)) == 5  # the table and its four indexes


def test_prisma_deploys_after_our_migrations_once_baselined(prisma6: Run, empty_database: str, tmp_path: Path) -> None:
    url = empty_database
    output = our_migrate(url)
    assert "applied: 0001_experiments" in output
    assert BASELINE_COMMAND in output  # the hint, since Prisma never migrated this database

    refused = prisma6("migrate", "deploy", database=url, check=False)
    assert refused.returncode != 0
    assert "P3005" in refused.stdout + refused.stderr

    prisma6("migrate", "resolve", "--applied", "0_init", database=url)
    prisma6("migrate", "deploy", database=url)
    assert_up_to_date(prisma6, url)
    assert_no_drift(prisma6, url, tmp_path)

    with psycopg.connect(url, autocommit=True) as conn:  # the drift check can fail
        conn.execute('DROP INDEX "experiments_metric_idx"')
    with pytest.raises(AssertionError, match="drift"):
        assert_no_drift(prisma6, url, tmp_path)


def test_our_migrations_after_prisma_deploy_change_nothing_prisma_sees(
    prisma6: Run, empty_database: str, tmp_path: Path
) -> None:
    url = empty_database
    prisma6("migrate", "deploy", database=url)

    output = our_migrate(url)
    assert "applied: 0001_experiments" in output
    assert BASELINE_COMMAND not in output  # Prisma created the table: nothing to baseline

    assert_up_to_date(prisma6, url)
    assert_no_drift(prisma6, url, tmp_path)


def test_migrate_script_hints_at_baselining_only_when_it_creates_the_table(empty_database: str) -> None:
    url = empty_database
    assert PRISMA_BASELINE_HINT in our_migrate(url)
    assert our_migrate(url).strip() == "up to date: nothing to apply"


# --- Prisma 7's client: our rows, its rows ----------------------------------------------------------------------

REPORT = {
    "name": "prisma_reads_ours",
    "variant": "baseline",
    "date": "2025-11-01T12:00:00.123Z",
    "notes": "written by our API",
    "metricsSummary": {"p50_ms": 120, "p95_ms": 350.5, "avg_ms": 140.2, "rps": 20, "error_rate": 0.0001},
    "metadata": {"vus": 20, "duration": "30s", "nested": {"list": [1, "two", None, True]}},
}


def test_prisma_reads_our_rows_field_for_field(prisma7_client, post, get, db, database_url: str) -> None:
    stored = post(REPORT)
    assert stored.status == 201, stored.body
    ours = {row["id"]: row for row in get("/experiments", {"name": REPORT["name"]}).body["items"]}

    theirs = {row["id"]: row for row in prisma7_client("read", REPORT["name"], database=database_url)}

    assert set(theirs) == set(ours) == set(stored.body["ids"].values())
    for row_id, prisma_row in theirs.items():
        our_row = ours[row_id]
        assert set(prisma_row) == set(our_row)
        for field in ("id", "name", "description", "variant", "metric", "metadata", "createdAt"):
            assert prisma_row[field] == our_row[field], field
        assert Decimal(prisma_row["value"]) == Decimal(str(our_row["value"]))
        assert Decimal(prisma_row["value"]) == Decimal(str(REPORT["metricsSummary"][prisma_row["metric"]]))


# Metadata as Prisma's `Json?` allows it: any JSON value, JSON null, SQL NULL ("DbNull").
PRISMA_METADATA = [[1, 2], "x", 3, None, "DbNull", True, {"directions": {"higher": 3, "lower": "p9*"}}, {"ok": 1}]


def test_our_api_reads_rows_prisma_wrote(prisma7_client, get, db, database_url: str, tmp_path: Path) -> None:
    rows = [
        {
            "name": "prisma_wrote",
            "variant": "baseline" if i % 2 else "cached",
            "metric": "p95_ms",
            "value": str(100 + i) if i % 2 else f"{50 + i}.1234",
            "metadata": metadata,
            "createdAt": f"2025-11-01T12:0{i}:00.000Z",
        }
        for i, metadata in enumerate(PRISMA_METADATA)
    ]
    wanted = tmp_path / "rows.json"
    wanted.write_text(json.dumps(rows))
    written = {row["id"]: row for row in prisma7_client("write", str(wanted), database=database_url)}

    page = get("/experiments", {"name": "prisma_wrote"})
    assert page.status == 200, page.body
    ours = {row["id"]: row for row in page.body["items"]}
    assert set(ours) == set(written)
    for row_id, prisma_row in written.items():
        for field in ("name", "description", "variant", "metric", "metadata", "createdAt"):
            assert ours[row_id][field] == prisma_row[field], field
        assert Decimal(str(ours[row_id]["value"])) == Decimal(prisma_row["value"])

    comparison = get("/experiments/compare", {"name": "prisma_wrote"})
    assert comparison.status == 200, comparison.body
    (metric,) = comparison.body["metrics"]
    assert [(v["variant"], v["runs"]) for v in metric["variants"]] == [("baseline", 4), ("cached", 4)]
    assert metric["variants"][1]["verdict"] == "better"  # p95_ms about halved
