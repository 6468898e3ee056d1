"""The purchase path through the REST API, against a real local upstream."""

from __future__ import annotations

from typing import Any

from cashback.models import Purchase


def test_a_purchase_is_sent_and_answered_201_with_the_cashback(shop: Any, upstream: Any) -> None:
    response = shop.post_purchase()

    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "sent"
    assert body["cashback_amount"] == 68_750_000  # 12.50 EUR × 55,000,000 bytes × 10 %
    assert body["unit"] and len(body["unit"]) == 44
    assert body["currency_amount"] == "12.50"
    assert body["attempts"] == 1
    sent = upstream.state.log[-1]
    assert sent["partner"] == "sandbox" and sent["partner_key_ok"] == "True"
    assert sent["merchant"] == shop.merchant.public_id
    assert sent["currency_amount"] == "12.5"
    assert sent["partner_cashback_percentage"] == "0"


def test_the_same_order_again_is_replayed_without_calling_upstream(
    shop: Any, upstream: Any
) -> None:
    first = shop.post_purchase()
    second = shop.post_purchase()

    assert second.status_code == 200
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()
    assert upstream.state.requests == 1
    assert Purchase.objects.count() == 1
