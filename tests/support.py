"""Helpers for tests: Lambda context, API Gateway events, loading a function's handler."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import select
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlparse

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from devkit.lambdaevents import EVENTS_DIR, REPO_ROOT, LambdaContext, api_event, get_event, load_function
from experiments.k6summary import parse_key, split_series

# Re-exported: tests import every helper from here.
__all__ = ["EVENTS_DIR", "REPO_ROOT", "LambdaContext", "api_event", "get_event", "load_function"]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any


def load_script(name: str) -> ModuleType:
    """`scripts/<name>.py` as a module (scripts/ is not a package), loaded once per test run."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def load_reporter() -> ModuleType:
    """The reporter CLI, `scripts/report_k6_result.py`, as a module."""
    return load_script("report_k6_result")


def private_pgdata() -> Path:
    """A data folder for an embedded PostgreSQL that no other test run prunes (pytest's tmp folders get pruned)."""
    return Path(tempfile.mkdtemp(prefix="k6exp-pgdata-"))


class StoppableServer:
    """An embedded PostgreSQL a test owns, so it can be stopped and started like a real outage."""

    def __init__(self, pgdata: Path) -> None:
        from devkit.localdb import embedded_server

        self.pgdata = pgdata
        self.url = embedded_server(pgdata, delete_on_exit=True).get_uri()
        self.socket_dir = parse_qs(urlparse(self.url).query)["host"][0]
        self.run_as = "pgserver" if os.geteuid() == 0 else None  # pgserver runs PostgreSQL as this user under root

    def stop(self) -> None:
        import pgserver

        pgserver.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self.run_as)

    def start(self) -> None:
        import pgserver

        options = ["-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.pgdata / "log")]
        pgserver.pg_ctl(["-w", *options, "start"], pgdata=self.pgdata, user=self.run_as)

    def is_up(self) -> bool:
        try:
            psycopg.connect(self.url, connect_timeout=1).close()
            return True
        except psycopg.OperationalError:
            return False


def count_rows(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM experiments").fetchone()[0]


def decode(response: dict[str, Any]) -> Answer:
    """A handler's response as status, headers and parsed JSON body."""
    headers = {k: v[-1] for k, v in (response.get("multiValueHeaders") or {}).items()}
    headers.update(response.get("headers") or {})
    body = response.get("body")
    is_json = headers.get("Content-Type", "").startswith("application/json")
    return Answer(response["statusCode"], headers, json.loads(body) if body and is_json else body)


def summary_export_doc(**duration_overrides: Any) -> dict[str, Any]:
    """The one hand-written k6 summary: `--summary-export` as k6 1.1 writes it (real runs are in the e2e tests).

    `duration_overrides` replace stats of http_req_duration (`None`-free: drop a stat with a dict without it).
    """
    duration = {
        "med": 2.5,
        "p(50)": 2.5,
        "p(90)": 4.0,
        "p(95)": 5.25,
        "p(99)": 9.0,
        "avg": 3.0,
        "min": 1.0,
        "max": 12.0,
        "thresholds": {"p(95)<1": True},
    }
    duration.update(duration_overrides)
    return {
        "root_group": {"name": "", "path": "", "id": "d41d8cd98f00b204e9800998ecf8427e", "groups": {}, "checks": {}},
        "metrics": {
            "http_req_duration": duration,
            "http_reqs": {"count": 200, "rate": 99.5},
            "http_req_failed": {"passes": 20, "fails": 180, "value": 0.1, "thresholds": {"rate<0.5": False}},
            "checks": {"passes": 180, "fails": 20, "value": 0.9},
            "vus_max": {"value": 4, "min": 4, "max": 4},
        },
    }


def python_3_9() -> str | None:
    """A working python3.9 (the oldest runtime a CI job may have), from PATH or pyenv, if this machine has one."""
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = [shutil.which("python3.9"), *sorted(str(p) for p in pyenv_root.glob("versions/3.9*/bin/python3.9"))]
    for candidate in filter(None, candidates):
        probe = subprocess.run(
            [candidate, "-c", "import sys; assert sys.version_info[:2] == (3, 9); print(sys.executable)"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 0:
            return probe.stdout.strip()
    return None


# The Prisma backend's init migration: exactly what Prisma generates for the Experiment model (checked by
# tests/integration/test_prisma.py), the one copy of Prisma's DDL the other tests build its table from.
PRISMA_INIT_MIGRATION = REPO_ROOT / "tests" / "prisma" / "migrate" / "migrations" / "0_init" / "migration.sql"


# --------------------------------------------------------------------------------------------- k6 expectations

# The one table of what the headline keys mean, written from the README's contract (not from the code), so the
# tests that compare stored figures with k6's own files check the code against it: key -> (k6 metric, stat).
HEADLINE_FIGURES: dict[str, tuple[str, str]] = {
    "p50_ms": ("http_req_duration", "med"),
    "p90_ms": ("http_req_duration", "p(90)"),
    "p95_ms": ("http_req_duration", "p(95)"),
    "p99_ms": ("http_req_duration", "p(99)"),
    "avg_ms": ("http_req_duration", "avg"),
    "min_ms": ("http_req_duration", "min"),
    "max_ms": ("http_req_duration", "max"),
    "requests_count": ("http_reqs", "count"),
    "rps": ("http_reqs", "rate"),
    "error_rate": ("http_req_failed", "rate"),
    "checks_pass_rate": ("checks", "rate"),
}


def k6_figure(doc: dict[str, Any], key: str) -> float:
    """The figure a stored key names, looked up in a k6 summary as k6 wrote it (summary-export or handleSummary)."""
    if key in HEADLINE_FIGURES:
        (metric, stat), tags = HEADLINE_FIGURES[key], ()
    else:
        metric, tags, stat = parse_key(key)
    for name, entry in doc["metrics"].items():
        if split_series(name) != (metric, tags):
            continue
        values = entry.get("values", entry)
        if stat == "rate" and "passes" in values:  # a Rate: summary-export calls it `value`
            return values.get("rate", values.get("value"))
        return values[stat]
    raise AssertionError(f"{key} is not in the file")


# --------------------------------------------------------------------------------------------- one HTTP stub


@dataclass
class Reply:
    """One scripted answer: a status, a JSON body (bytes go as they are; None: empty), headers, a delay first."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class Recorded:
    """One request the stub received; header names in lower case."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


Script = list[Reply] | Callable[[Recorded], Reply]


class ScriptedServer:
    """An HTTP/1.1 server on 127.0.0.1 that stands in for another service in tests: the reports API, a product
    service, a pre-signed S3 URL. Each method answers from its script: replies in order (the last one repeats),
    or a function of the request. Every request is recorded. A method without a script answers 405.

        with ScriptedServer(POST=[Reply(503), Reply(201, {...})]) as api:
            ...; api.requests[0].headers["idempotency-key"]
    """

    def __init__(self, path_prefix: str = "", **scripts: Script) -> None:
        self.scripts: dict[str, Script] = dict(scripts)
        self.requests: list[Recorded] = []
        self._answered: dict[str, int] = {}  # per method: requests answered since its script was set
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = Recorded(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length)
                )
                reply = stub._reply_to(request)
                time.sleep(reply.delay_s)
                body = reply.body
                data = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (a timeout test)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{path_prefix}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def answer(self, method: str, *replies: Reply) -> None:
        """From now on, answer `method` with `replies` in order (counted from the first request of that method)."""
        with self._lock:
            self.scripts[method] = list(replies)
            self._answered[method] = 0

    def received(self, method: str) -> list[Recorded]:
        return [request for request in self.requests if request.method == method]

    def _reply_to(self, request: Recorded) -> Reply:
        with self._lock:
            self.requests.append(request)
            script = self.scripts.get(request.method)
            if script is None:
                return Reply(405, {"error": "method_not_allowed"})
            if callable(script):
                return script(request)
            seen = self._answered[request.method] = self._answered.get(request.method, 0) + 1
            return script[min(seen, len(script)) - 1]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> ScriptedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def database_address(database_url: str) -> tuple[str, int]:
    """(host, port) of a database URL; the host is a socket directory for a Unix-socket server (the embedded one)."""
    params = conninfo_to_dict(database_url)
    return params.get("host") or "127.0.0.1", int(params.get("port") or 5432)


def connect_database(target: tuple[str, int]) -> socket.socket:
    """A socket to the server at `target` (see `database_address`), over TCP or its Unix socket."""
    host, port = target
    if host.startswith("/"):
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.connect(f"{host}/.s.PGSQL.{port}")
        return upstream
    return socket.create_connection((host, port))


class DatabaseRelay:
    """A TCP relay in front of PostgreSQL that a test can make fail, the two ways a database goes away:

    - `stall()`: silent. Every connection, old and new, stays open and nothing more is forwarded, like a server
      or network that stops answering without closing anything. Connections that stalled stay silent.
    - `cut()`: down. Every relayed connection is dropped, and new ones are accepted and closed at once, until
      `restore()` (or, with `restore_after_first_refusal_s`, shortly after the first refusal).

    `restore()` relays new connections again. Connect through `url` (the database URL with the relay's port).
    """

    def __init__(self, database_url: str) -> None:
        self.target = database_address(database_url)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = make_conninfo(database_url, host="127.0.0.1", port=str(self.port))
        self.stalled = threading.Event()
        self.closed = threading.Event()
        self.up = True
        self.refused = 0
        self._restore_after_s: float | None = None
        self._relayed: list[socket.socket] = []
        self._silent: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def stall(self) -> None:
        self.stalled.set()

    def cut(self, restore_after_first_refusal_s: float | None = None) -> None:
        """Drop every relayed connection and refuse new ones; optionally come back shortly after the first."""
        with self._lock:
            self.up = False
            self._restore_after_s = restore_after_first_refusal_s
            for sock in self._relayed:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._relayed.clear()

    def restore(self) -> None:
        with self._lock:
            self.up = True
        self.stalled.clear()

    def close(self) -> None:
        self.cut()
        self.closed.set()
        for sock in [self._listener, *self._silent]:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                if not self.up:
                    self.refused += 1
                    if self.refused == 1 and self._restore_after_s is not None:
                        threading.Timer(self._restore_after_s, self.restore).start()
                    client.close()
                    continue
                if self.stalled.is_set():
                    self._silent.append(client)  # accepted, never answered
                    continue
                upstream = connect_database(self.target)
                self._relayed += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if self.stalled.is_set():
                self.closed.wait()  # silent from now on: nothing forwarded, nothing closed
                return
            if not data:
                with contextlib.suppress(OSError):
                    sink.shutdown(socket.SHUT_WR)
                return
            try:
                sink.sendall(data)
            except OSError:
                return


class SilentServer:
    """A TCP server that accepts connections and never answers (a hung AWS endpoint)."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.accepted.append(self._listener.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        for sock in [self._listener, *self.accepted]:
            with contextlib.suppress(OSError):
                sock.close()


class SecretsManager:
    """Moto's Secrets Manager server (a real HTTP endpoint speaking the AWS protocol), for the tests to fill."""

    def __init__(self, endpoint: str) -> None:
        import boto3

        self.endpoint = endpoint
        self._client = boto3.client(
            "secretsmanager",
            endpoint_url=endpoint,
            region_name="eu-west-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def create(self, secret: dict[str, Any]) -> str:
        """Store `secret` as JSON under a fresh name; its ARN."""
        answer = self._client.create_secret(Name=f"db-{uuid.uuid4().hex[:12]}", SecretString=json.dumps(secret))
        return answer["ARN"]

    def update(self, arn: str, secret: dict[str, Any]) -> None:
        self._client.put_secret_value(SecretId=arn, SecretString=json.dumps(secret))


def make_certificates(folder: Path, host: str = "localhost") -> dict[str, Path]:
    """A test CA, a server certificate it signed for `host` (DNS name only), and an unrelated CA (openssl CLI)."""
    import subprocess

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=60)

    for name in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
                "-keyout", f"{name}.key", "-out", f"{name}.pem")  # fmt: skip
    (folder / "san.cnf").write_text(f"subjectAltName=DNS:{host}\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={host}", "-keyout", "server.key",
            "-out", "server.csr")  # fmt: skip
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.cnf", "-out", "server.crt")  # fmt: skip
    files = {"ca": "ca.pem", "other_ca": "other-ca.pem", "cert": "server.crt", "key": "server.key"}
    return {name: folder / file for name, file in files.items()}


class TlsProxy:
    """PostgreSQL's TLS in front of a plain server: answers the client's SSLRequest with `S`, does the TLS
    handshake with `cert`/`key` (as RDS or RDS Proxy would), and forwards the decrypted protocol upstream.

    `target` is `(host, port)`, or `(socket directory, port)` for a Unix-socket server.
    """

    SSL_REQUEST, GSSENC_REQUEST = 80877103, 80877104

    def __init__(self, target: tuple[str, int], cert: Path, key: Path) -> None:
        self.target = target
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(cert, key)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.handshakes_failed = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with contextlib.ExitStack() as stack:
            stack.callback(client.close)
            while True:  # libpq may ask for GSS encryption first: refused, then it asks for TLS
                request = client.recv(8, socket.MSG_WAITALL)
                code = int.from_bytes(request[4:8], "big") if len(request) == 8 else None
                if code == self.GSSENC_REQUEST:
                    client.sendall(b"N")
                    continue
                if code != self.SSL_REQUEST:
                    return  # a client that does not ask for TLS: hung up on, as a TLS-only server would
                client.sendall(b"S")
                break
            try:
                secure = self._context.wrap_socket(client, server_side=True)
            except (ssl.SSLError, OSError):
                self.handshakes_failed += 1  # the client refused our certificate
                return
            stack.callback(secure.close)
            upstream = connect_database(self.target)
            stack.callback(upstream.close)
            self._forward(secure, upstream)

    @staticmethod
    def _forward(secure: ssl.SSLSocket, upstream: socket.socket) -> None:
        """Both ways in one thread (an SSL socket must not be read and written from two threads at once)."""
        other = {secure: upstream, upstream: secure}
        while True:
            ready = [secure] if secure.pending() else select.select([secure, upstream], [], [])[0]
            for source in ready:
                try:
                    data = source.recv(65536)
                except (ssl.SSLError, OSError):
                    return
                if not data:
                    return
                other[source].sendall(data)


# Names and variants (experiments.names): input → what is stored (NFC), or None when refused. One table for the
# rule itself, the API's reports and query parameters, and the reporter (issue 10, item 8).
NAME_CASES: dict[str, tuple[str, str | None]] = {
    "plain": ("checkout", "checkout"),
    "inner spaces": ("lru cache", "lru cache"),
    "NFC café": ("caf\u00e9", "caf\u00e9"),
    "NFD café is stored as NFC": ("cafe\u0301", "caf\u00e9"),
    "Hangul jamo (NFD) is stored composed": ("\u1100\u1161", "\uac00"),
    "emoji": ("\U0001f680", "\U0001f680"),
    "trailing space": ("trail ", None),
    "leading space": (" trail", None),
    "trailing no-break space": ("trail\u00a0", None),
    "only an ideographic space": ("\u3000", None),
    "blank": ("   ", None),
    "tab inside": ("a\tb", None),
    "newline inside": ("a\nb", None),
    "NUL": ("a\x00b", None),
    "zero-width space": ("trail\u200b", None),
    "byte order mark": ("\ufefftrail", None),
    "right-to-left mark": ("a\u200fb", None),
    "line separator": ("a\u2028b", None),
    "paragraph separator": ("a\u2029b", None),
}
