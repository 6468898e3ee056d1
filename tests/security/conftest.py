"""Helpers of the security tests: the gateway under gunicorn on the test database, and
`manage.py` in a subprocess with an environment of the test's choosing."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]
GUNICORN = Path(sys.executable).with_name("gunicorn")
TEST_SECRET_KEY = "test-only-secret-key-0123456789abcdefghijklmnop"

# What every subprocess starts from: only the basics of this process's environment, so a
# setting the test does not name cannot leak in. Variables set (even empty) win over a
# developer's .env, so the ones a test depends on are always set.
_BASE_ENV_NAMES = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")


def clean_env(**overrides: str) -> dict[str, str]:
    """Return a minimal environment for a subprocess with `overrides` applied."""
    env = {k: v for k, v in os.environ.items() if k in _BASE_ENV_NAMES}
    env.update(
        SECRET_KEY=TEST_SECRET_KEY,
        DEBUG="off",
        SECURE_COOKIES="on",
        CASHBACK_SANDBOX="off",
        CASHBACK_PARTNER="",
        CASHBACK_PARTNER_KEY="",
        CASHBACK_PARTNER_KEY_FILE="",
        LOG_LEVEL="WARNING",
        PYTHONDONTWRITEBYTECODE="1",
        DATABASE_URL="sqlite:////tmp/unused-security-check.sqlite3",
    )
    env.update(overrides)
    return env


def manage(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `manage.py ARGS` in a subprocess and return what it did."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_database_url() -> str:
    """Return a DATABASE_URL that points a subprocess at this test's database."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    host = s.get("HOST") or "127.0.0.1"
    port = s.get("PORT") or 5432
    auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
    return f"postgres://{auth}@{host}:{port}/{s['NAME']}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GatewayServer:
    """The gateway under gunicorn in a subprocess; its stdout and stderr go to one file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = env | {"GUNICORN_BIND": f"127.0.0.1:{self.port}"}
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [str(GUNICORN), "-c", "gunicorn.conf.py", "gateway.wsgi:application"],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        # Generous: on a shared 2-core machine several workers can take long to boot.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited:\n{self.log()}")
            try:
                if requests.get(f"{self.url}/healthz", timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                # The master accepts before its worker has loaded the app.
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gunicorn did not start:\n{self.log()}")

    def log(self) -> str:
        """Return everything the server printed so far."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        # SIGINT is gunicorn's quick shutdown; SIGTERM would wait out open keep-alives.
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture
def start_gateway(transactional_db: None, tmp_path: Path) -> Iterator[Any]:
    """Start the gateway under gunicorn on the test database with extra environment.

    The test's data must be committed for the server to see it, hence `transactional_db`.
    """
    servers: list[GatewayServer] = []

    def start(**env: str) -> GatewayServer:
        base = clean_env(
            DATABASE_URL=test_database_url(),
            DATABASE_POOL="off",
            CASHBACK_SANDBOX="on",
            API_THROTTLE_RATE="off",
            API_IP_THROTTLE_RATE="off",
            SECURE_COOKIES="off",
            GUNICORN_WORKERS="1",
            GUNICORN_THREADS="4",
            STATIC_MANIFEST="off",
            THROTTLE_HOST_DB=str(tmp_path / "throttle.sqlite3"),
        )
        server = GatewayServer(base | env, tmp_path / f"gunicorn-{len(servers)}.log")
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def plain_static(settings: Any) -> None:
    """Render pages without the manifest of hashed static names (tests skip collectstatic)."""
    settings.STORAGES = settings.STORAGES | {
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
    }
