"""Merchant webhooks, delivered to a real local receiver: signed, retried on 5xx only."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.utils import timezone

from cashback import webhooks, worker
from cashback.models import WebhookDelivery
from merchants.models import Merchant


class Receiver(ThreadingHTTPServer):
    """A merchant's endpoint: records what it gets and answers the next planned status."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ReceiverHandler)
        self.statuses: list[int] = []
        self.received: list[tuple[dict[str, str], bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/cashback"


class ReceiverHandler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((dict(self.headers), body))
        status = self.server.statuses.pop(0) if self.server.statuses else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def subscribe(shop: Any, url: str) -> str:
    response = shop.client.patch("/api/v1/merchant", {"webhook_url": url}, format="json")
    assert response.status_code == 200, response.content
    secret = response.json()["webhook_secret"]
    assert secret.startswith("whsec_")
    assert shop.client.get("/api/v1/merchant").json()["webhook_secret"] is None  # shown once
    return secret


def deliver_all(minutes_later: float = 0) -> None:
    worker.run_once(now=timezone.now() + timedelta(minutes=minutes_later, seconds=1))


def test_a_sent_purchase_is_posted_signed_to_the_merchant(
    shop: Any, upstream: Any, receiver: Receiver
) -> None:
    secret = subscribe(shop, receiver.url)
    resource = shop.post_purchase().json()

    deliver_all()

    [(headers, body)] = receiver.received
    assert webhooks.verify(secret, headers["X-Cashback-Signature"], body)
    assert not webhooks.verify("whsec_wrong", headers["X-Cashback-Signature"], body)
    assert not webhooks.verify(secret, headers["X-Cashback-Signature"], body + b" ")
    assert json.loads(body) == {"event": "purchase.sent", "data": resource}
    delivery = WebhookDelivery.objects.get()
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("delivered", 1, 200)


def test_the_signing_secret_can_be_rotated(shop: Any, upstream: Any, receiver: Receiver) -> None:
    old = subscribe(shop, receiver.url)
    response = shop.client.patch("/api/v1/merchant", {"rotate_webhook_secret": True}, format="json")
    new = response.json()["webhook_secret"]
    assert new.startswith("whsec_") and new != old
    shop.post_purchase()

    deliver_all()

    [(headers, body)] = receiver.received
    assert webhooks.verify(new, headers["X-Cashback-Signature"], body)
    assert not webhooks.verify(old, headers["X-Cashback-Signature"], body)


def test_an_old_signature_is_refused_as_a_replay() -> None:
    header = webhooks.sign("whsec_x", 1_000_000, b"{}")
    assert webhooks.verify("whsec_x", header, b"{}", now=1_000_100)
    assert not webhooks.verify("whsec_x", header, b"{}", now=1_000_000 + 301)


def test_a_500_answer_is_retried_until_delivered(
    shop: Any, upstream: Any, receiver: Receiver
) -> None:
    subscribe(shop, receiver.url)
    receiver.statuses = [500, 503]
    shop.post_purchase()

    deliver_all()
    delivery = WebhookDelivery.objects.get()
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("pending", 1, 500)
    deliver_all()  # not due yet: the next attempt waits for its backoff
    assert len(receiver.received) == 1
    deliver_all(minutes_later=2)
    deliver_all(minutes_later=10)

    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("delivered", 3, 200)
    assert len(receiver.received) == 3


def test_a_400_answer_is_not_retried(shop: Any, upstream: Any, receiver: Receiver) -> None:
    subscribe(shop, receiver.url)
    receiver.statuses = [400]
    shop.post_purchase()

    deliver_all()
    deliver_all(minutes_later=60)

    delivery = WebhookDelivery.objects.get()
    assert (delivery.state, delivery.last_status, delivery.last_error) == (
        "failed",
        400,
        "HTTP 400: not retried",
    )
    assert len(receiver.received) == 1

    webhooks.redeliver(delivery.pk)  # an admin's redeliver
    deliver_all()
    delivery.refresh_from_db()
    assert (delivery.state, len(receiver.received)) == ("delivered", 2)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://127.0.0.1/hook", "resolves to 127.0.0.1, which is not a public address"),
        ("https://10.1.2.3/hook", "resolves to 10.1.2.3, which is not a public address"),
        ("https://169.254.169.254/latest", "which is not a public address"),
        ("https://[::1]/hook", "which is not a public address"),
        ("http://93.184.215.14/hook", "Webhook URLs must use https."),
    ],
)
def test_private_and_plain_http_webhook_urls_are_refused(
    shop: Any, settings: Any, url: str, message: str
) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = False

    response = shop.client.patch("/api/v1/merchant", {"webhook_url": url}, format="json")

    assert response.status_code == 400
    assert message in response.json()["webhook_url"][0]


def test_a_private_address_is_refused_at_delivery_time_too(
    shop: Any, upstream: Any, receiver: Receiver, settings: Any
) -> None:
    subscribe(shop, receiver.url)  # allowed while WEBHOOK_ALLOW_PRIVATE is on, as in development
    shop.post_purchase()
    settings.WEBHOOK_ALLOW_PRIVATE = False
    Merchant.objects.filter(pk=shop.merchant.pk).update(
        webhook_url=receiver.url.replace("http://", "https://")
    )

    deliver_all()

    delivery = WebhookDelivery.objects.get()
    assert delivery.state == "failed"
    assert "which is not a public address" in delivery.last_error
    assert receiver.received == []
