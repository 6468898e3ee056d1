"""Reading purchases back: one, a list with filters, and never another merchant's."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import quote

from django.utils import timezone

from cashback.models import Purchase


def test_a_purchase_is_read_back_by_its_url_encoded_order_id(shop: Any, upstream: Any) -> None:
    created = shop.post_purchase(order_id="A/1 #2?").json()

    response = shop.client.get("/api/v1/purchases/" + quote("A/1 #2?", safe=""))

    assert response.status_code == 200
    assert response.json() == created


def test_another_merchants_purchase_is_404(make_merchant: Any, upstream: Any) -> None:
    a, b = make_merchant(), make_merchant()
    a.post_purchase(order_id="secret")

    response = b.client.get("/api/v1/purchases/secret")

    assert response.status_code == 404
    assert response.json() == {"detail": "No such purchase."}
    assert b.client.get("/api/v1/purchases").json()["results"] == []


def test_the_list_is_newest_first_paginated_and_filtered(shop: Any, upstream: Any) -> None:
    for n in range(5):
        shop.post_purchase(order_id=f"o{n}")
    upstream.state.set_mode("error")
    shop.post_purchase(order_id="refused")
    Purchase.objects.filter(order_id="o0").update(created_at=timezone.now() - timedelta(days=3))

    page = shop.client.get("/api/v1/purchases?page_size=2").json()
    assert [p["order_id"] for p in page["results"]] == ["refused", "o4"]
    page2 = shop.client.get(page["next"]).json()
    assert [p["order_id"] for p in page2["results"]] == ["o3", "o2"]

    rejected = shop.client.get("/api/v1/purchases?status=rejected").json()["results"]
    assert [p["order_id"] for p in rejected] == ["refused"]
    since = (timezone.now() - timedelta(days=1)).date().isoformat()
    recent = shop.client.get(f"/api/v1/purchases?created_after={since}").json()["results"]
    assert "o0" not in [p["order_id"] for p in recent] and len(recent) == 5
    old = shop.client.get(f"/api/v1/purchases?created_before={since}").json()["results"]
    assert [p["order_id"] for p in old] == ["o0"]


def test_bad_list_filters_are_400(shop: Any) -> None:
    assert shop.client.get("/api/v1/purchases?status=nope").status_code == 400
    assert shop.client.get("/api/v1/purchases?created_after=yesterday").status_code == 400
