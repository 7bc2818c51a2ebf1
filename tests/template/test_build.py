"""What `sam build` produces is what gets deployed: it must run, and be built for the right machine.

The x86_64 build runs here: each handler is imported by a bare `python3.12 -I -S` whose only paths are the
build's function folder and layer (nothing from .venv), and processes real events against a real PostgreSQL.
The arm64 build (the default) cannot run on this machine, so it is checked file by file: every compiled
library is aarch64 and every pinned requirement is installed.
"""

from __future__ import annotations

import json
import struct
from importlib.metadata import Distribution, distributions
from pathlib import Path
from typing import Any

import psycopg
import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from template.samhelpers import REPO_ROOT, function_environment, invoke_built

EVENTS_DIR = REPO_ROOT / "events"
ELF_MACHINE = {"x86_64": 62, "arm64": 183}  # e_machine: EM_X86_64, EM_AARCH64
# Markers are evaluated for the Lambda runtime, not for this machine.
LAMBDA_MARKERS = {"arm64": "aarch64", "x86_64": "x86_64"}


def elf_machine(path: Path) -> int | None:
    """The ELF header's e_machine, or None when the file is not an ELF binary."""
    with path.open("rb") as file:
        header = file.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    byte_order = "<" if header[5] == 1 else ">"
    return struct.unpack(f"{byte_order}H", header[18:20])[0]


def compiled_files(layer_python: Path) -> list[Path]:
    return [path for path in layer_python.rglob("*") if path.is_file() and elf_machine(path) is not None]


@pytest.mark.parametrize("architecture", ["arm64", "x86_64"])
def test_every_compiled_file_in_the_layer_is_for_the_chosen_architecture(
    sam_builds: dict[str, Path], architecture: str
) -> None:
    layer_python = sam_builds[architecture] / "CommonLayer" / "python"
    binaries = compiled_files(layer_python)
    names = {path.name.split(".")[0] for path in binaries}
    assert {"_pydantic_core", "_psycopg"} <= names, f"expected compiled wheels, found {sorted(names)}"
    wrong = {str(path.relative_to(layer_python)): elf_machine(path) for path in binaries}
    wrong = {name: machine for name, machine in wrong.items() if machine != ELF_MACHINE[architecture]}
    assert not wrong, f"not {architecture}: {wrong}"


def installed(layer_python: Path) -> dict[str, Distribution]:
    return {canonicalize_name(dist.metadata["Name"]): dist for dist in distributions(path=[str(layer_python)])}


def lambda_marker_environment(architecture: str) -> dict[str, str]:
    """Marker values of the Lambda runtime (not of this machine), to follow conditional dependencies."""
    return {
        **default_environment(),
        "python_version": "3.12",
        "python_full_version": "3.12.0",
        "platform_machine": LAMBDA_MARKERS[architecture],
        "sys_platform": "linux",
        "platform_system": "Linux",
        "implementation_name": "cpython",
    }


def needed(dependency: Requirement, extras: set[str], environment: dict[str, str]) -> bool:
    if dependency.marker is None:
        return True
    return any(dependency.marker.evaluate({**environment, "extra": extra}) for extra in extras or {""})


def test_default_build_is_arm64_with_every_pinned_requirement(sam_builds: dict[str, Path]) -> None:
    """Every pin of layers/common/requirements.txt, its extras and all they depend on, installed and complete."""
    layer_python = sam_builds["arm64"] / "CommonLayer" / "python"
    dists = installed(layer_python)
    environment = lambda_marker_environment("arm64")
    lines = (REPO_ROOT / "layers" / "common" / "requirements.txt").read_text().splitlines()
    pins = [Requirement(line.split("#")[0].strip()) for line in lines if line.split("#")[0].strip()]
    assert pins
    pending = [(pin, set(pin.extras)) for pin in pins]
    seen: set[str] = set()
    while pending:
        requirement, extras = pending.pop()
        name = canonicalize_name(requirement.name)
        assert name in dists, f"{requirement} is not in the layer"
        version = dists[name].version
        assert requirement.specifier.contains(version, prereleases=True), f"{requirement}: the layer has {version}"
        if name in seen:
            continue
        seen.add(name)
        files = [file for file in dists[name].files or [] if file.suffix in {".py", ".so"}]
        missing = [str(file) for file in files if not file.locate().exists()]
        assert not missing, f"{name}: files listed in its RECORD are missing: {missing[:5]}"
        for dependency in map(Requirement, dists[name].requires or []):
            if needed(dependency, extras, environment):
                pending.append((dependency, set(dependency.extras)))
    # The extras were followed: [binary] brings the compiled driver.
    assert {"psycopg-binary", "pydantic-core"} <= seen
    # The experiments package itself, importable by name from the layer's python/ folder.
    assert (layer_python / "experiments" / "__init__.py").is_file()
    assert (layer_python / "experiments" / "auth.py").is_file()
    # Where DB_CA_BUNDLE=certs/<bundle>.pem points (experiments.config resolves it against this folder).
    assert (layer_python / "certs" / "README.md").is_file()


AWS_SDK = {"boto3", "botocore", "s3transfer", "aws-xray-sdk"}


@pytest.mark.parametrize("architecture", ["arm64", "x86_64"])
def test_the_layer_ships_no_aws_sdk(sam_builds: dict[str, Path], architecture: str) -> None:
    """The Lambda runtime's boto3 and botocore are the ones used (by Powertools parameters, for Secrets Manager):
    a copy in the layer would shadow them and pair with the runtime's boto3 by chance (aws-xray-sdk brought one)."""
    layer_python = sam_builds[architecture] / "CommonLayer" / "python"
    assert not AWS_SDK & set(installed(layer_python)), sorted(AWS_SDK & set(installed(layer_python)))
    packages = {path.name for path in layer_python.iterdir() if path.is_dir()}
    assert not {"boto3", "botocore", "s3transfer", "aws_xray_sdk"} & packages


def test_migrations_are_packaged_with_the_migrate_function(sam_builds: dict[str, Path]) -> None:
    for build in sam_builds.values():
        packaged = build / "MigrateFunction" / "migrations"
        assert packaged.is_dir() and not packaged.is_symlink()  # a real copy in the zip, not a dangling link
        source = sorted((REPO_ROOT / "db" / "migrations").glob("*.sql"))
        assert source and [path.name for path in sorted(packaged.glob("*.sql"))] == [path.name for path in source]
        for path in source:
            assert (packaged / path.name).read_bytes() == path.read_bytes()


def test_each_function_folder_holds_only_its_handler(sam_builds: dict[str, Path]) -> None:
    """Dependencies live in the layer, once; a function zip with its own copy would shadow it."""
    for name in ("ReportFunction", "AuthorizerFunction", "MigrateFunction"):
        contents = {path.name for path in (sam_builds["x86_64"] / name).iterdir()}
        assert contents <= {"app.py", "migrations", "__pycache__"}, f"{name}: {contents}"


PYC_HASH_BASED = 0b01  # the pyc header's flags (PEP 552): bit 0 hash-based, bit 1 check the source's hash


def test_every_module_ships_as_bytecode_for_python312(sam_builds: dict[str, Path]) -> None:
    """`make build` compiles what sam build produced: Lambda's folders are read-only, so a module without bytecode
    would be compiled from source on every cold start. Unchecked (the files never change), with deployed paths."""
    build = sam_builds["arm64"]  # never run here, so no bytecode of a local run can be in it
    functions = ("ReportFunction", "QueryFunction", "AuthorizerFunction", "MigrateFunction")
    deployed = {build / "CommonLayer" / "python": "/opt/python"} | {build / name: "/var/task" for name in functions}
    for root, prefix in deployed.items():
        sources = sorted(root.rglob("*.py"))
        assert len(sources) > (100 if prefix == "/opt/python" else 0), root
        problems = []
        for source in sources:
            compiled = source.parent / "__pycache__" / f"{source.stem}.cpython-312.pyc"
            if not compiled.is_file():
                problems.append(f"no bytecode: {source.relative_to(build)}")
                continue
            header = compiled.read_bytes()
            flags = int.from_bytes(header[4:8], "little")
            deployed_path = f"{prefix}/{source.relative_to(root)}".encode()
            if flags != PYC_HASH_BASED or deployed_path not in header:
                problems.append(f"{compiled.relative_to(build)}: flags {flags:#b}, {deployed_path!r} missing")
        assert not problems, problems[:10]


def event_files() -> list[Path]:
    """events/report_<status>_*.json, the 201s first: the replay and the conflict refer to a stored report."""
    files = sorted(EVENTS_DIR.glob("report_*.json"))
    return sorted(files, key=lambda path: (path.name.split("_")[1] != "201", path.name))


@pytest.mark.integration
def test_built_report_function_answers_every_event_file(
    sam_builds: dict[str, Path],
    python312: Path,
    cfn: dict[str, Any],
    database_url: str,
    db: psycopg.Connection,
) -> None:
    build = sam_builds["x86_64"]
    files = event_files()
    assert len(files) >= 4
    env = {**function_environment(cfn, "ReportFunction"), "DATABASE_URL": database_url}

    report = invoke_built(
        python312,
        build / "ReportFunction",
        build / "CommonLayer",
        [json.loads(path.read_text()) for path in files],
        env,
    )

    for module, origin in report["origins"].items():
        assert origin and origin.startswith(str(build / "CommonLayer" / "python")), f"{module} from {origin}"
    stored_metrics = 0
    for path, outcome in zip(files, report["results"], strict=True):
        assert "result" in outcome, f"{path.name}: {outcome.get('traceback')}\n{report['log'][-3000:]}"
        expected = int(path.name.split("_")[1])
        answer = outcome["result"]
        assert answer["statusCode"] == expected, f"{path.name}: {answer}"
        if expected == 201:
            stored_metrics += len(json.loads(answer["body"])["ids"])
    count = db.execute("SELECT count(*) FROM experiments").fetchone()[0]
    assert count == stored_metrics > 0


@pytest.mark.parametrize(
    ("headers", "effect", "key"),
    [
        ({"X-Api-Key": "abc"}, "Allow", "abc"),
        ({"Authorization": "Bearer abc"}, "Allow", "abc"),
        ({"Accept": "application/json"}, "Deny", None),
    ],
)
def test_built_authorizer_finds_the_key(
    sam_builds: dict[str, Path],
    python312: Path,
    cfn: dict[str, Any],
    headers: dict[str, str],
    effect: str,
    key: str | None,
) -> None:
    build = sam_builds["x86_64"]
    event = {
        "type": "REQUEST",
        "methodArn": "arn:aws:execute-api:eu-west-1:123456789012:abc123/dev/POST/experiments/report",
        "headers": headers,
        "httpMethod": "POST",
        "path": "/experiments/report",
    }
    report = invoke_built(
        python312,
        build / "AuthorizerFunction",
        build / "CommonLayer",
        [event],
        function_environment(cfn, "AuthorizerFunction"),
    )
    [outcome] = report["results"]
    assert "result" in outcome, outcome.get("traceback")
    assert outcome["result"]["policyDocument"]["Statement"][0]["Effect"] == effect
    assert outcome["result"].get("usageIdentifierKey") == key


@pytest.mark.parametrize("architecture", ["arm64", "x86_64"])
def test_layer_ships_the_certs_folder_and_psycopgs_openssl_has_no_roots_of_its_own_in_lambda(
    sam_builds: dict[str, Path], architecture: str
) -> None:
    """DB_CA_BUNDLE names /opt/python/certs/<file>; without one, SSL_CERT_FILE must give libpq its roots.

    The OpenSSL in psycopg's wheel looks for default roots under its build-time OPENSSLDIR, which no Lambda
    runtime has: if a new wheel changes that, the template's SSL_CERT_FILE needs a second look.
    """
    layer_python = sam_builds[architecture] / "CommonLayer" / "python"  # /opt/python in Lambda
    assert (layer_python / "certs" / "README.md").is_file()
    [libcrypto] = (layer_python / "psycopg_binary.libs").glob("libcrypto-*.so*")
    assert b'OPENSSLDIR: "/usr/lib/psycopg-openssl"' in libcrypto.read_bytes()
