"""The worker itself (`Dispatcher`, as `cashback_worker` runs it) against real local servers
that stall: one slow upstream answer or one merchant's slow webhook endpoint delays nothing
else. Each test runs the worker on a thread for a few seconds and reads the servers'
arrival times; the bounds are generous for a loaded machine and far below the stall."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import pytest
from django.db import connection
from django.utils import timezone

from cashback import services, worker
from cashback.models import Purchase, Status, WebhookDelivery
from cashback.sandbox import demo_unit
from tests.conftest import purchase_body

STALL = 3.0  # seconds a stalled server holds its answer
LATE = 1.0  # how late after it is due anything else may start


class Stalling(ThreadingHTTPServer):
    """Answers at once, except for the keys in `stall`: those it holds for `STALL` seconds.

    The key is the upstream form's `order_id`, or the path of a webhook POST. It records when
    each request arrived and the most requests of one key it held at once.
    """

    daemon_threads = True

    def __init__(self, stall: set[str]) -> None:
        super().__init__(("127.0.0.1", 0), StallingHandler)
        self.stall = stall
        self.arrivals: dict[str, list[float]] = defaultdict(list)
        self.in_flight: dict[str, int] = defaultdict(int)
        self.most_in_flight: dict[str, int] = defaultdict(int)
        self.lock = threading.Lock()

    def url(self, path: str = "/new_purchase") -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def first(self, key: str, timeout: float = 10.0) -> float:
        """Wait for the first request of `key` and return when it arrived (time.time())."""
        deadline = time.monotonic() + timeout
        while not self.arrivals.get(key) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.arrivals.get(key), f"{key} never arrived"
        return self.arrivals[key][0]


class StallingHandler(BaseHTTPRequestHandler):
    server: Stalling
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/new_purchase":
            fields = dict(parse_qsl(body.decode()))
            key = fields["order_id"]
            answer = json.dumps(
                {
                    "result": "ok",
                    "cashback_amount": 1000,
                    "unit": demo_unit(fields["partner"], fields["merchant"], key),
                }
            ).encode()
        else:
            key, answer = self.path, b""
        with self.server.lock:
            self.server.arrivals[key].append(time.time())
            self.server.in_flight[key] += 1
            self.server.most_in_flight[key] = max(
                self.server.most_in_flight[key], self.server.in_flight[key]
            )
        try:
            if key in self.server.stall:
                time.sleep(STALL)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
        finally:
            with self.server.lock:
                self.server.in_flight[key] -= 1

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def serving(stall: set[str]) -> Iterator[Stalling]:
    server = Stalling(stall)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def running_worker() -> Iterator[worker.Dispatcher]:
    """Run the worker's dispatcher on a thread; stop it (after its calls) on the way out."""
    stop = threading.Event()
    dispatcher = worker.Dispatcher(stop)
    thread = threading.Thread(target=dispatcher.run)
    thread.start()
    try:
        yield dispatcher
    finally:
        stop.set()
        dispatcher.wake.set()
        thread.join(STALL + 10)
        assert not thread.is_alive(), "the worker did not stop"


@pytest.fixture
def fast_worker(settings: Any) -> Any:
    settings.CASHBACK_TIMEOUT = STALL + 1
    settings.CASHBACK_CONNECT_TIMEOUT = 1.0
    settings.CASHBACK_LEASE_MARGIN = 1.0
    settings.CASHBACK_WORKER_IDLE_SLEEP = 0.1
    settings.CASHBACK_WORKER_HOUSEKEEPING_INTERVAL = 0.1
    settings.CASHBACK_WORKER_THREADS = 4
    settings.WEBHOOK_TIMEOUT = STALL + 1
    settings.WEBHOOK_WORKER_THREADS = 4
    settings.WEBHOOK_MERCHANT_CONCURRENCY = 2
    return settings


def store(merchant: Any, order_id: str, *, due_in: float, status: str = Status.QUEUED) -> Purchase:
    """Store a purchase the worker will send `due_in` seconds from now."""
    from cashback.serializers import PurchaseRequestSerializer

    serializer = PurchaseRequestSerializer(data=purchase_body(order_id=order_id))
    serializer.is_valid(raise_exception=True)
    purchase, _ = services.submit_purchase(merchant, serializer.to_input(), send=False)
    due = timezone.now() + timedelta(seconds=due_in)
    Purchase.objects.filter(pk=purchase.pk).update(status=status, next_attempt_at=due)
    purchase.refresh_from_db()
    return purchase


def wait_until(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.mark.django_db(transaction=True)
def test_a_stalled_upstream_call_delays_no_other_retry_send_or_lease_expiry(
    make_merchant: Any, fast_worker: Any
) -> None:
    shop = make_merchant()
    with serving({"slow"}) as upstream:
        fast_worker.CASHBACK_API_URL = upstream.url()
        store(shop.merchant, "slow", due_in=0)
        retry = store(shop.merchant, "retry", due_in=1.0, status=Status.PENDING)
        with running_worker():
            stalled_at = upstream.first("slow")
            # While that call is held: a queued purchase stored now, and a lease that runs out.
            queued_at = time.time()
            store(shop.merchant, "queued", due_in=0)
            lost = store(shop.merchant, "lost", due_in=0, status=Status.SENDING)
            Purchase.objects.filter(pk=lost.pk).update(
                next_attempt_at=None, lease_until=timezone.now() + timedelta(seconds=0.5)
            )
            expires_at = time.time() + 0.5

            retry_sent = upstream.first("retry") - retry.next_attempt_at.timestamp()
            queued_sent = upstream.first("queued") - queued_at
            assert wait_until(lambda: Purchase.objects.get(pk=lost.pk).status == Status.UNKNOWN, 5)
            expired = time.time() - expires_at
            assert wait_until(lambda: Purchase.objects.get(order_id="slow").is_final, STALL + 5)

    assert -0.05 <= retry_sent <= LATE, retry_sent
    assert queued_sent <= LATE, queued_sent
    assert expired <= LATE, expired
    assert time.time() - stalled_at >= STALL  # the stall really was one
    statuses = dict(Purchase.objects.values_list("order_id", "status"))
    assert statuses == {
        "slow": Status.SENT,
        "retry": Status.SENT,
        "queued": Status.SENT,
        "lost": Status.UNKNOWN,
    }
    assert {k: len(v) for k, v in upstream.arrivals.items()} == {"slow": 1, "retry": 1, "queued": 1}


@pytest.mark.django_db(transaction=True)
def test_one_merchants_stalled_webhook_endpoint_delays_neither_another_merchant_nor_a_retry(
    make_merchant: Any, fast_worker: Any
) -> None:
    slow_shop, quick_shop = make_merchant(), make_merchant()
    with serving({"/a"}) as server:
        fast_worker.CASHBACK_API_URL = server.url()
        for shop, path in ((slow_shop, "/a"), (quick_shop, "/b")):
            shop.merchant.webhook_url = server.url(path)
            shop.merchant.rotate_webhook_secret()
            shop.merchant.save()
        # More of A's deliveries due than there are webhook slots: uncapped, they would
        # hold every slot for the whole stall.
        for n in range(4):
            purchase = store(slow_shop.merchant, f"a-{n}", due_in=3600)
            WebhookDelivery.objects.create(
                purchase=purchase,
                merchant=slow_shop.merchant,
                event="purchase.sent",
                payload={"order_id": purchase.order_id},
                next_attempt_at=timezone.now(),
            )
        quick = store(quick_shop.merchant, "b-0", due_in=3600)
        b_due = timezone.now() + timedelta(seconds=0.5)
        WebhookDelivery.objects.create(
            purchase=quick,
            merchant=quick_shop.merchant,
            event="purchase.sent",
            payload={"order_id": quick.order_id},
            next_attempt_at=b_due,
        )
        retry = store(quick_shop.merchant, "retry", due_in=0.5, status=Status.PENDING)
        with running_worker():
            server.first("/a")
            b_late = server.first("/b") - b_due.timestamp()
            retry_late = server.first("retry") - retry.next_attempt_at.timestamp()
            assert wait_until(
                lambda: WebhookDelivery.objects.filter(state="delivered").count() == 6, 4 * STALL
            )

    assert -0.05 <= b_late <= LATE, b_late
    assert -0.05 <= retry_late <= LATE, retry_late
    assert server.most_in_flight["/a"] == 2  # the per-merchant cap
    assert len(server.arrivals["/a"]) == 4
    assert len(server.arrivals["/b"]) == 2  # b-0's, and the one of the retry now sent


@pytest.mark.django_db(transaction=True)
def test_the_worker_claims_no_more_than_its_free_slots(
    make_merchant: Any, fast_worker: Any
) -> None:
    """Nothing claimed waits for a slot while its lease runs: the rest stay due, unclaimed."""
    fast_worker.CASHBACK_WORKER_THREADS = 2
    shop = make_merchant()
    with serving({"s0", "s1"}) as upstream:
        fast_worker.CASHBACK_API_URL = upstream.url()
        for n in range(3):
            store(shop.merchant, f"s{n}", due_in=0)
        with running_worker():
            upstream.first("s0")
            upstream.first("s1")
            time.sleep(0.3)  # several dispatcher passes while both slots are held
            held = dict(Purchase.objects.values_list("order_id", "status"))
            assert wait_until(
                lambda: Purchase.objects.filter(status=Status.SENT).count() == 3, 3 * STALL
            )

    assert sorted(held.values()) == [Status.QUEUED, Status.SENDING, Status.SENDING]
    assert {k: len(v) for k, v in upstream.arrivals.items()} == {"s0": 1, "s1": 1, "s2": 1}
    connection.close()
