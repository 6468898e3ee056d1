"""Misbehaving local upstreams for the client's fault tests: real sockets, scripted answers.

Each server listens on a free loopback port and runs a script per connection in its own
thread. Scripts see the raw socket (or the TLS socket, for `tls=`), so they can answer
halfway, trickle, reset or break the TLS stream after reading the request.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

Script = Callable[[Any, "ScriptedServer"], None]


def read_request(conn: Any) -> bytes:
    """Read one HTTP request (headers and a Content-Length body); return it whole."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def request_body(request: bytes) -> bytes:
    return request.partition(b"\r\n\r\n")[2]


def answer(status: int, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    """Return the bytes of a complete HTTP/1.1 answer."""
    lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def reset(conn: Any) -> None:
    """Close with a TCP reset (SO_LINGER 0) instead of a clean FIN."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


class ScriptedServer:
    """A loopback server that runs `script(conn, server)` for each connection."""

    def __init__(self, script: Script, *, tls: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.tls = tls
        self.connections = 0
        self.requests: list[bytes] = []
        self.errors: list[BaseException] = []
        self.done = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._serve, daemon=True).start()

    def url(self, scheme: str = "", host: str = "127.0.0.1") -> str:
        scheme = scheme or ("https" if self.tls else "http")
        return f"{scheme}://{host}:{self.port}/new_purchase"

    def _serve(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            self.script(conn, self)
        except (OSError, ssl.SSLError) as exc:
            self.errors.append(exc)
        finally:
            with contextlib.suppress(OSError):
                conn.close()
            self.done.set()

    def close(self) -> None:
        self._closed = True
        self.sock.close()


def make_certificate(directory: Path, name: str = "localhost") -> tuple[Path, Path]:
    """Write a throwaway self-signed certificate for `name` and 127.0.0.1; return (cert, key)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            f"/CN={name}",
            "-addext",
            f"subjectAltName=DNS:{name},IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context
