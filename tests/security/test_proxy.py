"""deploy/nginx.conf in front of a gunicorn: slow request bodies wait at nginx, /healthz and
purchases stay quick; without it, a few dozen slow bodies hold every gunicorn thread."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import urllib3

from tests.conftest import purchase_body
from tests.security.conftest import ROOT, free_port

pytestmark = pytest.mark.slow

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
SLOW_CLIENTS = 40
SLOW_HEAD = (
    "POST /new_purchase HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\npartner=s"
)


class Nginx:
    """deploy/nginx.conf, with test addresses and a self-signed certificate, in the foreground."""

    def __init__(self, tmp: Path, upstream_port: int) -> None:
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        cert, key = tmp / "cert.pem", tmp / "key.pem"
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes"),
                *("-subj", "/CN=127.0.0.1", "-days", "1"),
                *("-keyout", str(key), "-out", str(cert)),
            ],
            check=True,
            capture_output=True,
        )
        site = (ROOT / "deploy" / "nginx.conf").read_text()
        for old, new in [
            ("server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream_port};"),
            ("    listen 80;\n", f"    listen 127.0.0.1:{free_port()};\n"),
            ("    listen [::]:80;\n", ""),
            ("    listen 443 ssl;\n", f"    listen 127.0.0.1:{self.port} ssl;\n"),
            ("    listen [::]:443 ssl;\n", ""),
            ("/etc/letsencrypt/live/gateway.example.com/fullchain.pem", str(cert)),
            ("/etc/letsencrypt/live/gateway.example.com/privkey.pem", str(key)),
        ]:
            assert site.count(old) == 1, old  # the test runs the file as shipped
            site = site.replace(old, new)
        (tmp / "site.conf").write_text(site)
        temp_paths = "\n".join(
            f"  {kind}_temp_path {tmp}/{kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        (tmp / "nginx.conf").write_text(
            ("user root;\n" if os.geteuid() == 0 else "")
            + f"daemon off;\nworker_processes 1;\npid {tmp}/nginx.pid;\n"
            f"error_log {tmp}/error.log warn;\n"
            "events { worker_connections 512; }\n"
            f"http {{\n  access_log off;\n{temp_paths}\n  include {tmp}/site.conf;\n}}\n"
        )
        self.error_log = tmp / "error.log"
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-e", str(self.error_log)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nginx did not start: {self.log()}")

    def log(self) -> str:
        return self.error_log.read_text() if self.error_log.exists() else ""

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture
def nginx_binary() -> str:
    if not Path(NGINX).exists():
        if os.environ.get("REQUIRE_NGINX"):
            pytest.fail(f"{NGINX} is missing and REQUIRE_NGINX is set.")
        pytest.skip(f"{NGINX} is missing (apt-get install nginx-light)")
    return NGINX


@pytest.fixture
def slow_clients() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for s in opened:
        s.close()


def open_slow_bodies(
    host_port: tuple[str, int], n: int, opened: list[socket.socket], *, tls: bool
) -> None:
    """Open `n` connections that send a request's head and 9 of its 1000 body bytes, then wait."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    for _ in range(n):
        s = socket.create_connection(host_port, timeout=5)
        if tls:
            s = context.wrap_socket(s, server_hostname="127.0.0.1")
        s.sendall(SLOW_HEAD.encode())
        opened.append(s)


def timed_get(url: str, timeout: float) -> tuple[int | None, float]:
    started = time.monotonic()
    try:
        status: int | None = requests.get(url, timeout=timeout, verify=False).status_code
    except requests.RequestException:
        status = None
    return status, time.monotonic() - started


def test_slow_bodies_wait_at_nginx_and_the_gateway_stays_quick(
    nginx_binary: str,
    start_gateway: Any,
    shop: Any,
    upstream: Any,
    tmp_path: Path,
    slow_clients: list[socket.socket],
) -> None:
    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    # One worker with four threads, as a small host runs it.
    gateway = start_gateway(
        CASHBACK_SANDBOX_URL=upstream.url,
        NUM_PROXIES="1",
        GUNICORN_WORKERS="1",
        GUNICORN_THREADS="4",
    )
    proxy = Nginx(tmp_path, gateway.port)
    try:
        open_slow_bodies(("127.0.0.1", proxy.port), SLOW_CLIENTS, slow_clients, tls=True)

        health, health_seconds = timed_get(f"{proxy.url}/healthz", timeout=5)
        started = time.monotonic()
        purchase = requests.post(
            f"{proxy.url}/api/v1/purchases",
            json=purchase_body(order_id="behind-nginx"),
            headers={"Authorization": f"Bearer {shop.key}"},
            timeout=10,
            verify=False,
        )
        purchase_seconds = time.monotonic() - started
        too_large = requests.post(
            f"{proxy.url}/api/v1/purchases", data=b"x" * 100_000, timeout=10, verify=False
        )
    finally:
        proxy.stop()

    assert health == 200, proxy.log()
    assert health_seconds < 2
    assert purchase.status_code == 201, purchase.text
    assert purchase_seconds < 3
    assert too_large.status_code == 413
    assert too_large.json() == {"detail": "Request body is larger than 64 KiB."}

    # Without the proxy, the same slow bodies hold every gunicorn thread.
    open_slow_bodies(("127.0.0.1", gateway.port), SLOW_CLIENTS, slow_clients, tls=False)
    direct, _ = timed_get(f"{gateway.url}/healthz", timeout=2)
    assert direct is None
