"""Real processes for the operations tests: gunicorn with several workers, a
`cashback_worker`, and a webhook receiver, on the test database this test runs on."""

from __future__ import annotations

import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

import requests
from django.conf import settings
from django.db import connection
from prometheus_client.parser import text_string_to_metric_families


def database_url() -> str:
    """Return a DATABASE_URL for the test database (SQLite file or PostgreSQL)."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    auth = quote(s["USER"] or "postgres", safe="")
    if s["PASSWORD"]:
        auth += ":" + quote(s["PASSWORD"], safe="")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def process_env(**overrides: str) -> dict[str, str]:
    """Return the environment of a gateway process that shares this test's database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMETHEUS_")}
    env.update(
        {
            "SECRET_KEY": settings.SECRET_KEY,
            "API_KEY_HMAC_SECRET": settings.API_KEY_HMAC_SECRET,
            "DATABASE_URL": database_url(),
            "DATABASE_POOL_MIN": "1",
            "DATABASE_POOL_MAX": "4",
            "CASHBACK_SANDBOX": "on",
            "API_THROTTLE_RATE": "off",
            "API_IP_THROTTLE_RATE": "off",
            "WEBHOOK_ALLOW_PRIVATE": "on",
            "SECURE_COOKIES": "off",
            "DEBUG": "off",
            "LOG_LEVEL": "WARNING",
            "GUNICORN_WORKERS": "2",
            "GUNICORN_THREADS": "2",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(overrides)
    return env


class Receiver(ThreadingHTTPServer):
    """A merchant's webhook endpoint that answers 200 and counts what it received."""

    daemon_threads = True

    def __init__(self) -> None:
        self.received: list[bytes] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.received.append(body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def scrape(url: str, token: str = "") -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Return every sample of `url`'s metrics as {(name, sorted labels): value}."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = requests.get(url, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples
