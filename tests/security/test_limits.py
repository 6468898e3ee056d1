"""Abuse limits: per-key and per-address throttles (shared across hosts through Redis), the
64 KiB body limit over a real socket, the page size cap, and admin login lockout."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from django.contrib.auth.models import User
from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache
from django.utils import timezone
from rest_framework.test import APIClient

from cashback.models import Purchase
from merchants.models import ApiKey
from tests.conftest import purchase_body

THROTTLED = {"detail": "Request was throttled. Retry later."}
TOO_LARGE = {"detail": "Request body is larger than 64 KiB."}
REDIS = "redis://127.0.0.1:6379/15"


@pytest.fixture
def own_cache(settings: Any) -> None:
    """A cache of this test's own, so no other test's throttle history counts."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": uuid.uuid4().hex,
        }
    }


def assert_throttled(response: Any) -> None:
    assert response.status_code == 429
    assert 0 < int(response.headers["Retry-After"]) <= 60
    body = response.json()
    assert {k: v for k, v in body.items() if k != "retry_after"} == THROTTLED
    assert 0 < body["retry_after"] <= 60


def test_each_api_key_is_throttled_on_its_own(
    make_merchant: Any, settings: Any, own_cache: None
) -> None:
    settings.API_THROTTLE_RATE = "3/m"
    a, b = make_merchant(), make_merchant()

    answers = [a.client.get("/api/v1/balance").status_code for _ in range(3)]

    assert answers == [200, 200, 200]
    assert_throttled(a.client.get("/api/v1/balance"))
    assert b.client.get("/api/v1/balance").status_code == 200


def test_each_client_address_is_throttled_across_keys(
    make_merchant: Any, settings: Any, own_cache: None
) -> None:
    settings.API_IP_THROTTLE_RATE = "3/m"
    a, b = make_merchant(), make_merchant()

    answers = [a.client.get("/api/v1/balance", REMOTE_ADDR="192.0.2.1").status_code]
    answers += [b.client.get("/api/v1/balance", REMOTE_ADDR="192.0.2.1").status_code for _ in "12"]

    assert answers == [200, 200, 200]
    assert_throttled(b.client.get("/api/v1/balance", REMOTE_ADDR="192.0.2.1"))
    assert a.client.get("/api/v1/balance", REMOTE_ADDR="192.0.2.2").status_code == 200


def test_key_guessing_is_throttled_per_address(shop: Any, settings: Any, own_cache: None) -> None:
    settings.API_IP_THROTTLE_RATE = "3/m"
    guesser = APIClient()
    guesser.credentials(HTTP_AUTHORIZATION="Bearer cbk_guess")

    answers = [guesser.get("/api/v1/balance").status_code for _ in range(3)]

    assert answers == [401, 401, 401]
    assert_throttled(guesser.get("/api/v1/balance"))
    # Another address is not blocked by this one's failures.
    assert shop.client.get("/api/v1/balance", REMOTE_ADDR="192.0.2.3").status_code == 200


@pytest.fixture
def redis_cache(settings: Any) -> Iterator[str]:
    """Point this process's cache at Redis under a prefix of this test's own; return it."""
    prefix = f"security-test-{uuid.uuid4().hex}"
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS,
            "KEY_PREFIX": prefix,
        }
    }
    try:
        cache.set("ping", 1, 5)
    except Exception as exc:  # the CI starts Redis; a laptop may not have it
        pytest.skip(f"Redis does not answer at {REDIS}: {exc}")
    assert isinstance(caches["default"], RedisCache)
    yield prefix


def test_two_hosts_share_one_key_limit_through_redis(
    start_gateway: Any, make_merchant: Any, settings: Any, redis_cache: str
) -> None:
    settings.API_THROTTLE_RATE = "3/m"
    shop = make_merchant()
    other_host = start_gateway(
        CACHE_URL=f"{REDIS}?key_prefix={redis_cache}", API_THROTTLE_RATE="3/m"
    )
    headers = {"Authorization": f"Bearer {shop.key}"}

    def there() -> Any:
        return requests.get(f"{other_host.url}/api/v1/balance", headers=headers, timeout=10)

    answers = [there().status_code, shop.client.get("/api/v1/balance").status_code]
    answers.append(there().status_code)

    assert answers == [200, 200, 200]
    # Both processes counted their requests in the one counter in Redis.
    key_pk = ApiKey.objects.get(merchant=shop.merchant).pk
    assert cache.get(f"throttle:api_key:{key_pk}") == 3, other_host.log()
    assert_throttled(shop.client.get("/api/v1/balance"))
    assert_throttled(there())


def test_bodies_over_64_kib_are_413_over_a_real_socket(
    start_gateway: Any, shop: Any, upstream: Any
) -> None:
    server = start_gateway(CASHBACK_SANDBOX_URL=upstream.url)
    url = f"{server.url}/api/v1/purchases"
    headers = {"Authorization": f"Bearer {shop.key}", "Content-Type": "application/json"}
    megabyte = b'{"description": "' + b"x" * (1024 * 1024) + b'"}'

    def chunks(data: bytes) -> Iterator[bytes]:
        for i in range(0, len(data), 8192):
            yield data[i : i + 8192]

    declared = requests.post(url, data=megabyte, headers=headers, timeout=10)
    chunked = requests.post(url, data=chunks(megabyte), headers=headers, timeout=10)
    small = json.dumps(purchase_body(order_id="chunked-1")).encode()
    chunked_small = requests.post(url, data=chunks(small), headers=headers, timeout=10)

    assert (declared.status_code, declared.json()) == (413, TOO_LARGE)
    assert (chunked.status_code, chunked.json()) == (413, TOO_LARGE)
    # A chunked body within the limit is read as any other body.
    assert chunked_small.status_code == 201, chunked_small.text
    assert chunked_small.json()["order_id"] == "chunked-1"
    assert Purchase.objects.filter(merchant=shop.merchant).count() == 1


def test_the_body_limit_is_64_kib_exactly(shop: Any) -> None:
    body = json.dumps(purchase_body()).encode()
    at_limit = body[:-1] + b" " * (64 * 1024 - len(body)) + b"}"
    over = at_limit[:-1] + b" }"

    refused = shop.client.post("/api/v1/purchases", over, content_type="application/json")
    accepted = shop.client.post("/api/v1/purchases", at_limit, content_type="application/json")

    assert (refused.status_code, refused.json()) == (413, TOO_LARGE)
    assert len(at_limit) == 64 * 1024
    assert accepted.status_code != 413
    assert accepted.json()["order_id"] == "A-1001"


def test_a_page_size_above_the_maximum_is_capped(shop: Any) -> None:
    now = timezone.now()
    Purchase.objects.bulk_create(
        Purchase(
            merchant=shop.merchant,
            order_id=f"P-{n}",
            customer="c",
            address="WR5FPYE6LHBQ57ZCFUTJXDDNHWK5355S",
            currency="EUR",
            amount_minor=100,
            requested_percentage=0,
            percentage=0,
            created_at=now,
        )
        for n in range(201)
    )

    page = shop.client.get("/api/v1/purchases?page_size=100000").json()
    default = shop.client.get("/api/v1/purchases").json()

    assert len(page["results"]) == 200
    assert page["next"] is not None
    assert len(default["results"]) == 50


def test_the_eleventh_rapid_admin_login_failure_is_locked_out(
    client: Any, db: None, plain_static: None, settings: Any
) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed
    User.objects.create_superuser("boss", "boss@example.com", "right-password-123")

    def login(password: str) -> Any:
        return client.post("/admin/login/?next=/admin/", {"username": "boss", "password": password})

    failures = [login(f"wrong-{n}").status_code for n in range(10)]
    locked = login("right-password-123")

    assert failures == [200] * 9 + [429]
    assert locked.status_code == 429
    assert b"locked" in locked.content.lower()
    assert "_auth_user_id" not in client.session


def test_a_chunked_body_is_refused_411_where_its_end_is_unknown(shop: Any) -> None:
    # Django's development server does not decode chunks; gunicorn does (the test above).
    response = shop.client.generic(
        "POST",
        "/api/v1/purchases",
        b"",
        content_type="application/json",
        HTTP_TRANSFER_ENCODING="chunked",
    )

    assert response.status_code == 411
    assert response.json() == {"detail": "Send a Content-Length header with the body."}
