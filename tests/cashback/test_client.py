"""The upstream client's request format and its classification of answers."""

from __future__ import annotations

from typing import Any

import pytest

from cashback.client import classify_response
from cashback.models import Outcome

UNIT = "kYbc5KGKB/KnjynYePEF4cpumKmOz22xVKSVWbmtZ0M="


def test_the_request_is_form_encoded_with_plain_decimal_amounts(
    make_merchant: Any, upstream: Any
) -> None:
    shop = make_merchant(max_percentage="10")
    body = {
        "currency": "GBYTE",
        "currency_amount": "0.000000001",
        "partner_cashback_percentage": "0",
    }
    response = shop.post_purchase(**body)

    assert response.status_code == 201
    sent = upstream.state.log[-1]
    assert sent["currency_amount"] == "0.000000001"  # never "1E-9"
    assert sent["currency"] == "GBYTE"
    assert sent["partner_cashback_percentage"] == "0"
    assert set(sent) == {
        "partner",
        "partner_key_ok",
        "customer",
        "order_id",
        "description",
        "merchant",
        "address",
        "currency",
        "currency_amount",
        "partner_cashback_percentage",
    }


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (200, b'{"result": "ok", "cashback_amount": 5, "unit": "%s"}' % UNIT.encode(), Outcome.OK),
        (200, b'{"result": "ok", "cashback_amount": 5, "unit": "u"}', Outcome.AMBIGUOUS),
        (200, b'{"result": "ok", "cashback_amount": "5", "unit": "u"}', Outcome.AMBIGUOUS),
        (200, b'{"result": "ok", "cashback_amount": true, "unit": "u"}', Outcome.AMBIGUOUS),
        (200, b'{"result": "ok"}', Outcome.AMBIGUOUS),
        (200, b'{"result": "error", "error": "bad address"}', Outcome.REJECTED),
        (200, b'{"result": "error", "error": "authentication failed"}', Outcome.AUTH_FAILED),
        (400, b'{"result": "error", "error": "missing order_id"}', Outcome.REJECTED),
        (404, b"<html>not found</html>", Outcome.AMBIGUOUS),
        (200, b"[1, 2]", Outcome.AMBIGUOUS),
        (200, b"\xff\xfe", Outcome.AMBIGUOUS),
        (429, b"", Outcome.NOT_SENT),
        (503, b"", Outcome.NOT_SENT),
        (502, b"", Outcome.AMBIGUOUS),
        (504, b"", Outcome.AMBIGUOUS),
    ],
)
def test_answers_are_classified_as_spec_says(status: int, body: bytes, outcome: str) -> None:
    assert classify_response(status, body).outcome == outcome


def test_upstream_error_text_is_redacted_of_the_partner_key(settings: Any) -> None:
    body = f'{{"result": "error", "error": "bad key {settings.CASHBACK_PARTNER_KEY}"}}'.encode()
    result = classify_response(200, body)
    assert result.error == "bad key [redacted]"
