"""Isolation: merchant A's key reaches only A's data, through every endpoint."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cashback.models import Purchase
from merchants.models import LedgerEntry, Merchant
from merchants.services import record_entry
from tests.conftest import purchase_body

HAS_DROPIN = (Path(__file__).resolve().parents[2] / "cashback" / "dropin.py").is_file()


@pytest.fixture
def a_and_b(make_merchant: Any, upstream: Any) -> tuple[Any, Any]:
    """Two merchants with deposits and sent purchases; B's order ids are B-…"""
    a = make_merchant(percentage="1")
    b = make_merchant(percentage="5")
    record_entry(a.merchant, "deposit", Decimal("10.00"), "EUR")
    record_entry(b.merchant, "deposit", Decimal("100.00"), "EUR")
    record_entry(b.merchant, "deposit", Decimal("0.5"), "BTC")
    assert a.post_purchase(order_id="A-1").status_code == 201
    assert b.post_purchase(order_id="B-1").status_code == 201
    assert b.post_purchase(order_id="B-2", currency="USD", currency_amount="3").status_code == 201
    return a, b


def test_a_cannot_read_b_purchase(a_and_b: tuple[Any, Any]) -> None:
    a, b = a_and_b

    response = a.client.get("/api/v1/purchases/B-1")

    assert response.status_code == 404
    assert response.json() == {"detail": "No such purchase."}
    assert b.client.get("/api/v1/purchases/B-1").status_code == 200


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?status=sent",
        "?created_after=2000-01-01",
        "?created_before=2999-12-31",
        "?page_size=200",
    ],
)
def test_a_lists_only_its_own_purchases(a_and_b: tuple[Any, Any], query: str) -> None:
    a, _ = a_and_b

    response = a.client.get(f"/api/v1/purchases{query}")

    assert response.status_code == 200
    assert [p["order_id"] for p in response.json()["results"]] == ["A-1"]
    assert response.json()["next"] is None


def test_a_sees_only_its_own_balance_and_ledger(a_and_b: tuple[Any, Any]) -> None:
    a, _ = a_and_b

    balances = a.client.get("/api/v1/balance").json()["balances"]
    ledger = a.client.get("/api/v1/ledger?page_size=200").json()

    # 1 % of 12.50 EUR, rounded up to 0.13, reserved and captured: 9.87 left, none held.
    assert balances == [{"currency": "EUR", "available": "9.87", "reserved": "0.00"}]
    assert [(e["kind"], e["amount"], e["order_id"]) for e in ledger["results"]] == [
        ("capture", "-0.13", "A-1"),
        ("reservation", "-0.13", "A-1"),
        ("deposit", "10.00", None),
    ]
    own = set(LedgerEntry.objects.filter(merchant=a.merchant).values_list("id", flat=True))
    assert {e["id"] for e in ledger["results"]} == own


def test_a_reads_and_changes_only_its_own_settings(a_and_b: tuple[Any, Any]) -> None:
    a, b = a_and_b

    got = a.client.get("/api/v1/merchant").json()
    patched = a.client.patch(
        "/api/v1/merchant",
        {"webhook_url": "http://127.0.0.1:9/hook", "merchant_id": b.merchant.public_id},
        format="json",
    )

    assert got["merchant_id"] == a.merchant.public_id
    assert patched.status_code == 200
    assert patched.json()["merchant_id"] == a.merchant.public_id
    assert Merchant.objects.get(pk=a.merchant.pk).webhook_url == "http://127.0.0.1:9/hook"
    assert Merchant.objects.get(pk=b.merchant.pk).webhook_url == ""
    assert Merchant.objects.get(pk=b.merchant.pk).webhook_secret == ""


def test_posting_b_order_id_creates_a_own_purchase_and_leaves_b_alone(
    a_and_b: tuple[Any, Any], upstream: Any
) -> None:
    a, b = a_and_b
    b_before = Purchase.objects.get(merchant=b.merchant, order_id="B-1")

    response = a.post_purchase(order_id="B-1", customer="someone else")

    assert response.status_code == 201
    assert response.json()["customer"] == "someone else"
    mine = Purchase.objects.get(merchant=a.merchant, order_id="B-1")
    assert str(mine.pk) == response.json()["id"] != str(b_before.pk)
    b_after = Purchase.objects.get(merchant=b.merchant, order_id="B-1")
    assert (b_after.customer, b_after.status, b_after.updated_at, b_after.attempts) == (
        b_before.customer,
        b_before.status,
        b_before.updated_at,
        b_before.attempts,
    )
    # Upstream told the two apart by the merchant field.
    sent = [(e["merchant"], e["order_id"]) for e in upstream.state.log]
    assert sent.count((a.merchant.public_id, "B-1")) == 1
    assert sent.count((b.merchant.public_id, "B-1")) == 1


@pytest.mark.skipif(not HAS_DROPIN, reason="the drop-in endpoint is not built yet")
def test_the_drop_in_endpoint_is_scoped_to_the_key_owner(a_and_b: tuple[Any, Any]) -> None:
    from rest_framework.test import APIClient

    a, b = a_and_b
    client = APIClient()
    as_b = purchase_body(order_id="B-9", partner=b.merchant.public_id, partner_key=a.key)
    own = purchase_body(order_id="B-1", partner=a.merchant.public_id, partner_key=a.key)

    impersonating = client.post("/new_purchase", as_b)
    replay_of_b = client.post("/new_purchase", own)

    assert impersonating.status_code == 200
    assert impersonating.json() == {"result": "error", "error": "authentication failed"}
    assert not Purchase.objects.filter(order_id="B-9").exists()
    assert replay_of_b.json()["result"] == "ok"
    assert Purchase.objects.filter(order_id="B-1").count() == 2
    assert Purchase.objects.get(merchant=a.merchant, order_id="B-1").customer == "c-42"
