"""`/metrics` in one process: who may read it, and how often the database gauges are read."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from cashback import gauges as collector

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_gauges() -> None:
    collector.STATE.clear()
    collector.RUNWAY.clear()


def test_without_a_token_loopback_reads_the_metrics() -> None:
    response = Client().get("/metrics")  # REMOTE_ADDR 127.0.0.1
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert b'cashback_purchases_in_status{status="unknown"} 0.0' in response.content


@pytest.mark.parametrize(
    "meta",
    [
        {"REMOTE_ADDR": "203.0.113.7"},
        {"REMOTE_ADDR": "10.0.0.5"},
        # A reverse proxy on the same host connects from loopback but names the client.
        {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.7"},
        {"REMOTE_ADDR": "::1", "HTTP_FORWARDED": "for=203.0.113.7"},
    ],
)
def test_without_a_token_anyone_else_is_refused(meta: dict[str, str]) -> None:
    response = Client().get("/metrics", **meta)  # type: ignore[arg-type]
    assert (response.status_code, response.json()) == (403, {"detail": "Not allowed."})
    assert b"cashback_" not in response.content


def test_with_a_token_only_the_token_reads_the_metrics(settings: Any) -> None:
    settings.METRICS_TOKEN = "s3cret-metrics-token"
    client = Client()
    assert client.get("/metrics").status_code == 401  # loopback is not enough any more
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="s3cret-metrics-token").status_code == 401
    response = client.get(
        "/metrics", HTTP_AUTHORIZATION="Bearer s3cret-metrics-token", REMOTE_ADDR="203.0.113.7"
    )
    assert response.status_code == 200


def test_database_gauges_are_read_once_per_cache_period(settings: Any) -> None:
    settings.METRICS_CACHE_SECONDS = 60
    settings.METRICS_RUNWAY_CACHE_SECONDS = 60
    client = Client()
    with CaptureQueriesContext(connection) as first:
        assert client.get("/metrics").status_code == 200
    with CaptureQueriesContext(connection) as second:
        assert client.get("/metrics").status_code == 200
    assert len(first) > 0
    assert len(second) == 0


def test_metrics_are_refused_for_post() -> None:
    assert Client().post("/metrics").status_code == 405


def test_refused_api_keys_and_throttled_guesses_are_counted(settings: Any) -> None:
    import random

    from prometheus_client import REGISTRY
    from rest_framework.test import APIClient

    settings.API_IP_THROTTLE_RATE = "2/m"
    address = f"203.0.113.{random.randint(1, 254)}"

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    failures = sample("cashback_api_auth_failures_total")
    throttled = sample("cashback_throttled_requests_total", scope="failed_auth")
    client = APIClient(REMOTE_ADDR=address)
    client.credentials(HTTP_AUTHORIZATION="Bearer cbk_wrongwrongwrong")
    codes = [client.get("/api/v1/merchant").status_code for _ in range(4)]
    assert codes == [401, 401, 429, 429]
    assert sample("cashback_api_auth_failures_total") == failures + 2
    assert sample("cashback_throttled_requests_total", scope="failed_auth") == throttled + 2
