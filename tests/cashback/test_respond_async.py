"""`Prefer: respond-async` (RFC 7240) on the purchase POST: stored, answered 202 before
upstream, sent by the worker within about a second (woken by NOTIFY on PostgreSQL)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import pytest
from django.db import transaction
from django.utils import timezone

from cashback import wakeup, worker
from cashback.models import Hold, Purchase, Status
from cashback.prefer import prefers_respond_async
from merchants.models import Balance, EntryKind
from merchants.services import record_entry
from tests.conftest import purchase_body


def post_async(shop: Any, prefer: str = "respond-async", **fields: Any) -> Any:
    return shop.client.post(
        "/api/v1/purchases", purchase_body(**fields), format="json", HTTP_PREFER=prefer
    )


@pytest.mark.parametrize(
    ("header", "applies"),
    [
        ("respond-async", True),
        ("Respond-Async", True),
        ("respond-async, wait=10", True),
        ("return=minimal, respond-async;x=1", True),
        ("handling=lenient,respond-async", True),
        ("respond-asynchronously", False),
        ("return=minimal", False),
        ("wait=respond-async", False),
        ("", False),
        (None, False),
    ],
)
def test_the_prefer_header_is_read_as_rfc_7240_lists_it(header: str | None, applies: bool) -> None:
    assert prefers_respond_async(header) is applies


def test_respond_async_stores_the_purchase_and_answers_202_before_upstream(
    make_merchant: Any, upstream: Any
) -> None:
    shop = make_merchant(percentage="2")
    record_entry(shop.merchant, EntryKind.DEPOSIT, Decimal("10.00"), "EUR")
    order_id = "A 1/2?x#y%z ü"
    before = timezone.now()

    response = post_async(shop, "respond-async, wait=5", order_id=order_id)

    assert response.status_code == 202
    assert response.headers["Preference-Applied"] == "respond-async"
    location = response.headers["Location"]
    assert location == "/api/v1/purchases/A%201%2F2%3Fx%23y%25z%20%C3%BC"
    assert location == "/api/v1/purchases/" + quote(order_id, safe="")
    body = response.json()
    assert body["status"] == "queued"
    assert body["order_id"] == order_id
    assert body["attempts"] == 0
    assert upstream.state.requests == 0  # answered before upstream
    purchase = Purchase.objects.get()
    assert purchase.status == Status.QUEUED
    assert purchase.hold == Hold.HELD and purchase.reserved_minor == 25  # 2 % of 12.50 EUR
    assert Balance.objects.get(merchant=shop.merchant, currency="EUR").reserved_minor == 25
    # Due at once: no grace, which is for purchases whose request sends them itself.
    assert before <= purchase.next_attempt_at <= timezone.now()
    assert shop.client.get(location).json() == body

    worker.run_once(now=timezone.now())

    purchase.refresh_from_db()
    assert purchase.status == Status.SENT
    assert upstream.state.sent_count(shop.merchant.public_id, order_id) == 1
    assert shop.client.get(location).json()["status"] == "sent"


def test_without_the_preference_the_answer_waits_for_upstream(shop: Any, upstream: Any) -> None:
    response = post_async(shop, "return=minimal")

    assert response.status_code == 201
    assert "Preference-Applied" not in response.headers
    assert "Location" not in response.headers
    assert response.json()["status"] == "sent"


def test_a_replay_with_the_preference_answers_200_as_before(shop: Any, upstream: Any) -> None:
    first = post_async(shop)
    assert first.status_code == 202
    replay = post_async(shop)
    assert replay.status_code == 200
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert "Preference-Applied" not in replay.headers
    assert replay.json() == first.json()

    worker.run_once(now=timezone.now())
    sent = shop.post_purchase()  # a replay without the header, after the worker sent it
    assert (sent.status_code, sent.json()["status"]) == (200, "sent")
    assert upstream.state.requests == 1


def test_respond_async_with_a_conflicting_order_or_bad_input_answers_as_before(
    shop: Any, upstream: Any
) -> None:
    assert post_async(shop).status_code == 202
    conflict = post_async(shop, currency_amount="13.00")
    assert conflict.status_code == 409
    invalid = post_async(shop, order_id="B-1", currency_amount="-1")
    assert invalid.status_code == 400
    assert "currency_amount" in invalid.json()
    assert list(Purchase.objects.values_list("order_id", flat=True)) == ["A-1001"]


def test_the_drop_in_endpoint_ignores_the_preference(shop: Any, upstream: Any) -> None:
    response = shop.client.post(
        "/new_purchase",
        {**purchase_body(), "partner": shop.merchant.public_id, "partner_key": shop.key},
        HTTP_PREFER="respond-async",
    )
    assert response.status_code == 200
    assert response.json()["result"] == "ok"
    assert "Preference-Applied" not in response.headers
    assert Purchase.objects.get().status == Status.SENT


@contextmanager
def running_worker() -> Iterator[worker.Dispatcher]:
    stop = threading.Event()
    dispatcher = worker.Dispatcher(stop)
    thread = threading.Thread(target=dispatcher.run)
    thread.start()
    try:
        yield dispatcher
    finally:
        stop.set()
        dispatcher.wake.set()
        thread.join(15)
        assert not thread.is_alive()


def wait_idle(dispatcher: worker.Dispatcher, *, listening: bool) -> None:
    """Wait until the dispatcher made its first pass (and LISTENs) and sleeps."""
    deadline = time.monotonic() + 10
    while dispatcher.passes < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    if listening:
        assert dispatcher.listener.listening.wait(10)
    time.sleep(0.3)  # into its idle sleep


def sent_within(upstream: Any, merchant: str, order_id: str, seconds: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if upstream.state.sent_count(merchant, order_id):
            return time.monotonic() - started
        time.sleep(0.01)
    raise AssertionError(f"{order_id} was not sent within {seconds} s")


@pytest.mark.django_db(transaction=True)
def test_the_running_worker_sends_it_within_about_a_second(
    make_merchant: Any, upstream: Any, settings: Any, is_postgres: bool
) -> None:
    settings.CASHBACK_WORKER_IDLE_SLEEP = 0.2  # SQLite polls; PostgreSQL is woken sooner
    shop = make_merchant()
    with running_worker() as dispatcher:
        wait_idle(dispatcher, listening=is_postgres)
        started = time.monotonic()
        assert post_async(shop).status_code == 202
        took = sent_within(upstream, shop.merchant.public_id, "A-1001", 5) + (
            time.monotonic() - started
        )
    assert took <= 2.0, took
    assert Purchase.objects.get().status == Status.SENT
    assert upstream.state.requests == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_notify_wakes_an_idle_worker_long_before_its_poll(
    make_merchant: Any, upstream: Any, settings: Any
) -> None:
    settings.CASHBACK_WORKER_IDLE_SLEEP = 30
    settings.CASHBACK_WORKER_HOUSEKEEPING_INTERVAL = 30
    shop = make_merchant()
    with running_worker() as dispatcher:
        wait_idle(dispatcher, listening=True)
        passes = dispatcher.passes
        assert passes <= 2  # the first pass, and the look after LISTEN began: now asleep
        assert post_async(shop).status_code == 202
        took = sent_within(upstream, shop.merchant.public_id, "A-1001", 10)
        # The pass that sent it is counted when it returns, which may be just after the send.
        deadline = time.monotonic() + 2
        while dispatcher.passes == passes and time.monotonic() < deadline:
            time.sleep(0.01)
        assert dispatcher.passes > passes  # woken by the NOTIFY
    assert took <= 2.0, took


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_store_wakes_nobody_and_a_committed_one_does() -> None:
    wake, stop = threading.Event(), threading.Event()
    listener = wakeup.Listener(wake, stop)
    listener.start()
    try:
        assert listener.listening.wait(10)
        wake.clear()
        with pytest.raises(RuntimeError), transaction.atomic():
            wakeup.notify_due()
            raise RuntimeError("the store failed")
        assert not wake.wait(0.5)
        with transaction.atomic():
            wakeup.notify_due()
            assert not wake.wait(0.3)  # not before the commit
        assert wake.wait(2)
    finally:
        stop.set()
        listener.join()


def test_the_schema_documents_the_preference_and_the_202_headers(db: None) -> None:
    from django.test import Client

    schema = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    op = schema["paths"]["/api/v1/purchases"]["post"]
    [prefer] = [p for p in op["parameters"] if p["name"] == "Prefer"]
    assert prefer["in"] == "header"
    assert prefer["schema"]["enum"] == ["respond-async"]
    assert "respond-async" in op["responses"]["202"]["description"]
    headers = op["responses"]["202"]["headers"]
    assert headers["Preference-Applied"]["schema"]["enum"] == ["respond-async"]
    assert "Location" in headers
    assert "Preference-Applied" not in op["responses"]["201"].get("headers", {})
