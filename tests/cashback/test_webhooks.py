"""Merchant webhooks, delivered to a real local receiver: signed, retried on 5xx only."""

from __future__ import annotations

import base64
import binascii
import secrets
import threading
import time
from collections.abc import Iterator
from datetime import UTC, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.utils import timezone
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from cashback import webhooks, worker
from cashback.models import WebhookDelivery
from merchants.models import EntryKind, Merchant
from merchants.services import record_entry


class Receiver(ThreadingHTTPServer):
    """A merchant's endpoint: verifies each delivery with `standardwebhooks`, records it, and
    answers the next planned status (401 when the signature does not verify)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ReceiverHandler)
        self.statuses: list[int] = []
        self.received: list[tuple[dict[str, str], bytes]] = []
        # What the receiver verifies with: a `whsec_` secret, or the raw key of an old one.
        self.key: str | bytes | None = None
        self.verified: list[Any] = []
        self.refused: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/cashback"


class ReceiverHandler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        headers = dict(self.headers)
        self.server.received.append((headers, body))
        status = self.server.statuses.pop(0) if self.server.statuses else 200
        if self.server.key is not None:
            try:
                self.server.verified.append(Webhook(self.server.key).verify(body, headers))
            except WebhookVerificationError as exc:
                self.server.refused.append(str(exc))
                status = 401
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
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    after = shop.client.get("/api/v1/merchant").json()
    assert after["webhook_secret"] is None  # shown once
    assert after["webhook_secret_legacy"] is False
    return secret


def give_old_secret(shop: Any, url: str) -> str:
    """Subscribe `shop` with a secret of the form issued before Standard Webhooks."""
    old = "whsec_" + secrets.token_urlsafe(32)
    Merchant.objects.filter(pk=shop.merchant.pk).update(webhook_url=url, webhook_secret=old)
    return old


def deliver_all(minutes_later: float = 0) -> None:
    worker.run_once(now=timezone.now() + timedelta(minutes=minutes_later, seconds=1))


def test_a_sent_purchase_is_posted_with_standard_webhooks_headers(
    shop: Any, upstream: Any, receiver: Receiver
) -> None:
    secret = subscribe(shop, receiver.url)
    receiver.key = secret
    resource = shop.post_purchase().json()

    deliver_all()

    delivery = WebhookDelivery.objects.get()
    [(headers, body)] = receiver.received
    assert receiver.refused == []
    created = delivery.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    expected = {"type": "purchase.sent", "timestamp": created, "event": "purchase.sent"}
    assert receiver.verified == [expected | {"data": resource}]
    assert headers["webhook-id"] == f"msg_{delivery.pk}"
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    assert "X-Cashback-Signature" not in headers  # a rotated merchant gets the standard only
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + base64.b64encode(b"w" * 32).decode()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", headers)
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("delivered", 1, 200)


def test_every_event_verifies_and_the_id_is_stable_across_retries(
    make_merchant: Any, upstream: Any, receiver: Receiver
) -> None:
    shop = make_merchant(percentage="10")
    record_entry(shop.merchant, EntryKind.DEPOSIT, Decimal("1.00"), "EUR")
    receiver.key = subscribe(shop, receiver.url)
    shop.post_purchase(order_id="A-1", currency_amount="9.00")  # sent; reserves 0.90 of 1.00
    upstream.state.set_mode("error", count=1)
    shop.post_purchase(order_id="A-2", currency_amount="1.00", partner_cashback_percentage="0")
    receiver.statuses = [503]

    deliver_all()
    deliver_all(minutes_later=2)

    events = [v["type"] for v in receiver.verified]  # the one answered 503 twice
    assert sorted(set(events)) == ["balance.low", "purchase.rejected", "purchase.sent"]
    assert len(events) == 4
    assert receiver.refused == []
    # The 503 was retried with the same webhook-id (receivers deduplicate on it).
    ids = [h["webhook-id"] for h, _ in receiver.received]
    assert len(ids) == 4 and len(set(ids)) == 3
    assert ids[0] in ids[1:]


def test_a_merchant_on_an_old_secret_gets_both_headers_until_it_rotates(
    shop: Any, upstream: Any, receiver: Receiver
) -> None:
    old = give_old_secret(shop, receiver.url)
    assert shop.client.get("/api/v1/merchant").json()["webhook_secret_legacy"] is True
    with pytest.raises(binascii.Error):  # an old secret does not decode as `whsec_` base64
        base64.b64decode(old.removeprefix("whsec_"), validate=True)
    receiver.key = old.encode()  # the new headers are signed with the old secret's bytes
    shop.post_purchase(order_id="A-1")

    deliver_all()

    [(headers, body)] = receiver.received
    assert receiver.refused == [] and len(receiver.verified) == 1
    assert webhooks.verify(old, headers["X-Cashback-Signature"], body)
    assert not webhooks.verify(old, headers["X-Cashback-Signature"], body + b" ")
    assert headers["webhook-id"].startswith("msg_")

    response = shop.client.patch("/api/v1/merchant", {"rotate_webhook_secret": True}, format="json")
    new = response.json()["webhook_secret"]
    assert response.json()["webhook_secret_legacy"] is False
    assert new.startswith("whsec_") and new != old
    receiver.key = new
    shop.post_purchase(order_id="A-2")

    deliver_all()

    (headers, body) = receiver.received[1]
    assert "X-Cashback-Signature" not in headers
    assert receiver.refused == [] and len(receiver.verified) == 2
    with pytest.raises(WebhookVerificationError):
        Webhook(old.encode()).verify(body, headers)


def test_the_signing_secret_can_be_rotated(shop: Any, upstream: Any, receiver: Receiver) -> None:
    old = subscribe(shop, receiver.url)
    response = shop.client.patch("/api/v1/merchant", {"rotate_webhook_secret": True}, format="json")
    new = response.json()["webhook_secret"]
    assert new.startswith("whsec_") and new != old
    receiver.key = new
    shop.post_purchase()

    deliver_all()

    [(headers, body)] = receiver.received
    assert len(receiver.verified) == 1
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(body, headers)


def test_an_old_signature_is_refused_as_a_replay() -> None:
    header = webhooks.sign("whsec_x", 1_000_000, b"{}")
    assert webhooks.verify("whsec_x", header, b"{}", now=1_000_100)
    assert not webhooks.verify("whsec_x", header, b"{}", now=1_000_000 + 301)


def test_a_standard_signature_too_old_is_refused() -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    body = b'{"type":"purchase.sent"}'
    stamp = int(time.time()) - 301
    headers = webhooks.signature_headers(secret, 7, stamp, body)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(body, headers)
    fresh = webhooks.signature_headers(secret, 7, int(time.time()), body)
    assert Webhook(secret).verify(body, fresh) == {"type": "purchase.sent"}


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


def test_balance_low_is_sent_once_per_crossing_and_rearmed_by_a_deposit(
    make_merchant: Any, upstream: Any, receiver: Receiver, settings: Any
) -> None:
    settings.WEBHOOK_BALANCE_LOW_DAYS = 3
    shop = make_merchant(percentage="10")
    record_entry(shop.merchant, EntryKind.DEPOSIT, Decimal("10.00"), "EUR")
    receiver.key = subscribe(shop, receiver.url)

    # 1.00 reserved: 9.00 left at 1/7 a day is 63 days. 5.00 more: 4.00 left at 6/7 a day
    # is 4.6 days. 1.00 more: 3.00 left at 1.00 a day is 3 days, not under 3.
    for n, amount in enumerate(["10.00", "50.00", "10.00"]):
        shop.post_purchase(order_id=f"A-{n}", currency_amount=amount)
    assert not WebhookDelivery.objects.filter(event="balance.low").exists()
    # 1.00 more: 2.00 left at 8/7 a day is 1.75 days: under. Then more purchases stay under.
    for n in range(3, 6):
        shop.post_purchase(order_id=f"A-{n}", currency_amount="10.00")
    [low] = WebhookDelivery.objects.filter(event="balance.low")
    assert low.purchase is None
    assert low.payload == {
        "merchant_id": shop.merchant.public_id,
        "currency": "EUR",
        "available": "2.00",
        "reserved": "1.00",  # this purchase's, checked before it is sent
        "daily_average": "1.15",
        "runway_days": "1.7",
        "threshold_days": "3",
    }

    record_entry(shop.merchant, EntryKind.DEPOSIT, Decimal("100.00"), "EUR")  # re-arms
    shop.post_purchase(order_id="A-6", currency_amount="10.00")
    assert WebhookDelivery.objects.filter(event="balance.low").count() == 1
    record_entry(shop.merchant, EntryKind.WITHDRAWAL, Decimal("97.00"), "EUR")  # 2.00 left
    shop.post_purchase(order_id="A-7", currency_amount="10.00")

    assert WebhookDelivery.objects.filter(event="balance.low").count() == 2
    while WebhookDelivery.objects.filter(state="pending").exists():
        deliver_all()  # a few of one merchant's deliveries at a time
    assert [v["type"] for v in receiver.verified].count("balance.low") == 2
    assert receiver.refused == []
