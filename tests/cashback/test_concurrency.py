"""Concurrent requests: one upstream call per order id, and deposits never overdrawn.

These run on both databases; PostgreSQL is where row locks are really contended.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from rest_framework.test import APIClient

from cashback.models import Purchase
from merchants.models import Balance, EntryKind
from merchants.services import record_entry
from tests.conftest import purchase_body


def run_at_once(n: int, key: str, body_for: Callable[[int], dict[str, Any]]) -> list[Any]:
    """POST n purchases from n threads released together; return the responses."""
    barrier = threading.Barrier(n)
    responses: list[Any] = [None] * n

    def post(i: int) -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
        barrier.wait()
        try:
            responses[i] = client.post("/api/v1/purchases", body_for(i), format="json")
        finally:
            connection.close()

    threads = [threading.Thread(target=post, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return responses


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_requests_for_one_order_make_one_upstream_call(
    make_merchant: Any, upstream: Any
) -> None:
    shop = make_merchant()

    responses = run_at_once(20, shop.key, lambda i: purchase_body())

    assert Counter(r.status_code for r in responses) == {201: 1, 200: 19}
    assert upstream.state.requests == 1
    assert Purchase.objects.count() == 1
    assert {r.json()["id"] for r in responses} == {str(Purchase.objects.get().id)}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("policy", ["downgrade", "reject"])
def test_thirty_concurrent_purchases_never_overdraw_the_deposit(
    make_merchant: Any, upstream: Any, policy: str
) -> None:
    shop = make_merchant(percentage="5", policy=policy)
    record_entry(shop.merchant, EntryKind.DEPOSIT, Decimal("10.00"), "USD")

    responses = run_at_once(
        30,
        shop.key,
        lambda i: purchase_body(order_id=f"o-{i}", currency="USD", currency_amount="20.00"),
    )

    codes = Counter(r.status_code for r in responses)
    funded = [
        r.json()
        for r in responses
        if r.status_code == 201 and r.json()["partner_cashback_percentage"] == "5"
    ]
    assert len(funded) == 10
    if policy == "downgrade":
        assert codes == {201: 30}
        downgraded = [r.json() for r in responses if r.json()["partner_cashback_percentage"] == "0"]
        assert len(downgraded) == 20
        assert {d["requested_partner_cashback_percentage"] for d in downgraded} == {"5"}
    else:
        assert codes == {201: 10, 402: 20}
        assert Purchase.objects.count() == 10
    balance = Balance.objects.get(merchant=shop.merchant, currency="USD")
    assert (balance.available, balance.reserved) == (Decimal("0.00"), Decimal("0.00"))
    assert upstream.state.requests == (30 if policy == "downgrade" else 10)
    call_command("check_ledger")
