"""Every outcome of an upstream call, from a real local upstream, becomes the right status."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from cashback.models import Alert, Attempt, Purchase, Status


def closed_port_url() -> str:
    """Return a URL on a local port where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/new_purchase"


@pytest.mark.parametrize(
    ("mode", "http", "status", "error"),
    [
        ("ok", 201, Status.SENT, None),
        ("error", 422, Status.REJECTED, "purchase refused by the sandbox"),
        ("auth", 202, Status.PENDING, "authentication failed"),
        ("429", 202, Status.PENDING, "upstream busy (HTTP 429)"),
        ("503", 202, Status.PENDING, "upstream busy (HTTP 503)"),
        ("500", 202, Status.UNKNOWN, "upstream error (HTTP 500)"),
        ("garbage", 202, Status.UNKNOWN, "unexpected answer (HTTP 200, not the documented JSON)"),
        ("drop", 202, Status.UNKNOWN, "connection lost after the request was sent"),
    ],
)
def test_each_upstream_answer_becomes_its_status(
    shop: Any, upstream: Any, mode: str, http: int, status: str, error: str | None
) -> None:
    upstream.state.set_mode(mode)

    response = shop.post_purchase()

    assert response.status_code == http
    body = response.json()
    assert body["status"] == status
    assert body["error"] == error
    assert upstream.state.requests == 1
    attempt = Attempt.objects.get()
    assert attempt.number == 1
    assert attempt.error == (error or "")


def test_a_slow_upstream_times_out_as_unknown(shop: Any, upstream: Any, settings: Any) -> None:
    settings.CASHBACK_TIMEOUT = 0.3
    upstream.state.set_mode("slow", slow_seconds=1.5)

    response = shop.post_purchase()

    assert response.status_code == 202
    assert response.json()["status"] == "unknown"
    assert response.json()["error"] == "no answer within 0.3 s (read timeout)"


def test_a_refused_connection_is_pending_with_a_retry_time(shop: Any, settings: Any) -> None:
    settings.CASHBACK_API_URL = closed_port_url()

    response = shop.post_purchase()

    assert response.status_code == 202
    assert response.json()["status"] == "pending"
    assert response.json()["error"] == "could not connect to upstream"
    purchase = Purchase.objects.get()
    delay = (purchase.next_attempt_at - purchase.updated_at).total_seconds()
    assert 8 <= delay <= 12  # first retry after 10 s ± 20 % jitter


def test_authentication_failed_raises_an_alert_for_admins(shop: Any, upstream: Any) -> None:
    upstream.state.set_mode("auth", count=2)

    shop.post_purchase(order_id="a")
    shop.post_purchase(order_id="b")

    alert = Alert.objects.get()
    assert alert.kind == Alert.Kind.AUTH_FAILED
    assert alert.count == 2
    assert alert.resolved_at is None
    assert "CASHBACK_PARTNER_KEY" in alert.message


def test_the_partner_key_is_never_stored_in_attempts(
    shop: Any, upstream: Any, settings: Any
) -> None:
    upstream.state.set_mode("error")
    shop.post_purchase()

    attempt = Attempt.objects.get()
    stored = " ".join(str(v) for v in attempt.__dict__.values())
    assert settings.CASHBACK_PARTNER_KEY not in stored
