"""The worker: retries when upstream is back, never re-sends `unknown`, fails what is past
its window, expires leases, and shares the queue with other workers. Time is moved by
passing `now`, never by sleeping."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from cashback import lifecycle, services, worker
from cashback.client import UpstreamResult
from cashback.models import Outcome, Purchase, Status, WebhookDelivery
from tests.cashback.test_outcomes import closed_port_url


def statuses() -> dict[str, str]:
    return dict(Purchase.objects.values_list("order_id", "status"))


def test_pending_purchases_are_sent_once_upstream_is_back(
    shop: Any, upstream: Any, settings: Any
) -> None:
    live_url = upstream.url
    settings.CASHBACK_API_URL = closed_port_url()
    for n in range(3):
        assert shop.post_purchase(order_id=f"o{n}").json()["status"] == "pending"
    now = timezone.now()

    assert worker.run_once(now=now) == 0  # not due yet
    settings.CASHBACK_API_URL = live_url
    worker.run_once(now=now + timedelta(seconds=13))

    assert statuses() == {"o0": "sent", "o1": "sent", "o2": "sent"}
    assert upstream.state.requests == 3
    assert set(upstream.state.orders.values()) == {1}
    assert set(Purchase.objects.values_list("attempts", flat=True)) == {2}
    worker.run_once(now=now + timedelta(days=2))
    assert upstream.state.requests == 3


def test_retries_back_off_until_the_window_ends_then_fail(shop: Any, settings: Any) -> None:
    settings.CASHBACK_API_URL = closed_port_url()
    shop.post_purchase()
    purchase = Purchase.objects.get()
    delays = []
    for _ in range(4):
        due = purchase.next_attempt_at
        worker.run_once(now=due + timedelta(milliseconds=1))
        purchase.refresh_from_db()
        delays.append((purchase.next_attempt_at - timezone.now()).total_seconds())
    assert purchase.status == Status.PENDING and purchase.attempts == 5
    # 30 s, 60 s, 300 s, 900 s, each ± 20 % jitter
    for delay, base in zip(delays, [30, 60, 300, 900], strict=True):
        assert base * 0.75 <= delay <= base * 1.25

    worker.run_once(now=purchase.created_at + timedelta(hours=24, seconds=1))

    purchase.refresh_from_db()
    assert purchase.status == Status.FAILED
    assert purchase.error == "retries ran out: could not connect to upstream"


def test_a_timed_out_purchase_stays_unknown_and_is_never_resent(
    shop: Any, upstream: Any, settings: Any
) -> None:
    settings.CASHBACK_TIMEOUT = 0.3
    upstream.state.set_mode("slow", count=1, slow_seconds=1)
    assert shop.post_purchase().json()["status"] == "unknown"

    now = timezone.now()
    for hours in (1, 25, 72):
        worker.run_once(now=now + timedelta(hours=hours))

    assert statuses() == {"A-1001": "unknown"}
    assert upstream.state.requests == 1


def test_a_queued_purchase_that_no_request_claimed_is_sent_by_the_worker(
    shop: Any, upstream: Any
) -> None:
    from cashback.serializers import PurchaseRequestSerializer
    from tests.conftest import purchase_body

    serializer = PurchaseRequestSerializer(data=purchase_body())
    serializer.is_valid(raise_exception=True)
    services.submit_purchase(shop.merchant, serializer.to_input(), send=False)
    now = timezone.now()

    worker.run_once(now=now)  # within the grace period the request may still claim it
    assert statuses() == {"A-1001": "queued"}
    worker.run_once(now=now + timedelta(seconds=6))

    assert statuses() == {"A-1001": "sent"}
    assert upstream.state.requests == 1


def test_an_expired_lease_becomes_unknown_and_a_late_answer_still_wins(
    shop: Any, upstream: Any
) -> None:
    upstream.state.set_mode("500", count=1)
    shop.post_purchase()
    purchase = Purchase.objects.get()
    Purchase.objects.update(status=Status.QUEUED)
    assert lifecycle.claim(purchase, lifecycle.Actor.WORKER)
    purchase.refresh_from_db()

    worker.run_once(now=purchase.lease_until + timedelta(seconds=1))
    purchase.refresh_from_db()
    assert purchase.status == Status.UNKNOWN
    assert purchase.error == lifecycle.LEASE_EXPIRED

    # The slow call of the process that held the lease answers after all: the truth wins.
    late = UpstreamResult(Outcome.OK, 200, cashback_amount=68_750_000, unit="u" * 44)
    services.record_outcome(purchase.pk, purchase.attempts, late, started_at=timezone.now())
    purchase.refresh_from_db()
    assert (purchase.status, purchase.cashback_amount) == (Status.SENT, 68_750_000)


@pytest.mark.django_db(transaction=True)
def test_two_workers_racing_over_200_due_purchases_send_each_once(
    make_merchant: Any, upstream: Any, settings: Any
) -> None:
    settings.CASHBACK_WORKER_THREADS = 4
    shop = make_merchant()
    from cashback.serializers import PurchaseRequestSerializer
    from tests.conftest import purchase_body

    for n in range(200):
        serializer = PurchaseRequestSerializer(data=purchase_body(order_id=f"o{n}"))
        serializer.is_valid(raise_exception=True)
        services.submit_purchase(shop.merchant, serializer.to_input(), send=False)
    later = timezone.now() + timedelta(seconds=10)

    def work() -> None:
        with ThreadPoolExecutor(4) as pool:
            while worker.run_once(pool, now=later):
                pass
        connection.close()

    racers = [threading.Thread(target=work) for _ in range(2)]
    for t in racers:
        t.start()
    for t in racers:
        t.join(120)

    assert Purchase.objects.filter(status=Status.SENT).count() == 200
    assert len(upstream.state.orders) == 200
    assert set(upstream.state.orders.values()) == {1}
    assert upstream.state.duplicates == 0
    assert set(Purchase.objects.values_list("attempts", flat=True)) == {1}


def test_a_final_status_writes_a_webhook_delivery_in_the_same_transaction(
    shop: Any, upstream: Any
) -> None:
    shop.merchant.webhook_url = "http://127.0.0.1:9/hook"
    shop.merchant.save()
    upstream.state.set_mode("503", count=1)
    shop.post_purchase()
    assert WebhookDelivery.objects.count() == 0  # pending is not final

    worker.run_once(now=timezone.now() + timedelta(seconds=13))

    delivery = WebhookDelivery.objects.get()
    assert delivery.event == "purchase.sent"
    assert delivery.payload["status"] == "sent"
    assert delivery.payload["order_id"] == "A-1001"
