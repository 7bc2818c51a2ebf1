"""`make sam-local`: the real SAM CLI runs the built functions in Docker against a real PostgreSQL.

1. A Docker engine: the one that answers, else (as root) Debian's `dockerd --iptables=false`, stopped at the end.
2. The Lambda base image for this machine's architecture: AWS's (public.ecr.aws/lambda/python:3.12-<arch>) when it
   can be pulled, else a stand-in built once from Debian packages (devkit/lambda_standin/, see `build_standin`).
3. `sam build` for this machine's architecture (samconfig.toml says arm64, which would need QEMU here).
4. A scratch database, migrated, reached from the containers as host.docker.internal: a small TCP relay listens on
   the Docker bridge's address and forwards to the PostgreSQL server (which may listen on 127.0.0.1 only).
5. `sam local invoke` on every events/*.json, which is named for the status it must get; then
   `sam local start-api` and HTTP checks of every route.

Everything it started is stopped and removed at the end (containers, relay, dockerd, the scratch databases); the
images (stand-in, SAM's per-layer images) and the build folder stay as caches. Prints "N passed, M failed" and
exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode
from urllib.request import Request, urlopen

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from devkit.localdb import database_url, scratch_database

REPO_ROOT = Path(__file__).resolve().parents[1]
EVENTS_DIR = REPO_ROOT / "events"
SAM_VENV = REPO_ROOT / ".venv-sam"
STANDIN_DIR = REPO_ROOT / "devkit" / "lambda_standin"
WORK_DIR = REPO_ROOT / ".aws-sam" / "sam-local"  # build output and caches (.aws-sam is git-ignored)

AWS_IMAGE = "public.ecr.aws/lambda/python:3.12-{arch}"
STANDIN_IMAGE = "k6-experiments/lambda-python-standin:3.12-{arch}"
STANDIN_LABEL = "k6-experiments.standin"  # hash of what the image is built from: a change rebuilds it
DEBIAN_SUITE = "bookworm"
# Shared libraries that Python's standard library modules load, plus CA certificates for boto3.
DEBIAN_PACKAGES = (
    "ca-certificates,libssl3,libffi8,libsqlite3-0,libexpat1,libbz2-1.0,liblzma5,zlib1g,libuuid1,"
    "libreadline8,libncursesw6,libnsl2,libtirpc3,libgdbm6"
)
# What AWS's python3.12 image has besides Python: the runtime interface client and boto3.
RUNTIME_PACKAGES = ("awslambdaric==4.2.2",)
PYTHON_PACKAGES = ("boto3==1.44.8",)
# Parts of a Python installation a Lambda runtime does not ship (AWS's image has no tkinter and no test suite).
PYTHON_SKIP = {"test", "idlelib", "tkinter", "turtledemo", "site-packages", "ensurepip", "lib2to3"}

API_KEY = f"sam-local-{uuid.uuid4().hex[:12]}"  # start-api checks no usage plan: any non-empty key is let in
HTTP_TIMEOUT_S = 60.0
SIOCGIFADDR = 0x8915  # Linux ioctl: an interface's IPv4 address
START_API_TIMEOUT_S = 180.0


STARTED = time.monotonic()


def log(message: str) -> None:
    print(f"[sam-local {time.monotonic() - STARTED:5.0f} s] {message}", flush=True)


def run(command: list[str | Path], *, timeout: float = 600, check: bool = True, **kwargs: Any) -> str:
    """Run a command, return its stdout; on failure raise with its output (check=False: return it anyway)."""
    done = subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


@dataclass
class Checks:
    """Each check's outcome, printed as it happens; the summary line at the end."""

    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def record(self, name: str, ok: bool, detail: str = "") -> bool:
        (self.passed if ok else self.failed).append(name)
        print(f"  {'PASS' if ok else 'FAIL'} {name}{'' if ok or not detail else ': ' + detail}", flush=True)
        return ok

    def summary(self) -> str:
        return f"sam-local: {len(self.passed)} passed, {len(self.failed)} failed"


# --------------------------------------------------------------------------- Docker


def docker_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


@contextlib.contextmanager
def docker_engine(log_file: Path) -> Iterator[None]:
    """The Docker engine that answers; else, as root, `dockerd --iptables=false` for as long as this runs.

    `--iptables=false`: these machines allow no netfilter changes. Containers then have no route out, which they do
    not need: they reach PostgreSQL through the bridge's own address (see `TcpRelay`).
    """
    if shutil.which("docker") and docker_answers():
        yield
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None or os.geteuid() != 0:
        raise RuntimeError(
            "no Docker engine answers `docker info`, and this script can start one only as root with dockerd "
            "installed (Debian: apt-get install docker.io); start Docker and run it again"
        )
    log(f"starting {dockerd} --iptables=false (log: {log_file})")
    with log_file.open("ab") as out:
        process = subprocess.Popen([dockerd, "--iptables=false"], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not docker_answers():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not start:\n{log_file.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        yield
    finally:
        log("stopping the dockerd it started")
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def lambda_containers() -> set[str]:
    """Ids of the containers SAM created for functions (it labels them), running or not."""
    out = run(["docker", "ps", "-aq", "--filter", "label=sam.cli.container.type=lambda"], check=False)
    return set(out.split())


def bridge_gateway() -> str:
    """The host's address on Docker's default bridge (docker0): what containers reach the host at."""
    inspect = ["docker", "network", "inspect", "bridge", "-f"]
    gateway = run([*inspect, "{{range .IPAM.Config}}{{.Gateway}}{{end}}"]).strip()
    if gateway:
        return gateway
    # Without a configured address (dockerd picks one), the bridge interface's own IPv4 address is the gateway.
    interface = run([*inspect, '{{index .Options "com.docker.network.bridge.name"}}']).strip() or "docker0"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        request = struct.pack("256s", interface.encode()[:15])
        return socket.inet_ntoa(fcntl.ioctl(probe.fileno(), SIOCGIFADDR, request)[20:24])


def host_architecture() -> str:
    """This machine's Lambda architecture name: x86_64 or arm64."""
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        return "x86_64"
    if machine in ("aarch64", "arm64"):
        return "arm64"
    raise RuntimeError(f"Lambda has no architecture for this machine ({machine})")


def image_exists(image: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False).returncode == 0


# --------------------------------------------------------------------------- the Lambda base image


def python312() -> tuple[Path, Path]:
    """A Python 3.12 installation of this machine to copy into the stand-in: (executable, its prefix).

    `sam build` needs the same python3.12 (on PATH, or pyenv's next to the active version, like `make build`).
    """
    env = dict(os.environ)
    candidates: list[str] = []
    if shutil.which("python3.12"):
        candidates.append("python3.12")
    pyenv = shutil.which("pyenv")
    if pyenv:
        versions = run([pyenv, "versions", "--bare"], check=False).split()
        found = sorted((v for v in versions if re.fullmatch(r"3\.12\.\d+", v)), key=lambda v: int(v.split(".")[2]))
        root = run([pyenv, "root"], check=False).strip()
        candidates += [str(Path(root) / "versions" / v / "bin" / "python3.12") for v in reversed(found)]
    for candidate in candidates:
        probe = [candidate, "-c", "import sys; print(sys.executable); print(sys.base_prefix)"]
        done = subprocess.run(probe, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            continue
        executable, prefix = (Path(line) for line in done.stdout.split())
        if prefix not in (Path("/usr"), Path("/")):  # a distribution's Python is spread over /usr: not copyable
            return executable.resolve(), prefix
    raise RuntimeError("the stand-in image needs a self-contained Python 3.12 installation (pyenv or /opt style)")


def debian_mirror() -> str:
    """DEBIAN_MIRROR, else the mirror this machine's apt uses for Debian's main suites, else deb.debian.org."""
    if os.environ.get("DEBIAN_MIRROR"):
        return os.environ["DEBIAN_MIRROR"]
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        for stanza in sources.read_text().split("\n\n"):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.+)$", stanza, flags=re.MULTILINE))
            if DEBIAN_SUITE in fields.get("Suites", "").split() and fields.get("URIs"):
                return fields["URIs"].split()[0]
    return "http://deb.debian.org/debian"


def standin_fingerprint(arch: str, prefix: Path) -> str:
    """What the stand-in is made of: its files, the package pins, the Python copied in and SAM's emulator."""
    digest = hashlib.sha256()
    for path in sorted(STANDIN_DIR.iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    parts = [arch, DEBIAN_SUITE, DEBIAN_PACKAGES, *RUNTIME_PACKAGES, *PYTHON_PACKAGES, str(prefix)]
    digest.update("\n".join(parts).encode())
    return digest.hexdigest()[:16]


def sam_emulator(arch: str) -> Path:
    """The Runtime Interface Emulator that ships inside the aws-sam-cli package (SAM mounts it as /var/rapid)."""
    found = sorted(SAM_VENV.glob(f"lib/python3*/site-packages/samcli/local/rapid/aws-lambda-rie-{arch}"))
    if not found:
        raise RuntimeError(f"aws-lambda-rie-{arch} not found in {SAM_VENV} (make install-sam)")
    return found[0]


def build_standin(arch: str, image: str, fingerprint: str, prefix: Path, executable: Path) -> None:
    """Build the stand-in for AWS's python3.12 image from Debian's packages, PyPI and this machine's Python 3.12.

    debootstrap (minbase) makes a Debian root file system, `docker import` turns it into a base image, and a
    Dockerfile adds Python under /var/lang, boto3, awslambdaric in /var/runtime, the emulator and the entrypoint.
    """
    if shutil.which("debootstrap") is None or os.geteuid() != 0:
        raise RuntimeError(
            "building the stand-in image needs root and debootstrap (Debian: apt-get install debootstrap)"
        )
    with tempfile.TemporaryDirectory(prefix="lambda-standin-", dir="/var/tmp") as tmp:
        rootfs, context = Path(tmp) / "rootfs", Path(tmp) / "context"
        mirror = debian_mirror()
        log(f"debootstrap {DEBIAN_SUITE} (minbase) from {mirror}: a few minutes, once")
        run(
            ["debootstrap", "--variant=minbase", f"--include={DEBIAN_PACKAGES}", DEBIAN_SUITE, rootfs, mirror],
            timeout=1800,
        )
        rootfs_image = f"{image}-rootfs"
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        run(["docker", "import", "-", rootfs_image], stdin=tar.stdout, timeout=600)
        if tar.wait() != 0:
            raise RuntimeError("tar of the root file system failed")

        shutil.copytree(STANDIN_DIR, context)
        lang = context / "lang"
        log(f"copying Python 3.12 from {prefix} to /var/lang")
        (lang / "bin").mkdir(parents=True)
        shutil.copy2(executable, lang / "bin" / "python3.12")
        for name in ("python3", "python"):
            (lang / "bin" / name).symlink_to("python3.12")
        stdlib = prefix / "lib" / "python3.12"
        shutil.copytree(
            stdlib,
            lang / "lib" / "python3.12",
            symlinks=True,
            ignore=lambda folder, names: [
                n for n in names if (Path(folder) == stdlib and n in PYTHON_SKIP) or n.startswith("config-3.12")
            ],
        )
        for library in (prefix / "lib").glob("libpython3*.so*"):
            shutil.copy2(library, lang / "lib" / library.name, follow_symlinks=False)
        pip = [executable, "-m", "pip", "install", "--quiet", "--only-binary=:all:", "--no-warn-script-location"]
        run([*pip, "--target", lang / "lib" / "python3.12" / "site-packages", *PYTHON_PACKAGES], timeout=600)
        run([*pip, "--target", context / "runtime", *RUNTIME_PACKAGES], timeout=600)
        shutil.copy2(context / "bootstrap", context / "runtime" / "bootstrap")
        shutil.copy2(context / "bootstrap.py", context / "runtime" / "bootstrap.py")
        shutil.copy2(sam_emulator(arch), context / "aws-lambda-rie")
        log(f"docker build {image}")
        run(
            [
                "docker", "build", "--quiet", "--build-arg", f"ROOTFS={rootfs_image}",
                "--label", f"{STANDIN_LABEL}={fingerprint}", "--tag", image, context,
            ],
            timeout=900,
        )  # fmt: skip
        run(["docker", "image", "rm", rootfs_image], check=False)  # the stand-in keeps its layer


def lambda_image(arch: str) -> tuple[str, bool]:
    """(image, is_standin): AWS's image when it can be pulled, else the stand-in (built when missing or stale)."""
    aws_image = AWS_IMAGE.format(arch=arch)
    pulled = subprocess.run(["docker", "pull", "--quiet", aws_image], capture_output=True, text=True, check=False)
    if pulled.returncode == 0:
        log(f"pulled {aws_image}")
        return aws_image, False
    log(f"cannot pull {aws_image} ({(pulled.stderr.strip().splitlines() or ['?'])[-1]}); using the stand-in")
    image = STANDIN_IMAGE.format(arch=arch)
    executable, prefix = python312()
    fingerprint = standin_fingerprint(arch, prefix)
    label = run(
        ["docker", "image", "inspect", "-f", f'{{{{index .Config.Labels "{STANDIN_LABEL}"}}}}', image], check=False
    )
    if label.strip() == fingerprint:
        log(f"{image} is up to date")
    else:
        build_standin(arch, image, fingerprint, prefix, executable)
    return image, True


# --------------------------------------------------------------------------- PostgreSQL from the containers


class TcpRelay:
    """Forwards TCP connections from `listen_host` to PostgreSQL (a TCP address or a Unix socket folder).

    Containers on Docker's bridge reach the host at the bridge's address, but PostgreSQL commonly listens on
    127.0.0.1 only (as in CI). `sam local` ignores `--docker-network host`, so a relay it is.
    """

    def __init__(self, listen_host: str, target_host: str, target_port: int) -> None:
        self.listen_host, self.target_host, self.target_port = listen_host, target_host, target_port
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-relay", daemon=True)
        self._server: asyncio.Server | None = None

    async def _open_target(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.target_host.startswith("/"):
            return await asyncio.open_unix_connection(f"{self.target_host}/.s.PGSQL.{self.target_port}")
        return await asyncio.open_connection(self.target_host, self.target_port)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            target_reader, target_writer = await self._open_target()
        except OSError:
            client_writer.close()
            return
        pipes = self._pipe(client_reader, target_writer), self._pipe(target_reader, client_writer)
        await asyncio.gather(*pipes, return_exceptions=True)

    async def _start(self, port: int) -> None:
        self._server = await asyncio.start_server(self._handle, self.listen_host, port)
        self.port = self._server.sockets[0].getsockname()[1]

    def __enter__(self) -> TcpRelay:
        self._thread.start()
        try:  # the server's own port number when free there, else any
            asyncio.run_coroutine_threadsafe(self._start(self.target_port), self._loop).result(timeout=10)
        except OSError:
            asyncio.run_coroutine_threadsafe(self._start(0), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


# --------------------------------------------------------------------------- SAM


@dataclass
class Sam:
    """The SAM CLI of .venv-sam with the options every local command of this run shares."""

    template: Path
    arch: str
    image: str
    standin: bool
    bridge_ip: str

    def command(self, *args: str | Path) -> list[str]:
        options = [
            "--template", self.template,
            # replaces samconfig.toml's "Stage=dev Architecture=arm64": the image must match this machine
            "--parameter-overrides", f"Architecture={self.arch}",
            "--add-host", f"host.docker.internal:{self.bridge_ip}",
            "--skip-pull-image",  # pulled above, or the stand-in, which no registry has
        ]  # fmt: skip
        if self.standin:
            options += ["--invoke-image", self.image]
        return [str(SAM_VENV / "bin" / "sam"), *map(str, args), *map(str, options)]


def sam_environment() -> dict[str, str]:
    return {**os.environ, "SAM_CLI_TELEMETRY": "0", "SAM_CLI_DISABLE_VERSION_CHECK": "1"}


def sam_build(arch: str) -> Path:
    """`make build` for `arch` into its own folder under .aws-sam/sam-local; returns the built template."""
    build_dir, cache_dir = WORK_DIR / arch / "build", WORK_DIR / arch / "cache"
    args = f"--cache-dir {cache_dir} --parameter-overrides Architecture={arch}"
    log(f"sam build ({arch})")
    make = ["make", "--no-print-directory", "build", f"BUILD_DIR={build_dir}", f"SAM_BUILD_ARGS={args}"]
    run(make, cwd=REPO_ROOT, timeout=1200)
    return build_dir / "template.yaml"


def expected_status(event_file: Path) -> int:
    """events/<what>_<status>_<case>.json: the status is in the name."""
    match = re.search(r"_(\d{3})(?:_|$)", event_file.stem)
    if not match:
        raise ValueError(f"{event_file.name}: no status in the name (<what>_<status>_<case>.json)")
    return int(match.group(1))


def event_files() -> list[Path]:
    """Every API Gateway event in events/; those expecting 201 first: the replays and conflicts refer to them."""
    files = [path for path in sorted(EVENTS_DIR.glob("*.json")) if "httpMethod" in json.loads(path.read_text())]
    return sorted(files, key=lambda path: expected_status(path) != 201)


def local_api() -> ModuleType:
    """scripts/local_api.py, whose template routing this reuses (scripts/ is not a package)."""
    if "local_api" not in sys.modules:
        spec = importlib.util.spec_from_file_location("local_api", Path(__file__).with_name("local_api.py"))
        if spec is None or spec.loader is None:
            raise ImportError("scripts/local_api.py not found")
        module = importlib.util.module_from_spec(spec)
        sys.modules["local_api"] = module
        spec.loader.exec_module(module)
    return sys.modules["local_api"]


def function_for(event: dict[str, Any]) -> str:
    """The template's function that serves the event's method and path (the local API's routing)."""
    routes, _ = local_api().routes_from_template(REPO_ROOT / "template.yaml")
    for route in routes:
        if route.match(event["httpMethod"], event["path"]) is not None:
            return route.function.logical_id
    raise ValueError(f"no function serves {event['httpMethod']} {event['path']}")


def write_env_vars(path: Path, conninfo: str) -> None:
    """events/env.json with DATABASE_URL pointing at the scratch database through host.docker.internal."""
    env = json.loads((EVENTS_DIR / "env.json").read_text())
    for variables in env.values():
        variables["DATABASE_URL"] = conninfo
    path.write_text(json.dumps(env, indent=2))


def invoke_events(sam: Sam, env_file: Path, checks: Checks) -> None:
    """`sam local invoke <function> --event <file>` for every event; the status must be the file name's."""
    for event_file in event_files():
        want = expected_status(event_file)
        function = function_for(json.loads(event_file.read_text()))
        command = sam.command("local", "invoke", function, "--event", event_file, "--env-vars", env_file)
        started = time.monotonic()
        done = subprocess.run(
            command, capture_output=True, text=True, cwd=REPO_ROOT, env=sam_environment(), timeout=300, check=False
        )
        lines = [line for line in done.stdout.splitlines() if line.strip().startswith("{")]
        try:
            status = json.loads(lines[-1])["statusCode"]
        except (IndexError, KeyError, json.JSONDecodeError):
            status = None
        name = f"sam local invoke {function} {event_file.name} -> {want} ({time.monotonic() - started:.1f} s)"
        checks.record(name, status == want, f"got {status}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")


def rows_in(conninfo_host: str) -> int:
    with psycopg.connect(conninfo_host) as conn:
        return conn.execute("SELECT count(*) FROM experiments").fetchone()[0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = Request(url, data=body, method=method, headers=headers or {})  # noqa: S310 - our own local URL
    try:
        with urlopen(request, timeout=HTTP_TIMEOUT_S) as response:  # noqa: S310 - our own local URL
            return response.status, response.read()
    except HTTPError as error:
        return error.code, error.read()


@contextlib.contextmanager
def start_api(sam: Sam, env_file: Path, log_file: Path) -> Iterator[str]:
    """`sam local start-api` on a free port until the block ends; Ctrl-C (SIGINT) lets it remove its containers."""
    port = free_port()
    command = sam.command(
        "local", "start-api", "--host", "127.0.0.1", "--port", str(port), "--env-vars", env_file,
        "--warm-containers", "EAGER",
    )  # fmt: skip
    with log_file.open("ab") as out:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=sam_environment(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_API_TIMEOUT_S
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"sam local start-api did not serve:\n{log_file.read_text(errors='replace')[-4000:]}"
                )
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(1)
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def template_routes() -> set[tuple[str, str]]:
    """(METHOD, path) of every Api event in template.yaml."""
    routes, _ = local_api().routes_from_template(REPO_ROOT / "template.yaml")
    return {(route.method, route.resource) for route in routes}


def api_checks(url: str, checks: Checks) -> None:
    """Every route of the template through start-api; a route without a check below fails the run."""
    report = json.loads((EVENTS_DIR / "report_201_valid.json").read_text())["body"].encode()
    name = json.loads(report)["name"]
    key = {"x-api-key": API_KEY}
    json_post = {**key, "Content-Type": "application/json"}
    checked: set[tuple[str, str]] = set()

    def check(label: str, method: str, path: str, want: int, test: Callable[[bytes], bool] | None = None, **kw: Any):
        checked.add((method, path.split("?")[0]))
        started = time.monotonic()
        try:
            status, answer = http(method, url + path, **kw)
        except (URLError, OSError) as error:
            checks.record(f"start-api {label}", False, repr(error))
            return
        ok = status == want and (test is None or test(answer))
        elapsed = f"({time.monotonic() - started:.1f} s)"
        checks.record(f"start-api {label} -> {want} {elapsed}", ok, f"got {status}: {answer[:1000]!r}")

    def listed(field: str) -> Callable[[bytes], bool]:
        return lambda answer: bool(json.loads(answer).get(field))

    # Warm-up, not checked: one request per function first. start-api starts a container per function on its
    # first request, which on a busy machine can take longer than the functions' 10 s Timeout; the cold path is
    # what the `sam local invoke` checks above exercise, one fresh container each.
    for method, path, payload, headers in (
        ("POST", "/experiments/report", b"{}", json_post),  # 422: nothing written
        ("GET", "/dashboard", None, {}),
    ):
        warm_started = time.monotonic()
        try:
            status: int | str = http(method, url + path, body=payload, headers=headers)[0]
        except (URLError, OSError) as error:
            status = repr(error)
        log(f"warm-up {method} {path}: {status} ({time.monotonic() - warm_started:.1f} s)")

    once = {**json_post, "Idempotency-Key": f"sam-local-{uuid.uuid4().hex}"}
    check("POST /experiments/report", "POST", "/experiments/report", 201, body=report, headers=once)
    check("POST /experiments/report (replay)", "POST", "/experiments/report", 200, body=report, headers=once)
    summary = (REPO_ROOT / "tests" / "fixtures" / "k6_machine_readable_summary.json").read_bytes()
    query = urlencode({"name": name, "variant": "k6_summary"})
    check(
        "POST /experiments/k6-summary", "POST", f"/experiments/k6-summary?{query}", 201, body=summary, headers=json_post
    )
    by_name = urlencode({"name": name})
    check("GET /experiments", "GET", f"/experiments?{by_name}", 200, listed("items"), headers=key)
    check("GET /experiments/compare", "GET", f"/experiments/compare?{by_name}", 200, listed("metrics"), headers=key)
    series = urlencode({"name": name, "metric": "p95_ms"})
    check("GET /experiments/series", "GET", f"/experiments/series?{series}", 200, headers=key)
    check("GET /experiments/metrics", "GET", f"/experiments/metrics?{by_name}", 200, headers=key)
    check("GET /experiments/changes", "GET", f"/experiments/changes?{by_name}", 200, headers=key)
    check("GET /experiments without a key", "GET", "/experiments", 403, headers={})
    check("GET /dashboard (public)", "GET", "/dashboard", 200, lambda page: b"<html" in page.lower())
    missing = sorted(template_routes() - checked)
    checks.record("start-api: every route of template.yaml checked", not missing, f"no check for {missing}")


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    # A CI timeout or `kill` sends SIGTERM: unwind like on Ctrl-C, so the containers, dockerd and databases go too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    checks = Checks()
    started = time.monotonic()
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    logs = WORK_DIR / "logs"
    logs.mkdir(exist_ok=True)
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(docker_engine(logs / "dockerd.log"))
            before = lambda_containers()
            stack.callback(remove_new_containers, before)
            arch = host_architecture()
            image, standin = lambda_image(arch)
            template = sam_build(arch)
            bridge_ip = bridge_gateway()

            server_url = database_url()
            server = conninfo_to_dict(server_url)
            relay = stack.enter_context(
                TcpRelay(bridge_ip, str(server.get("host") or "127.0.0.1"), int(server.get("port") or 5432))
            )
            log(f"PostgreSQL relay on {bridge_ip}:{relay.port} (host.docker.internal in the containers)")
            sam = Sam(template, arch, image, standin, bridge_ip)

            invoke_db = stack.enter_context(scratch_database(server_url, "k6exp_samlocal"))
            env_file = WORK_DIR / "env.json"
            write_env_vars(env_file, make_conninfo(invoke_db, host="host.docker.internal", port=relay.port))
            log(f"sam local invoke, every events/*.json ({image})")
            invoke_events(sam, env_file, checks)
            stored = rows_in(invoke_db)
            checks.record(f"the invocations stored rows in the scratch database ({stored})", stored > 0)

            api_db = stack.enter_context(scratch_database(server_url, "k6exp_samlocal"))
            write_env_vars(env_file, make_conninfo(api_db, host="host.docker.internal", port=relay.port))
            log("sam local start-api")
            api_started = time.monotonic()
            with start_api(sam, env_file, logs / "start-api.log") as url:
                log(f"start-api serves {url} ({time.monotonic() - api_started:.1f} s)")
                api_checks(url, checks)
    except Exception as error:  # a broken set-up is a failed check, with its reason
        checks.record("set-up", False, str(error))
    log(f"done in {time.monotonic() - started:.0f} s")
    print(checks.summary(), flush=True)
    return 1 if checks.failed else 0


def remove_new_containers(before: set[str]) -> None:
    """Containers SAM left behind (a killed start-api leaves its warm containers)."""
    leftover = lambda_containers() - before
    if leftover:
        run(["docker", "rm", "--force", *sorted(leftover)], check=False)


if __name__ == "__main__":
    sys.exit(main())
