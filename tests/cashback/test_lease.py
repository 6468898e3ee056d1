"""No upstream call outlives its lease: the lease is the call's total deadline plus a margin,
so a trickling answer never lets lease expiry turn a purchase `unknown` while its call is
alive (which let an admin's retry send it twice)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from cashback import lifecycle, services
from cashback.models import Attempt, Purchase, Status
from cashback.serializers import PurchaseRequestSerializer
from tests.cashback.upstreams import ScriptedServer, read_request
from tests.conftest import purchase_body

HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\nContent-Type: application/json\r\n\r\n"


@pytest.fixture
def trickling(settings: Any) -> Iterator[ScriptedServer]:
    """An upstream that sends its headers at once, then one body byte every 0.1 s (4 s)."""

    def script(conn: Any, server: ScriptedServer) -> None:
        server.requests.append(read_request(conn))
        conn.sendall(HEAD)
        for _ in range(40):
            time.sleep(0.1)
            conn.sendall(b" ")

    server = ScriptedServer(script)
    settings.CASHBACK_API_URL = server.url()
    settings.CASHBACK_TIMEOUT, settings.CASHBACK_CONNECT_TIMEOUT = 1.0, 0.5
    settings.CASHBACK_LEASE_MARGIN = 0.5
    yield server
    server.close()


def _send_by_request(purchase: Purchase) -> None:
    services.send_now(purchase)


def _send_by_worker(purchase: Purchase) -> None:
    (claimed,) = lifecycle.claim_due(timezone.now() + timedelta(seconds=10), limit=1)
    services.send_claimed(claimed)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("send", [_send_by_request, _send_by_worker], ids=["request", "worker"])
def test_a_trickling_answer_never_outlives_the_lease(
    make_merchant: Any, trickling: ScriptedServer, send: Any
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("two connections at once: PostgreSQL")
    serializer = PurchaseRequestSerializer(data=purchase_body(order_id="A-1"))
    serializer.is_valid(raise_exception=True)
    purchase, _ = services.submit_purchase(
        make_merchant().merchant, serializer.to_input(), send=False
    )

    def call() -> None:
        try:
            send(purchase)
        finally:
            connection.close()

    caller = threading.Thread(target=call)
    caller.start()
    expired, sweeps = 0, 0
    # A worker sweeping leases all along, as fast as it can, while the call is alive.
    while caller.is_alive():
        expired += lifecycle.expire_leases(timezone.now())
        sweeps += 1
        time.sleep(0.02)
    caller.join()

    purchase.refresh_from_db()
    assert (expired, purchase.status, purchase.attempts) == (0, Status.UNKNOWN, 1)
    assert purchase.error == "answer not complete within 1 s (HTTP 200)"
    attempt = Attempt.objects.get(purchase=purchase)
    assert (attempt.applied, attempt.outcome) == (True, "ambiguous")
    assert attempt.duration_ms < lifecycle.lease_seconds() * 1000
    assert sweeps > 20  # the sweeps really ran through the whole call
    assert len(trickling.requests) == 1
