"""The local API cannot be exhausted by one client (issue 10, item 10), over real sockets.

The figures: a body is refused before a byte of it is read when the key is wrong or its declared size is over
256 KiB (262,144 bytes); a chunked body is never read past 256 KiB; a client that stalls is cut off after the
`--client-timeout` (1 s here); at most `--max-connections` (3 here) are served at once.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

import pytest

from experiments.limits import MAX_BODY_BYTES

pytestmark = pytest.mark.e2e

REPORT = json.dumps({"name": "limits", "variant": "v", "metricsSummary": {"p95_ms": 1}}).encode()
WAIT_S = 10  # how long a test waits for an answer that must come; the server's own bounds are far below


@pytest.fixture
def api(database_url: str, local_api_on: Callable[..., Any]) -> Any:
    return local_api_on(database_url, "--max-connections", "3", "--client-timeout", "1")


def connect(api: Any) -> socket.socket:
    host, port = api.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=WAIT_S)


def head(lines: list[str]) -> bytes:
    return ("\r\n".join(["POST /experiments/report HTTP/1.1", "Host: localhost", *lines]) + "\r\n\r\n").encode()


def answer(conn: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one answer; the connection must then be closed by the server."""
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    raw_head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = raw_head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
    return int(status_line.split()[1]), headers, body


def test_a_200_mb_body_without_the_key_is_a_403_before_a_byte_of_it_is_read(api: Any) -> None:
    with connect(api) as conn:
        conn.sendall(head(["Content-Type: application/json", "Content-Length: 200000000"]))  # and no body at all
        status, headers, body = answer(conn)
    assert status == 403
    assert json.loads(body) == {"message": "Forbidden"}
    assert headers["connection"] == "close"


def test_a_declared_size_over_256_kib_is_a_413_before_a_byte_of_it_is_read(api: Any) -> None:
    with connect(api) as conn:
        conn.sendall(head([f"x-api-key: {api.api_key}", f"Content-Length: {MAX_BODY_BYTES + 1}"]))
        status, _, body = answer(conn)
    assert MAX_BODY_BYTES == 262_144
    assert status == 413
    assert json.loads(body)["error"] == "payload_too_large"


def test_a_chunked_body_is_not_read_past_256_kib(api: Any) -> None:
    chunk = b"x" * 65536
    with connect(api) as conn:
        conn.sendall(head([f"x-api-key: {api.api_key}", "Transfer-Encoding: chunked"]))
        try:
            for _ in range(5):  # 320 KiB offered
                conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            conn.sendall(b"0\r\n\r\n")
        except OSError:  # the server may close while we still send: it stopped reading
            pass
        status, _, body = answer(conn)
    assert status == 413
    assert f"{5 * 65536} bytes" in json.loads(body)["message"]


def test_a_chunked_report_is_stored(api: Any) -> None:
    with connect(api) as conn:
        conn.sendall(head([f"x-api-key: {api.api_key}", "Transfer-Encoding: Chunked", "Connection: close"]))
        conn.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(REPORT), REPORT))
        status, _, _ = answer(conn)
    assert status == 201


@pytest.mark.parametrize("encoding", ["notchunked", "gzip, chunked", "identity"])
def test_an_unknown_transfer_encoding_is_a_501(api: Any, encoding: str) -> None:
    with connect(api) as conn:
        conn.sendall(head([f"x-api-key: {api.api_key}", f"Transfer-Encoding: {encoding}"]) + REPORT)
        status, _, _ = answer(conn)
    assert status == 501


def test_a_client_that_stalls_in_its_headers_is_cut_off_after_1_s(api: Any) -> None:
    with connect(api) as conn:
        conn.sendall(b"POST /experiments/report HTTP/1.1\r\nHost: localhost\r\n")  # and then nothing
        assert conn.recv(1024) == b""  # closed by the server, well within WAIT_S


def test_a_client_that_stalls_in_its_body_gets_a_408_after_1_s(api: Any) -> None:
    with connect(api) as conn:
        conn.sendall(head([f"x-api-key: {api.api_key}", f"Content-Length: {len(REPORT)}"]) + REPORT[:10])
        status, _, body = answer(conn)
    assert status == 408
    assert "1 s" in json.loads(body)["message"]


def test_at_most_3_connections_are_served_at_once_and_a_4th_gets_a_503(api: Any) -> None:
    stalled = [connect(api) for _ in range(3)]
    for conn in stalled:
        conn.sendall(b"GET /openapi.json HTTP/1.1\r\n")  # each holds a thread until its timeout
    try:
        with connect(api) as fourth:
            fourth.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: localhost\r\n\r\n")
            status, headers, _ = answer(fourth)
        assert status == 503
        assert headers["retry-after"] == "1"
    finally:
        for conn in stalled:
            assert conn.recv(1024) == b""  # cut off after the client timeout, freeing its thread
            conn.close()
    with connect(api) as fifth:
        fifth.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert answer(fifth)[0] == 200
