"""Serve the functions of template.yaml over HTTP the way API Gateway (REST, v1 proxy) would.

Why not `sam local start-api`: it needs Docker and starts a container per request, which cannot hold a
k6 load. This server reads the same template, builds the same proxy events, enforces `ApiKeyRequired` with
API Gateway's own 403 answers and invokes each handler in-process, so every test of the HTTP contract runs
through the real handler code without AWS.

    python scripts/local_api.py [--port 3000] [--host 127.0.0.1] [--api-key KEY] [--template template.yaml]

The database is `DATABASE_URL` or else the embedded PostgreSQL under `.local/pgdata`; migrations are applied
at start. One line `Local API on http://HOST:PORT (key: ...)` is printed when it is ready (`--port 0` picks a
free port and prints it).

The key check is the deployed one in one step: the template's Lambda authorizer only finds the key
(`experiments.auth.presented_api_key`: `x-api-key`, else `Authorization: Bearer`) and API Gateway's usage plan
judges it; here the same function finds it and `--api-key` judges it. Not emulated: usage-plan throttling and
quotas, CORS preflights, stage variables, OpenAPI `DefinitionBody` routes.

It cannot be exhausted by one client: the key and the declared size are checked before a byte of the body is
read, a body is never read past `limits.MAX_BODY_BYTES` (413), a client that stalls is cut off after
`--client-timeout` seconds (10) per read and `BODY_DEADLINE_S` for a whole body, at most `--max-connections`
(128) connections are served at once (more get a 503), and a Transfer-Encoding other than `chunked` is a 501.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hmac
import importlib.util
import json
import os
import re
import secrets
import signal
import sys
import threading
import time
import traceback
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from devkit.localdb import database_url
from experiments.auth import presented_api_key
from experiments.http import body_problem, error_kind
from experiments.limits import MAX_BODY_BYTES
from experiments.migrations import apply_migrations

REPO_ROOT = Path(__file__).resolve().parent.parent
ACCOUNT_ID = "123456789012"
CLIENT_TIMEOUT_S = 10.0  # the longest a read from a client may wait, and how long an idle keep-alive connection lives
BODY_DEADLINE_S = 30.0  # the longest a whole body may take to arrive, however it trickles in
MAX_CONNECTIONS = 128  # connections served at once, each on its own thread
READ_PIECE = 64 * 1024


# --------------------------------------------------------------------------- template


@dataclass(frozen=True)
class CfnTag:
    """A CloudFormation short tag (`!Ref X`, `!GetAtt ...`) kept as data: there is no stack to resolve it."""

    tag: str
    value: Any


class CfnLoader(yaml.SafeLoader):
    """SafeLoader that accepts every `!Tag`, so a SAM template parses without the CloudFormation tooling."""


def _construct_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> CfnTag:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return CfnTag(suffix, value)


CfnLoader.add_multi_constructor("!", _construct_tag)


def load_template(path: Path) -> dict[str, Any]:
    """Parse a SAM/CloudFormation template, keeping short tags as `CfnTag`."""
    with path.open(encoding="utf-8") as fh:
        data = yaml.load(fh, Loader=CfnLoader)  # noqa: S506 - CfnLoader is a SafeLoader
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a template (top level is not a mapping)")
    return data


@dataclass
class FunctionSpec:
    """What the local API needs to run one `AWS::Serverless::Function` like Lambda would."""

    logical_id: str
    code_dir: Path
    handler: str
    timeout_s: float
    memory_mb: int
    environment: dict[str, str]


@dataclass
class Route:
    """One `Api` event: method + path template → function, and whether API Gateway demands a key."""

    method: str  # upper case, or "ANY"
    resource: str  # the path template as in the template, e.g. /products/{id}
    function: FunctionSpec
    api_key_required: bool
    pattern: re.Pattern[str] = field(init=False)
    param_names: list[str] = field(init=False)
    static_segments: int = field(init=False)

    def __post_init__(self) -> None:
        names: list[str] = []
        parts: list[str] = []
        static = 0
        for segment in self.resource.strip("/").split("/"):
            m = re.fullmatch(r"\{([^}+]+)(\+?)\}", segment)
            if m:
                names.append(m.group(1))
                parts.append("(.+)" if m.group(2) else "([^/]+)")
            else:
                static += 1
                parts.append(re.escape(segment))
        self.pattern = re.compile("^/" + "/".join(parts) + "$")
        self.param_names = names
        self.static_segments = static

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """Path parameters when this route serves `method path`, else None."""
        if self.method not in ("ANY", method):
            return None
        m = self.pattern.match(path)
        if not m:
            return None
        return {name: unquote(value) for name, value in zip(self.param_names, m.groups(), strict=True)}


def _resolve(value: Any, parameters: dict[str, Any]) -> Any:
    """`!Ref Param` becomes the parameter's Default; anything else that needs a stack stays a `CfnTag`."""
    if isinstance(value, CfnTag) and value.tag == "Ref" and isinstance(value.value, str):
        default = (parameters.get(value.value) or {}).get("Default")
        if default is not None:
            return default
    return value


def _plain_env(variables: Any, parameters: dict[str, Any]) -> dict[str, str]:
    """Environment values that are plain scalars (or parameter defaults); the rest only exist in a stack."""
    if not isinstance(variables, dict):
        return {}
    resolved = {str(k): _resolve(v, parameters) for k, v in variables.items()}
    return {
        k: str(v).lower() if isinstance(v, bool) else str(v)
        for k, v in resolved.items()
        if isinstance(v, str | int | float | bool)
    }


def _api_key_default(api_props: dict[str, Any]) -> bool | None:
    auth = api_props.get("Auth")
    if isinstance(auth, dict) and isinstance(auth.get("ApiKeyRequired"), bool):
        return auth["ApiKeyRequired"]
    return None


def routes_from_template(template_path: Path) -> tuple[list[Route], str]:
    """Every `Api` event of every Python zip function, most specific path first, plus the stage name."""
    template = load_template(template_path)
    base = template_path.parent
    globals_ = template.get("Globals") or {}
    g_function = globals_.get("Function") or {}
    g_api = globals_.get("Api") or {}
    resources = template.get("Resources") or {}
    parameters = template.get("Parameters") or {}

    apis: dict[str, dict[str, Any]] = {}
    for logical_id, res in resources.items():
        if isinstance(res, dict) and res.get("Type") == "AWS::Serverless::Api":
            props = dict(g_api)
            props.update(res.get("Properties") or {})
            apis[logical_id] = props
    stage = "Prod"  # SAM's implicit API stage
    for props in apis.values():
        name = _resolve(props.get("StageName"), parameters)
        if isinstance(name, str):
            stage = name
            break

    routes: list[Route] = []
    for logical_id, res in resources.items():
        if not isinstance(res, dict) or res.get("Type") != "AWS::Serverless::Function":
            continue
        props = {**g_function, **(res.get("Properties") or {})}
        env = _plain_env((g_function.get("Environment") or {}).get("Variables"), parameters)
        own_env = ((res.get("Properties") or {}).get("Environment") or {}).get("Variables")
        env.update(_plain_env(own_env, parameters))
        code_uri, handler = props.get("CodeUri"), props.get("Handler")
        runtime = str(props.get("Runtime", "python"))
        if not isinstance(code_uri, str) or not isinstance(handler, str) or not runtime.startswith("python"):
            continue
        spec = FunctionSpec(
            logical_id=logical_id,
            code_dir=(base / code_uri).resolve(),
            handler=handler,
            timeout_s=float(props.get("Timeout", 3)),
            memory_mb=int(props.get("MemorySize", 128)),
            environment=env,
        )
        for event in (props.get("Events") or {}).values():
            if not isinstance(event, dict) or event.get("Type") != "Api":
                continue
            ev = event.get("Properties") or {}
            rest_api = ev.get("RestApiId")
            api_props = (
                apis.get(rest_api.value, g_api) if isinstance(rest_api, CfnTag) and rest_api.tag == "Ref" else g_api
            )
            required = _api_key_default(ev)
            if required is None:
                required = _api_key_default(api_props)
            method = str(ev.get("Method", "ANY")).upper()
            routes.append(Route(method, str(ev["Path"]), spec, bool(required)))
    # API Gateway picks the most specific resource: static segments beat {params}, {params} beat {proxy+}.
    routes.sort(key=lambda r: (-r.static_segments, "+}" in r.resource, -len(r.param_names)))
    return routes, stage


# --------------------------------------------------------------------------- in-process Lambda


@dataclass
class LambdaContext:
    """The attributes of Lambda's context object that handlers (and Powertools) read."""

    function_name: str
    memory_limit_in_mb: int
    invoked_function_arn: str
    aws_request_id: str
    deadline: float
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = "local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


class LocalFunction:
    """One warm Lambda instance: its module imported once, invocations one at a time.

    The handler keeps one module-level psycopg connection that must not be shared between threads, and a real
    Lambda instance never runs two requests at once either, so invocations are serialised with a lock.
    """

    def __init__(self, spec: FunctionSpec, region: str) -> None:
        self.spec = spec
        self.region = region
        self.lock = threading.Lock()
        self.handler = self._load_handler()

    def _load_handler(self) -> Any:
        module_path, _, func_name = self.spec.handler.rpartition(".")
        file = self.spec.code_dir / (module_path.replace(".", "/") + ".py")
        # Each function's handler is app.py: a unique module name keeps them apart in sys.modules.
        name = f"_local_api_{self.spec.logical_id}"
        module_spec = importlib.util.spec_from_file_location(name, file)
        if module_spec is None or module_spec.loader is None:
            raise ImportError(f"{self.spec.logical_id}: cannot load {file}")
        module: ModuleType = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        sys.path.insert(0, str(self.spec.code_dir))  # as Lambda's task root, for the handler's own imports
        try:
            module_spec.loader.exec_module(module)
        finally:
            sys.path.remove(str(self.spec.code_dir))
        return getattr(module, func_name)

    def invoke(self, event: dict[str, Any]) -> Any:
        request_id = event["requestContext"]["requestId"]
        context = LambdaContext(
            function_name=self.spec.logical_id,
            memory_limit_in_mb=self.spec.memory_mb,
            invoked_function_arn=(f"arn:aws:lambda:{self.region}:{ACCOUNT_ID}:function:{self.spec.logical_id}"),
            aws_request_id=request_id,
            deadline=time.monotonic() + self.spec.timeout_s,
            log_group_name=f"/aws/lambda/{self.spec.logical_id}",
        )
        with self.lock:
            return self.handler(event, context)


# --------------------------------------------------------------------------- HTTP front


def openapi_json() -> tuple[str, bytes]:
    """The committed OpenAPI document (docs/openapi.json, kept equal to the code by `make openapi`)."""
    return "application/json", (REPO_ROOT / "docs" / "openapi.json").read_bytes()


def swagger_ui() -> tuple[str, bytes]:
    """Swagger UI over that document, with the assets Powertools ships inlined: no CDN."""
    from aws_lambda_powertools.event_handler.openapi import swagger_ui as assets
    from aws_lambda_powertools.event_handler.openapi.swagger_ui.html import generate_swagger_html

    folder = Path(assets.__file__).parent
    page = generate_swagger_html(
        spec=openapi_json()[1].decode(),
        swagger_js=(folder / "swagger-ui-bundle.min.js").read_text(),
        swagger_css=(folder / "swagger-ui.min.css").read_text(),
        swagger_base_url="",
        oauth2_config=None,
    )
    return "text/html; charset=utf-8", page.encode()


# Served by the local API itself, not by a function: API Gateway documents the deployed API elsewhere.
LOCAL_DOCS = {"/openapi.json": openapi_json, "/swagger": swagger_ui}


@dataclass
class LocalApi:
    """Routing, the API key and the functions, shared by all request threads."""

    routes: list[Route]
    functions: dict[str, LocalFunction]
    api_key: str
    stage: str
    access_log: bool = False

    def find(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        for route in self.routes:
            params = route.match(method, path)
            if params is not None:
                return route, params
        return None


class ApiGatewayHandler(BaseHTTPRequestHandler):
    """Turns one HTTP request into an API Gateway proxy event and the handler's result back into HTTP."""

    protocol_version = "HTTP/1.1"  # keep-alive, as k6 and API Gateway use it
    # Headers and body go out in two writes; with Nagle on, keep-alive clients wait ~40 ms for a delayed ACK.
    disable_nagle_algorithm = True
    server: LocalApiServer
    _body_read = False

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet by default: a k6 run would print thousands of lines; --access-log turns it on."""
        if self.server.api.access_log:
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")

    def _framing_problem(self) -> tuple[int, str, str] | None:
        """What is wrong with how the body is framed (before reading any of it): a 501 for a Transfer-Encoding
        other than `chunked`, a 400 for a malformed Content-Length."""
        encoding = self.headers.get("Transfer-Encoding")
        if encoding is not None:
            if encoding.strip().lower() != "chunked":
                return 501, f"Transfer-Encoding {encoding!r} is not supported (only chunked)", "NotImplemented"
            return None
        length = self.headers.get("Content-Length")
        if length is not None and not length.strip().isdigit():
            return 400, f"Content-Length {length!r} is not a number of bytes", "BadRequestException"
        return None

    def _read_body(self) -> bytes:
        """The body (chunked or of Content-Length bytes), read in pieces; at most MAX_BODY_BYTES, within
        BODY_DEADLINE_S. Raises BodyRefused past either bound (and a Content-Length over it is refused unread)."""
        deadline = time.monotonic() + self.server.body_deadline_s
        received: list[bytes] = []
        total = 0

        def take(count: int) -> None:
            nonlocal total
            while count > 0:
                if time.monotonic() > deadline:
                    raise BodyRefused(408, f"the body did not arrive within {self.server.body_deadline_s:g} s")
                try:
                    piece = self.rfile.read(min(count, READ_PIECE))
                except TimeoutError:
                    raise BodyRefused(408, f"no byte of the body for {self.server.client_timeout_s:g} s") from None
                if not piece:
                    raise BodyRefused(400, "the connection closed before the whole body arrived")
                received.append(piece)
                total += len(piece)
                count -= len(piece)

        if self.headers.get("Transfer-Encoding") is not None:  # chunked (anything else was refused before)
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";")[0].strip() or b"0", 16)
                except ValueError:
                    raise BodyRefused(400, "malformed chunk size") from None
                if size == 0:
                    while self.rfile.readline(1024).strip():
                        pass
                    return b"".join(received)
                if total + size > MAX_BODY_BYTES:
                    raise BodyRefused(413, "", size=total + size)
                take(size)
                self.rfile.readline(1024)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:  # refused for its declared size: not a byte of it is read
            raise BodyRefused(413, "", size=length)
        take(length)
        return b"".join(received)

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        """Answer; a connection whose body was not read (refused before reading it) is closed after it."""
        self.send_response(status)
        names = {name.lower() for name, _ in headers}
        if "connection" in names or self._body_unread():
            self.close_connection = True
            self.send_header("Connection", "close")
        for name, value in headers:
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        if "content-type" not in names:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _gateway_error(self, status: int, message: str, error_type: str, *, close: bool = False) -> None:
        """API Gateway's own `{"message"}` answer; `close` ends the connection."""
        body = json.dumps({"message": message}).encode()
        headers = [("x-amzn-ErrorType", error_type)]
        self._send(status, [*headers, ("Connection", "close")] if close else headers, body)

    def _body_unread(self) -> bool:
        return not self._body_read and (
            self.headers.get("Transfer-Encoding") is not None or (self.headers.get("Content-Length") or "0") != "0"
        )

    def _dispatch(self) -> None:
        self._body_read = False
        try:
            self._route()
        except TimeoutError:  # a stalled client: nobody is reading an answer, the connection just ends
            self.close_connection = True
        except BodyRefused as refused:
            self._body_read = False  # partly read: the rest of it is dropped with the connection
            if refused.size is not None:  # too large: the function's own 413, without reading the body
                error = body_problem(size=refused.size, content_type=None)
                answer = {"error": error_kind(error).code, "message": str(error), "details": []}
                self._send(413, [("Connection", "close")], json.dumps(answer).encode())
            else:
                self._gateway_error(refused.status, refused.message, "BadRequestException", close=True)

    def _route(self) -> None:
        api = self.server.api
        split = urlsplit(self.path)
        raw_path = split.path or "/"
        problem = self._framing_problem()
        if problem is not None:
            self._gateway_error(*problem, close=True)
            return
        if self.command == "GET" and raw_path in LOCAL_DOCS:
            content_type, page = LOCAL_DOCS[raw_path]()
            self._send(200, [("Content-Type", content_type)], page)
            return
        found = api.find(self.command, raw_path)  # match before decoding: %2F is not a path separator
        if found is None:
            # API Gateway answers an unknown resource or method with 403, not 404.
            self._gateway_error(403, "Missing Authentication Token", "MissingAuthenticationTokenException")
            return
        route, path_params = found

        multi_headers: dict[str, list[str]] = {}
        for name, value in self.headers.items():
            multi_headers.setdefault(name, []).append(value)
        client_ip = self.client_address[0]
        multi_headers.setdefault("X-Forwarded-For", [client_ip])
        multi_headers.setdefault("X-Forwarded-Proto", ["http"])
        multi_headers.setdefault("X-Forwarded-Port", [str(self.server.server_address[1])])
        headers = {name: values[-1] for name, values in multi_headers.items()}

        key = presented_api_key(headers)  # the same rule as the deployed authorizer
        key_ok = key is not None and hmac.compare_digest(key.encode(), api.api_key.encode())
        if route.api_key_required and not key_ok:
            self._gateway_error(403, "Forbidden", "ForbiddenException")  # before reading a byte of the body
            return
        body = self._read_body()
        self._body_read = True

        multi_query = parse_qs(split.query, keep_blank_values=True) or None
        event = self._event(
            route, unquote(raw_path), path_params, headers, multi_headers, multi_query, body, key_ok, key
        )
        try:
            result = api.functions[route.function.logical_id].invoke(event)
            status = int(result["statusCode"])
        except Exception:
            # A crashed handler or a malformed proxy response is a 502 at API Gateway.
            traceback.print_exc()
            self._gateway_error(502, "Internal server error", "InternalServerErrorException")
            return
        out_headers = [(k, str(v)) for k, v in (result.get("headers") or {}).items()]
        for name, values in (result.get("multiValueHeaders") or {}).items():
            if name in (result.get("headers") or {}):
                continue  # API Gateway merges the two maps; a name in both would otherwise appear twice
            out_headers.extend((name, str(v)) for v in values)
        raw = result.get("body") or ""
        payload = base64.b64decode(raw) if result.get("isBase64Encoded") else raw.encode()
        self._send(status, out_headers, payload)

    def _event(
        self,
        route: Route,
        path: str,
        path_params: dict[str, str],
        headers: dict[str, str],
        multi_headers: dict[str, list[str]],
        multi_query: dict[str, list[str]] | None,
        body: bytes,
        key_ok: bool,
        key: str | None,
    ) -> dict[str, Any]:
        api = self.server.api
        now = datetime.now(UTC)
        try:
            text: str | None = body.decode("utf-8") if body else None
            is_b64 = False
        except UnicodeDecodeError:
            text, is_b64 = base64.b64encode(body).decode(), True
        return {
            "resource": route.resource,
            "path": path,
            "httpMethod": self.command,
            "headers": headers,
            "multiValueHeaders": multi_headers,
            "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} if multi_query else None,
            "multiValueQueryStringParameters": multi_query,
            "pathParameters": path_params or None,
            "stageVariables": None,
            "requestContext": {
                "resourceId": "local",
                "resourcePath": route.resource,
                "httpMethod": self.command,
                "extendedRequestId": secrets.token_urlsafe(12),
                "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
                "path": f"/{api.stage}{path}",
                "accountId": ACCOUNT_ID,
                "protocol": self.request_version,
                "stage": api.stage,
                "domainPrefix": "localhost",
                "requestTimeEpoch": int(now.timestamp() * 1000),
                "requestId": str(uuid.uuid4()),
                "identity": {
                    "sourceIp": self.client_address[0],
                    "userAgent": headers.get("User-Agent") or headers.get("user-agent"),
                    "apiKey": key if key_ok else None,
                    "apiKeyId": "local-key" if key_ok else None,
                    "accessKey": None,
                    "accountId": None,
                    "caller": None,
                    "user": None,
                    "userArn": None,
                    "cognitoIdentityId": None,
                    "cognitoIdentityPoolId": None,
                    "cognitoAuthenticationType": None,
                    "cognitoAuthenticationProvider": None,
                },
                "domainName": headers.get("Host") or headers.get("host") or "localhost",
                "apiId": "local",
            },
            "body": text,
            "isBase64Encoded": is_b64,
        }

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch

    def setup(self) -> None:
        self.timeout = self.server.client_timeout_s  # every read from the client: a stalled one is cut off
        super().setup()

    def __getattr__(self, name: str) -> Any:
        """Any other method (TRACE, QUERY, ...) is routed too: API Gateway answers it, http.server would say 501."""
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)


class BodyRefused(Exception):
    """A body that cannot be read whole: too large, too slow, or malformed framing."""

    def __init__(self, status: int, message: str, *, size: int | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.size = status, message, size


BUSY = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class LocalApiServer(ThreadingHTTPServer):
    """A thread per connection, at most `max_connections` at once; a deep backlog so 20+ k6 VUs connecting at
    once are not refused. A connection past the bound is answered 503 at once and closed."""

    daemon_threads = True
    request_queue_size = 256

    def __init__(
        self,
        address: tuple[str, int],
        api: LocalApi,
        *,
        max_connections: int = MAX_CONNECTIONS,
        client_timeout_s: float = CLIENT_TIMEOUT_S,
        body_deadline_s: float = BODY_DEADLINE_S,
    ) -> None:
        self.api = api
        self.client_timeout_s = client_timeout_s
        self.body_deadline_s = body_deadline_s
        self.slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, ApiGatewayHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.sendall(BUSY)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


# --------------------------------------------------------------------------- main


def prepare_database() -> str:
    """DATABASE_URL or the embedded PostgreSQL, migrated; exported so the handlers connect to it."""
    # platformdirs (used by pgserver) warns about a missing XDG_RUNTIME_DIR in containers and CI: noise here.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    url = database_url()
    applied = apply_migrations(url)
    if applied:
        print(f"Migrations applied: {', '.join(applied)}", flush=True)
    os.environ["DATABASE_URL"] = url
    return url


def build_api(template: Path, api_key: str, access_log: bool = False) -> LocalApi:
    """Read the template, export the functions' plain environment values and import every routed handler."""
    routes, stage = routes_from_template(template)
    if not routes:
        raise SystemExit(f"{template}: no function has an Api event")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    os.environ.setdefault("AWS_REGION", region)
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")  # no X-Ray daemon here
    functions: dict[str, LocalFunction] = {}
    for route in routes:
        spec = route.function
        if spec.logical_id not in functions:
            for name, value in spec.environment.items():
                os.environ.setdefault(name, value)  # the caller's environment wins, as with `sam local -n`
            functions[spec.logical_id] = LocalFunction(spec, region)
    return LocalApi(routes, functions, api_key, stage, access_log)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=3000, help="0 picks a free port (default 3000)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--api-key", help="the accepted key (default: EXPERIMENTS_API_KEY, else generated)")
    parser.add_argument("--template", type=Path, default=REPO_ROOT / "template.yaml")
    parser.add_argument("--access-log", action="store_true", help="print one line per request to stderr")
    parser.add_argument(
        "--max-connections", type=int, default=MAX_CONNECTIONS, help=f"served at once (default {MAX_CONNECTIONS})"
    )
    parser.add_argument(
        "--client-timeout",
        type=float,
        default=CLIENT_TIMEOUT_S,
        help=f"seconds a read from a client may wait (default {CLIENT_TIMEOUT_S:g})",
    )
    args = parser.parse_args(argv)

    supplied = args.api_key or os.environ.get("EXPERIMENTS_API_KEY")
    api_key = supplied or secrets.token_urlsafe(24)
    prepare_database()
    api = build_api(args.template.resolve(), api_key, args.access_log)
    server = LocalApiServer(
        (args.host, args.port), api, max_connections=args.max_connections, client_timeout_s=args.client_timeout
    )

    def stop(signum: int, _frame: object) -> None:
        # shutdown() waits for serve_forever() to return, so it must run outside the serving thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    host, port = server.server_address[:2]
    for route in api.routes:
        lock = "  (api key)" if route.api_key_required else ""
        print(f"  {route.method:7} {route.resource}  ->  {route.function.logical_id}{lock}", flush=True)
    shown = "from --api-key/EXPERIMENTS_API_KEY" if supplied else api_key
    print(f"Local API on http://{host}:{port} (key: {shown})", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
    print("Local API stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
