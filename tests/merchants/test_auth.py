"""API key authentication: missing, bad, revoked and expired keys; disabled merchants."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from merchants.models import ApiKey


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Bearer nope", "Token abc", "Bearer cbk_0000000000" + "x" * 44, "Bearer a b"],
)
def test_missing_or_bad_keys_are_401(db: None, header: str | None) -> None:
    client = APIClient()
    if header:
        client.credentials(HTTP_AUTHORIZATION=header)

    response = client.get("/api/v1/balance")

    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid or missing API key."}
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'


def test_revoked_and_expired_keys_are_401(shop: Any) -> None:
    key = ApiKey.objects.get(merchant=shop.merchant)
    key.revoked_at = timezone.now()
    key.save()
    assert shop.client.get("/api/v1/balance").status_code == 401

    key.revoked_at, key.expires_at = None, timezone.now() - timedelta(seconds=1)
    key.save()
    assert shop.client.get("/api/v1/balance").status_code == 401

    key.expires_at = timezone.now() + timedelta(days=1)
    key.save()
    assert shop.client.get("/api/v1/balance").status_code == 200


def test_a_disabled_merchant_is_403(shop: Any) -> None:
    shop.merchant.is_active = False
    shop.merchant.save()

    response = shop.client.get("/api/v1/balance")

    assert response.status_code == 403
    assert response.json() == {"detail": "This merchant is disabled."}


def test_keys_are_stored_only_as_a_keyed_hash_and_record_last_use(shop: Any) -> None:
    key = ApiKey.objects.get(merchant=shop.merchant)
    assert shop.key not in (key.prefix, key.hashed_key)
    assert len(key.hashed_key) == 64

    shop.client.get("/api/v1/balance", REMOTE_ADDR="10.1.2.3")

    key.refresh_from_db()
    assert key.last_used_ip == "10.1.2.3"
    assert timezone.now() - key.last_used_at < timedelta(seconds=5)
