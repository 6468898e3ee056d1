"""Repeated order ids: replayed when equal after normalising, 409 when different."""

from __future__ import annotations

from typing import Any

import pytest

from cashback.models import Purchase

GBYTE_UNIT = "kYbc5KGKB/KnjynYePEF4cpumKmOz22xVKSVWbmtZ0M="


@pytest.mark.parametrize(
    ("first", "again"),
    [
        ({"currency_amount": "12.50"}, {"currency_amount": "12.5"}),
        ({"currency_amount": "12.50"}, {"currency_amount": 12.5}),
        ({}, {"address": "obyte:WR5FPYE6LHBQ57ZCFUTJXDDNHWK5355S"}),
        ({"description": None}, {"description": ""}),
        ({"partner_cashback_percentage": None}, {"partner_cashback_percentage": "0"}),
    ],
)
def test_equal_after_normalising_is_a_replay(
    shop: Any, upstream: Any, first: dict[str, Any], again: dict[str, Any]
) -> None:
    assert shop.post_purchase(**first).status_code == 201
    response = shop.post_purchase(**again)

    assert response.status_code == 200
    assert response.headers["Idempotent-Replayed"] == "true"
    assert upstream.state.requests == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"currency_amount": "12.51"}, "currency_amount"),
        ({"customer": "c-43"}, "customer"),
        ({"currency": "USD"}, "currency"),
        ({"description": "tea"}, "description"),
        ({"partner_cashback_percentage": "1"}, "partner_cashback_percentage"),
    ],
)
def test_the_same_order_id_with_other_fields_is_409(
    shop: Any, upstream: Any, change: dict[str, Any], field: str
) -> None:
    shop.post_purchase()
    response = shop.post_purchase(**change)

    assert response.status_code == 409
    assert response.json()["fields"] == [field]
    assert response.json()["detail"] == (
        f"order_id 'A-1001' was already reported with different {field}."
    )
    assert upstream.state.requests == 1


def test_a_purchase_unit_reused_by_another_order_is_409(shop: Any, upstream: Any) -> None:
    gbyte = {"currency": "GBYTE", "currency_amount": "1.5", "purchase_unit": GBYTE_UNIT}
    assert shop.post_purchase(order_id="g1", **gbyte).status_code == 201
    response = shop.post_purchase(order_id="g2", **gbyte)

    assert response.status_code == 409
    assert response.json()["purchase_unit"] == ["This unit is already used by another order."]
    assert Purchase.objects.count() == 1
    assert upstream.state.requests == 1


def test_two_merchants_may_use_the_same_order_id(make_merchant: Any, upstream: Any) -> None:
    a, b = make_merchant(), make_merchant()
    assert a.post_purchase().status_code == 201
    assert b.post_purchase().status_code == 201
    assert sorted(e["merchant"] for e in upstream.state.log) == sorted(
        [a.merchant.public_id, b.merchant.public_id]
    )
