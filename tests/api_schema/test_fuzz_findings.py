"""Inputs that once answered 500, found while fuzzing the API; each is a clear 4xx now."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from django.test import Client, RequestFactory

from cashback.models import Purchase
from gateway.urls import server_error


def _cursor(query: bytes) -> str:
    return base64.b64encode(query).decode()


@pytest.mark.parametrize("path", ["/api/v1/purchases", "/api/v1/ledger"])
@pytest.mark.parametrize("position", [b"p=foo", b"p=\x00", b"p=2026-13-45T00:00:00"])
def test_a_crafted_cursor_is_404_not_500(shop: Any, path: str, position: bytes) -> None:
    response = shop.client.get(path, {"cursor": _cursor(position)})

    assert response.status_code == 404
    assert response.json() == {"detail": "Invalid cursor"}


def test_a_real_cursor_still_pages(shop: Any, upstream: Any) -> None:
    for n in range(3):
        shop.post_purchase(order_id=f"A-{n}")

    first = shop.client.get("/api/v1/purchases", {"page_size": 2}).json()
    second = shop.client.get(first["next"]).json()

    assert [p["order_id"] for p in first["results"] + second["results"]] == ["A-2", "A-1", "A-0"]


@pytest.mark.parametrize(
    "value", ["2026-13-45", "2026-02-30", "2026-01-01T25:00:00", "2026-01-01T00:00:00+99:00"]
)
def test_an_impossible_date_filter_is_400(shop: Any, value: str) -> None:
    response = shop.client.get("/api/v1/purchases", {"created_after": value})

    assert response.status_code == 400
    assert response.json() == {
        "detail": "created_after: Use an ISO 8601 date or date-time.",
        "created_after": ["Use an ISO 8601 date or date-time."],
    }


def test_an_order_id_with_nul_in_the_path_is_404(shop: Any) -> None:
    response = shop.client.get("/api/v1/purchases/A%00B")

    assert response.status_code == 404
    assert response.json() == {"detail": "No such purchase."}


@pytest.mark.parametrize("amount", ["1E+100000000", "1E-100000000", "0E-1000000000"])
def test_an_amount_with_an_absurd_exponent_is_400(shop: Any, upstream: Any, amount: str) -> None:
    response = shop.post_purchase(currency_amount=amount)

    assert response.status_code == 400
    assert response.json()["currency_amount"] == ["is out of range"]
    assert Purchase.objects.count() == 0
    assert upstream.state.requests == 0


@pytest.mark.parametrize("path", ["/api/v1/purchases/A%0AB", "/api/v1/nothing-here"])
def test_an_unrouted_api_path_is_a_json_404(shop: Any, path: str) -> None:
    # `<path:…>` does not match a newline, so Django itself answers: as JSON under /api/.
    response = shop.client.get(path)

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found."}


def test_other_unrouted_paths_keep_the_html_404(db: None) -> None:
    response = Client().get("/nothing-here")

    assert response.status_code == 404
    assert response["Content-Type"] == "text/html; charset=utf-8"


def test_a_crash_is_answered_as_json_to_api_and_drop_in_clients() -> None:
    factory = RequestFactory()

    api = server_error(factory.get("/api/v1/balance"))
    dropin = server_error(factory.post("/new_purchase"))

    assert (api.status_code, json.loads(api.content)) == (500, {"detail": "Internal server error."})
    assert dropin.status_code == 500
    assert json.loads(dropin.content) == {
        "result": "error",
        "error": "internal error in the gateway; the purchase may be stored, so do not "
        "request cashback for this order_id anywhere else",
    }
