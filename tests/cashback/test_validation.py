"""Invalid input is a 400 with a message keyed by field; nothing is stored or sent."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cashback.models import Purchase
from merchants.models import Balance, LedgerEntry

GBYTE_UNIT = "kYbc5KGKB/KnjynYePEF4cpumKmOz22xVKSVWbmtZ0M="

BAD_INPUTS = [
    ({"customer": None}, "customer", "This field is required."),
    ({"customer": ""}, "customer", "This field may not be blank."),
    ({"customer": "x" * 256}, "customer", "Ensure this field has no more than 255 characters."),
    ({"order_id": None}, "order_id", "This field is required."),
    ({"order_id": ""}, "order_id", "This field may not be blank."),
    ({"order_id": "x" * 129}, "order_id", "Ensure this field has no more than 128 characters."),
    ({"order_id": "A\n1"}, "order_id", "Must not contain control characters."),
    ({"order_id": "A\x001"}, "order_id", "Null characters are not allowed."),
    ({"order_id": "A\u202e1"}, "order_id", "Must not contain control characters."),
    (
        {"description": "x" * 1001},
        "description",
        "Ensure this field has no more than 1000 characters.",
    ),
    ({"address": None}, "address", "This field is required."),
    ({"address": "WR5FPYE6LHBQ57ZCFUTJXDDNHWK5355T"}, "address", None),  # bad checksum
    ({"address": "wr5fpye6lhbq57zcfutjxddnhwk5355s"}, "address", "Obyte addresses are upper case."),
    ({"address": "WR5FPYE6LHBQ57ZCFUTJXDDNHWK5355"}, "address", None),  # 31 chars
    ({"address": "someone@"}, "address", "Enter a valid Obyte address or email address."),
    (
        {"currency": "XYZ"},
        "currency",
        "'XYZ' is not a currency the gateway takes: USD, EUR, RUR, GBYTE, BTC, or an ISO 4217 "
        "currency with an ECB reference rate (upper case, e.g. GBP).",
    ),
    ({"currency": "gbp"}, "currency", None),
    ({"currency": "JPY", "currency_amount": "100.5"}, "currency_amount", None),
    ({"currency": None}, "currency", "This field is required."),
    ({"currency_amount": "0"}, "currency_amount", "must be greater than 0"),
    ({"currency_amount": "-1"}, "currency_amount", "must be greater than 0"),
    ({"currency_amount": "abc"}, "currency_amount", "must be a decimal number"),
    ({"currency_amount": "NaN"}, "currency_amount", "must be a finite decimal number"),
    ({"currency_amount": "Infinity"}, "currency_amount", "must be a finite decimal number"),
    ({"currency_amount": True}, "currency_amount", "must be a decimal number"),
    ({"currency_amount": "12.345"}, "currency_amount", "EUR amounts have at most 2 decimal places"),
    (
        {"currency": "BTC", "currency_amount": "0.000000001"},
        "currency_amount",
        "BTC amounts have at most 8 decimal places",
    ),
    (
        {"currency": "GBYTE", "currency_amount": "1.0000000001"},
        "currency_amount",
        "GBYTE amounts have at most 9 decimal places",
    ),
    (
        {"currency_amount": "12345678901234567.89"},
        "currency_amount",
        "must have at most 18 digits in all",
    ),
    ({"currency_amount": "1e400"}, "currency_amount", None),
    (
        {"partner_cashback_percentage": "-1"},
        "partner_cashback_percentage",
        "Must be between 0 and 100.",
    ),
    (
        {"partner_cashback_percentage": "101"},
        "partner_cashback_percentage",
        "Must be between 0 and 100.",
    ),
    (
        {"partner_cashback_percentage": "5.555"},
        "partner_cashback_percentage",
        "percentages have at most 2 decimal places",
    ),
    (
        {"partner_cashback_percentage": "11"},
        "partner_cashback_percentage",
        "Ensure this value is at most 10.00.",
    ),
    (
        {"purchase_unit": GBYTE_UNIT},
        "purchase_unit",
        "Only purchases paid in GBYTE have a purchase unit.",
    ),
    (
        {"currency": "GBYTE", "purchase_unit": "x" * 44},
        "purchase_unit",
        "Must be a 44-character canonical base64 unit id.",
    ),
]


@pytest.mark.parametrize(("overrides", "field", "message"), BAD_INPUTS)
def test_bad_input_is_400_and_nothing_is_stored_or_sent(
    shop: Any, upstream: Any, overrides: dict[str, Any], field: str, message: str | None
) -> None:
    response = shop.post_purchase(**overrides)

    assert response.status_code == 400, response.content
    body = response.json()
    assert field in body
    if message is not None:
        assert message in body[field]
    assert body["detail"].startswith(f"{field}: ")
    assert Purchase.objects.count() == 0
    assert LedgerEntry.objects.count() == 0
    assert Balance.objects.count() == 0
    assert upstream.state.requests == 0


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        (b"{not json", "application/json"),
        (b"[1, 2, 3]", "application/json"),
        (b'"just a string"', "application/json"),
        (b"customer=c&order_id=1", "text/plain"),
    ],
)
def test_unreadable_bodies_are_4xx_json(
    shop: Any, upstream: Any, raw: bytes, content_type: str
) -> None:
    response = shop.client.generic("POST", "/api/v1/purchases", raw, content_type=content_type)

    assert response.status_code in (400, 415)
    assert "detail" in response.json()
    assert Purchase.objects.count() == 0
    assert upstream.state.requests == 0


def test_json_numbers_are_parsed_as_exact_decimals(shop: Any, upstream: Any) -> None:
    raw = json.dumps(purchase_json()).replace('"12.50"', "0.29").encode()
    response = shop.client.generic(
        "POST", "/api/v1/purchases", raw, content_type="application/json"
    )

    assert response.status_code == 201
    assert response.json()["currency_amount"] == "0.29"  # float would be 0.28999…
    assert Purchase.objects.get().amount_minor == 29


def test_qr_prefix_and_email_addresses_are_accepted(shop: Any, upstream: Any) -> None:
    first = shop.post_purchase(order_id="qr", address="byteball:WR5FPYE6LHBQ57ZCFUTJXDDNHWK5355S")
    second = shop.post_purchase(order_id="mail", address="customer@example.com")

    assert first.json()["address"] == "WR5FPYE6LHBQ57ZCFUTJXDDNHWK5355S"
    assert second.json()["address"] == "customer@example.com"
    assert [entry["address"] for entry in upstream.state.log] == [
        "WR5FPYE6LHBQ57ZCFUTJXDDNHWK5355S",
        "customer@example.com",
    ]


def purchase_json() -> dict[str, Any]:
    from tests.conftest import purchase_body

    return purchase_body()
