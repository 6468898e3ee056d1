"""Webhook deliveries: the address is checked on the connection actually made."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests
from requests_hardened.ip_filter import InvalidIPAddress

from cashback import webhooks
from cashback.models import WebhookDelivery
from gateway.http import DeadlineExceeded, webhook_post, webhook_session
from merchants.models import Merchant
from tests.cashback.upstreams import (
    ScriptedServer,
    answer,
    make_certificate,
    read_request,
    server_context,
)


@pytest.fixture
def receiver() -> Any:
    def ok(conn: Any, server: ScriptedServer) -> None:
        server.requests.append(read_request(conn))
        conn.sendall(answer(200, b"ok"))

    server = ScriptedServer(ok)
    yield server
    server.close()


@pytest.mark.parametrize("host", ["localhost", "0.0.0.0", "[::ffff:127.0.0.1]", "127.0.0.1"])
def test_an_address_inside_our_network_is_refused_before_any_connection(
    settings: Any, receiver: ScriptedServer, host: str
) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = False

    with pytest.raises(InvalidIPAddress):
        webhook_session().post(f"http://{host}:{receiver.port}/hook", data=b"{}")

    assert receiver.connections == 0


@pytest.mark.parametrize("address", ["240.0.0.1", "100.64.0.1", "169.254.169.254", "[fc00::1]"])
def test_reserved_and_shared_ranges_are_refused_too(settings: Any, address: str) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = False

    with pytest.raises(InvalidIPAddress):
        webhook_session().post(f"http://{address}/hook", data=b"{}", timeout=0.2)


def test_the_same_session_connects_when_private_targets_are_allowed(
    settings: Any, receiver: ScriptedServer
) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = True

    response = webhook_session().post(f"http://localhost:{receiver.port}/hook", data=b"{}")

    assert response.status_code == 200
    assert receiver.connections == 1


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_webhook_redirect_is_not_followed(settings: Any, status: int) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = True
    elsewhere = ScriptedServer(lambda conn, s: conn.sendall(answer(200, b"")))
    moved = ScriptedServer(
        lambda conn, s: (
            read_request(conn),
            conn.sendall(answer(status, b"", {"Location": elsewhere.url()})),
        )
    )
    try:
        response = webhook_session().post(moved.url(), data=b"{}")
        assert response.status_code == status
        assert elsewhere.connections == 0
    finally:
        moved.close()
        elsewhere.close()


def test_a_delivery_to_a_name_resolving_to_loopback_never_reaches_it(
    shop: Any, upstream: Any, settings: Any, receiver: ScriptedServer
) -> None:
    Merchant.objects.filter(pk=shop.merchant.pk).update(
        webhook_url=f"https://localhost:{receiver.port}/hook", webhook_secret="whsec_test-secret"
    )
    shop.post_purchase()
    settings.WEBHOOK_ALLOW_PRIVATE = False
    delivery = WebhookDelivery.objects.get()
    claimed = webhooks.claim_due(delivery.next_attempt_at, 10)

    for item in claimed:
        webhooks.deliver_claimed(item)

    delivery.refresh_from_db()
    assert delivery.state == "failed"
    assert delivery.last_error in (
        "The host localhost resolves to 127.0.0.1, which is not a public address.",
        "The host localhost resolves to ::1, which is not a public address.",
    )
    assert receiver.connections == 0


def trickle(conn: Any, server: ScriptedServer) -> None:
    """Answer 200, one byte every 0.1 s: each read well within any socket timeout."""
    server.requests.append(read_request(conn))
    for byte in answer(200, b"ok"):
        conn.sendall(bytes([byte]))
        time.sleep(0.1)


def test_a_receiver_trickling_its_answer_is_cut_at_the_total_deadline(settings: Any) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = True
    settings.WEBHOOK_TIMEOUT = 0.6
    slow = ScriptedServer(trickle)  # its whole answer would take about 4 s
    try:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded, match=r"no answer within 0.6 s"):
            webhook_post(slow.url(), b"{}", {"Content-Type": "application/json"})
        elapsed = time.monotonic() - started
        assert slow.done.wait(2)  # the receiver saw its connection cut
    finally:
        slow.close()
    assert 0.6 <= elapsed < 1.2
    assert len(slow.requests) == 1
    assert len(slow.errors) == 1  # its next byte met the cut connection


def silent(conn: Any, server: ScriptedServer) -> None:
    """Read the request, then say nothing until the other side hangs up."""
    server.requests.append(read_request(conn))
    conn.recv(1)


@pytest.mark.parametrize("script", [trickle, silent], ids=["trickling", "silent"])
def test_a_receiver_over_tls_is_cut_at_the_total_deadline_too(
    settings: Any, monkeypatch: Any, tmp_path: Any, script: Any
) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = True
    settings.WEBHOOK_TIMEOUT = 0.6
    cert, key = make_certificate(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))  # trust the throwaway certificate
    slow = ScriptedServer(script, tls=server_context(cert, key))
    try:
        started = time.monotonic()
        with pytest.raises(requests.Timeout):
            webhook_post(slow.url(host="localhost"), b"{}", {})
        elapsed = time.monotonic() - started
    finally:
        slow.close()
    assert 0.6 <= elapsed < 1.2
    assert len(slow.requests) == 1  # the TLS handshake and the request went through


def test_a_trickled_delivery_is_retried_as_timed_out_and_frees_its_slot(
    shop: Any, upstream: Any, settings: Any
) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = True
    settings.WEBHOOK_TIMEOUT = 0.6
    slow = ScriptedServer(trickle)
    try:
        Merchant.objects.filter(pk=shop.merchant.pk).update(
            webhook_url=slow.url(), webhook_secret="whsec_test-secret"
        )
        assert shop.post_purchase().status_code == 201
        delivery = WebhookDelivery.objects.get()
        (claimed,) = webhooks.claim_due(delivery.next_attempt_at, 10)
        started = time.monotonic()
        webhooks.deliver_claimed(claimed)
        elapsed = time.monotonic() - started
    finally:
        slow.close()
    delivery.refresh_from_db()
    assert elapsed < 1.2
    assert (delivery.state, delivery.attempts, delivery.last_status, delivery.last_error) == (
        "pending",
        1,
        None,
        "DeadlineExceeded",
    )
    assert delivery.lease_until is None
