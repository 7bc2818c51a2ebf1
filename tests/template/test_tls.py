"""Why the template sets SSL_CERT_FILE: libpq's `sslrootcert=system` in psycopg's wheel finds no roots without it.

`sslrootcert=system` (libpq 16+) loads "the SSL implementation's" default roots. The OpenSSL bundled in
psycopg's binary wheel was built with its own folder for them (`/usr/lib/psycopg-openssl`), which exists on no
Lambda runtime, so with public roots (the RDS Proxy case) the template points `SSL_CERT_FILE` at Amazon Linux
2023's bundle. Here a real libpq does the TLS handshake with a server whose certificate comes from a test CA:
verified when SSL_CERT_FILE names that CA, refused without it.
"""

from __future__ import annotations

import socket
import ssl
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

SSL_REQUEST = struct.pack("!ii", 8, 80877103)  # what libpq sends first to ask for TLS
VERIFIED = "tls test: the client verified the server and sent its startup message"


def error_response(message: str) -> bytes:
    """A PostgreSQL ErrorResponse (FATAL, invalid authorization) carrying `message`."""
    fields = b"".join(code + text.encode() + b"\0" for code, text in
                      ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", "28000"), (b"M", message))) + b"\0"  # fmt: skip
    return b"E" + struct.pack("!i", 4 + len(fields)) + fields


CONNECT = """
import sys, psycopg
try:
    psycopg.connect(sys.argv[1], connect_timeout=5).close()
except psycopg.OperationalError as error:
    print(str(error))
"""


def openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test root CA (ca.pem) and a certificate for `localhost` it signed (server.pem, server.key)."""
    folder = tmp_path_factory.mktemp("tls")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=k6-experiments test root", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=localhost", cwd=folder)  # fmt: skip
    (folder / "server.ext").write_text("subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "server.ext", cwd=folder)  # fmt: skip
    return folder


@pytest.fixture
def tls_server(certificates: Path) -> Iterator[int]:
    """A server that answers libpq's SSLRequest like PostgreSQL, completes the handshake, then refuses the login."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates / "server.pem", certificates / "server.key")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(30)

    def serve() -> None:
        try:
            connection, _ = listener.accept()
        except OSError:
            return
        with connection:
            if connection.recv(8) != SSL_REQUEST:
                return
            connection.sendall(b"S")
            try:
                with context.wrap_socket(connection, server_side=True) as tls:
                    tls.recv(1024)  # the startup message: the handshake succeeded
                    tls.sendall(error_response(VERIFIED))
            except (ssl.SSLError, OSError):
                pass  # the client refused our certificate

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    listener.close()
    thread.join(timeout=10)


def connect_with_system_roots(port: int, env: dict[str, str]) -> str:
    """The error psycopg reports connecting with `sslrootcert=system` (the server refuses every login)."""
    conninfo = f"host=localhost port={port} dbname=x user=x sslrootcert=system gssencmode=disable"
    done = subprocess.run(
        [sys.executable, "-c", CONNECT, conninfo], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_libpq_system_roots_follow_ssl_cert_file(certificates: Path, tls_server: int) -> None:
    error = connect_with_system_roots(
        tls_server, {"PATH": "/usr/bin:/bin", "SSL_CERT_FILE": str(certificates / "ca.pem")}
    )
    assert VERIFIED in error, error


def test_without_ssl_cert_file_libpq_finds_no_roots_for_the_same_server(tls_server: int) -> None:
    """psycopg's OpenSSL looks in /usr/lib/psycopg-openssl, which has no roots here, nor in Lambda."""
    assert not Path("/usr/lib/psycopg-openssl/cert.pem").exists()
    error = connect_with_system_roots(tls_server, {"PATH": "/usr/bin:/bin"})
    assert "certificate verify failed" in error and VERIFIED not in error
