"""Helpers for tests: Lambda context, API Gateway events, loading a function's handler."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import select
import socket
import ssl
import sys
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlparse

import psycopg

REPO_ROOT = Path(__file__).resolve().parents[1]
EVENTS_DIR = REPO_ROOT / "events"


class LambdaContext:
    """The few attributes of the Lambda context that Powertools reads."""

    function_name = "ReportFunction"
    function_version = "$LATEST"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:ReportFunction"
    aws_request_id = "00000000-0000-4000-8000-000000000000"

    def get_remaining_time_in_millis(self) -> int:
        return 10_000


def load_function(name: str) -> ModuleType:
    """Import `functions/<name>/app.py` as its own module, as Lambda would (every handler file is app.py)."""
    spec = importlib.util.spec_from_file_location(f"{name}_app", REPO_ROOT / "functions" / name / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def api_event(
    body: Any = None,
    *,
    raw_body: str | None = None,
    headers: dict[str, str] | None = None,
    drop_headers: tuple[str, ...] = (),
) -> dict[str, Any]:
    """An API Gateway REST proxy event for POST /experiments/report, built on `events/report_201_valid.json`."""
    event = json.loads((EVENTS_DIR / "report_201_valid.json").read_text())
    merged = {k: v for k, v in event["headers"].items() if k.lower() not in {"idempotency-key", *drop_headers}}
    merged.update(headers or {})
    event["headers"] = merged
    event["multiValueHeaders"] = {k: [v] for k, v in merged.items()}
    event["requestContext"]["requestId"] = str(uuid.uuid4())
    event["body"] = raw_body if raw_body is not None else json.dumps(body)
    return event


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


def get_event(path: str, query: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """An API Gateway REST proxy event for a GET (query values are strings, as API Gateway gives them)."""
    event = json.loads((EVENTS_DIR / "report_201_valid.json").read_text())
    merged = {"Accept": "application/json", "x-api-key": "local-dev-key-please-change", **(headers or {})}
    event.update(
        resource=path,
        path=path,
        httpMethod="GET",
        headers=merged,
        multiValueHeaders={k: [v] for k, v in merged.items()},
        queryStringParameters=query or None,
        multiValueQueryStringParameters={k: [v] for k, v in query.items()} if query else None,
        body=None,
    )
    event["requestContext"].update(resourcePath=path, httpMethod="GET", requestId=str(uuid.uuid4()))
    return event


def decode(response: dict[str, Any]) -> Answer:
    """A handler's response as status, headers and parsed JSON body."""
    headers = {k: v[-1] for k, v in (response.get("multiValueHeaders") or {}).items()}
    headers.update(response.get("headers") or {})
    body = response.get("body")
    is_json = headers.get("Content-Type", "").startswith("application/json")
    return Answer(response["statusCode"], headers, json.loads(body) if body and is_json else body)


class StallingProxy:
    """A TCP proxy to PostgreSQL that can go silent: after `stall()` it keeps every connection open, old and new,
    and forwards nothing more, like a server or network that stops answering without closing anything.

    `resume()` forwards new connections again; connections that stalled stay silent until `close()`.
    `target` is `(host, port)`, or `(socket directory, port)` for a Unix-socket server (the embedded one).
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.stalled = threading.Event()
        self.closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def stall(self) -> None:
        self.stalled.set()

    def resume(self) -> None:
        self.stalled.clear()

    def close(self) -> None:
        self.closed.set()
        for sock in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.close()

    def _connect_upstream(self) -> socket.socket:
        host, port = self.target
        if host.startswith("/"):
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(f"{host}/.s.PGSQL.{port}")
            return upstream
        return socket.create_connection((host, port))

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._sockets.append(client)
            if self.stalled.is_set():
                continue  # accepted, never answered
            upstream = self._connect_upstream()
            self._sockets.append(upstream)
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
            host, port = self.target
            if host.startswith("/"):
                upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                upstream.connect(f"{host}/.s.PGSQL.{port}")
            else:
                upstream = socket.create_connection((host, port))
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
