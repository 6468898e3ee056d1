"""API keys: constant-time comparison, indistinguishable refusals, rotation with overlap,
expiry, last use, and the `rotate_api_key` command."""

from __future__ import annotations

import hmac
import io
import json
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from merchants import authentication
from merchants.models import ApiKey, hash_api_key


def get_balance(key: str, **extra: Any) -> Any:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client.get("/api/v1/balance", **extra)


def test_keys_are_compared_with_hmac_compare_digest(shop: Any, monkeypatch: Any) -> None:
    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(authentication.hmac, "compare_digest", spy)
    stored = ApiKey.objects.get(merchant=shop.merchant).hashed_key

    assert shop.client.get("/api/v1/balance").status_code == 200
    wrong = shop.key[:-4] + ("AAAA" if not shop.key.endswith("AAAA") else "BBBB")
    assert get_balance(wrong).status_code == 401

    assert calls == [(stored, hash_api_key(shop.key)), (stored, hash_api_key(wrong))]


def _refusals(shop: Any) -> dict[str, str]:
    """Return a key of each kind that must be refused, built from the shop's own key."""
    revoked_key, revoked = ApiKey.issue(shop.merchant, name="revoked")
    revoked_key.revoked_at = timezone.now()
    revoked_key.save()
    expired_key, expired = ApiKey.issue(shop.merchant, name="expired")
    expired_key.expires_at = timezone.now() - timedelta(seconds=1)
    expired_key.save()
    unknown = "cbk_" + "0123456789" + shop.key[14:]
    return {
        "revoked": revoked,
        "expired": expired,
        "unknown": unknown,
        "wrong secret, known prefix": shop.key[:20] + ("x" * 38),
        "malformed": "cbk_short",
        "not ascii": "cbk_clé",
        "NUL in prefix": "cbk_" + "\x00" * 10 + "A" * 44,
    }


def test_revoked_expired_unknown_and_malformed_keys_are_refused_identically(
    shop: Any, monkeypatch: Any
) -> None:
    compared: list[str] = []
    real = hmac.compare_digest
    monkeypatch.setattr(
        authentication.hmac, "compare_digest", lambda a, b: compared.append(a) or real(a, b)
    )
    answers = {}
    for kind, key in _refusals(shop).items():
        compared.clear()
        with CaptureQueriesContext(connection) as queries:
            response = get_balance(key)
        # Same answer, and the same work: one lookup by prefix and one HMAC comparison.
        answers[kind] = (
            response.status_code,
            response.content,
            response["WWW-Authenticate"],
            len(queries),
            len(compared),
        )

    expected = (401, b'{"detail":"Invalid or missing API key."}', 'Bearer realm="api"', 1, 1)
    assert answers == dict.fromkeys(answers, expected)


def test_a_rotated_merchant_holds_two_working_keys_until_the_old_is_revoked(shop: Any) -> None:
    out = io.StringIO()
    call_command("rotate_api_key", shop.merchant.public_id, "--name", "2027", "--json", stdout=out)
    printed = json.loads(out.getvalue())
    new_key = printed["api_key"]

    assert printed["merchant_id"] == shop.merchant.public_id
    assert printed["key"] == f"cbk_{new_key[4:14]}…"
    assert printed["old_keys"] == [
        {"key": f"cbk_{shop.key[4:14]}…", "name": "initial", "expires_at": None, "revoked_at": None}
    ]
    assert ApiKey.objects.get(prefix=new_key[4:14]).name == "2027"
    assert get_balance(shop.key).status_code == 200
    assert get_balance(new_key).status_code == 200

    call_command("rotate_api_key", shop.merchant.public_id, "--revoke-old", stdout=io.StringIO())

    assert get_balance(shop.key).status_code == 401
    assert get_balance(new_key).status_code == 401  # the second rotation revoked it too
    assert ApiKey.objects.filter(merchant=shop.merchant).usable().count() == 1


def test_rotation_can_let_the_old_keys_expire_later(shop: Any) -> None:
    out = io.StringIO()
    before = timezone.now()
    call_command("rotate_api_key", shop.merchant.public_id, "--expire-old-in", "2", stdout=out)

    lines = out.getvalue().splitlines()
    new_key = lines[1].rsplit(" ", 1)[1]
    old = ApiKey.objects.get(name="initial")
    assert lines[0] == f"Merchant: {shop.merchant.public_id}"
    assert lines[1] == f"New API key cbk_{new_key[4:14]}… (shown only now): {new_key}"
    assert lines[2] == f"Old key {old}: expires {old.expires_at:%Y-%m-%d %H:%M UTC}"
    assert before + timedelta(hours=2) <= old.expires_at <= timezone.now() + timedelta(hours=2)
    assert get_balance(shop.key).status_code == 200  # overlap: still works for now

    old.expires_at = timezone.now() - timedelta(seconds=1)  # two hours later
    old.save()
    assert get_balance(shop.key).status_code == 401
    assert get_balance(new_key).status_code == 200


def test_rotation_refuses_an_unknown_merchant_and_exclusive_options(shop: Any) -> None:
    with pytest.raises(CommandError, match=r"^No merchant with public id 'nobody'\.$"):
        call_command("rotate_api_key", "nobody", stdout=io.StringIO())
    with pytest.raises(CommandError, match="not allowed with argument"):
        call_command(
            "rotate_api_key",
            shop.merchant.public_id,
            "--revoke-old",
            "--expire-old-in",
            "1",
            stdout=io.StringIO(),
        )
    assert ApiKey.objects.filter(merchant=shop.merchant).count() == 1


def test_last_use_time_and_address_are_recorded(shop: Any) -> None:
    key = ApiKey.objects.get(merchant=shop.merchant)
    assert (key.last_used_at, key.last_used_ip) == (None, None)
    before = timezone.now()

    assert get_balance(shop.key, REMOTE_ADDR="203.0.113.7").status_code == 200

    key.refresh_from_db()
    assert key.last_used_ip == "203.0.113.7"
    assert before <= key.last_used_at <= timezone.now()

    # Within the minute another address writes nothing (no UPDATE per request, no row lock
    # for terminals sharing a key); once the minute is over, the next request records it.
    get_balance(shop.key, REMOTE_ADDR="2001:db8::1")
    key.refresh_from_db()
    assert key.last_used_ip == "203.0.113.7"
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=before - timedelta(seconds=61))
    get_balance(shop.key, REMOTE_ADDR="2001:db8::1")
    key.refresh_from_db()
    assert key.last_used_ip == "2001:db8::1"
    assert key.last_used_at >= before


def test_requests_within_a_minute_write_last_use_once(
    shop: Any, django_assert_num_queries: Any
) -> None:
    get_balance(shop.key, REMOTE_ADDR="203.0.113.7")  # writes last-used
    with django_assert_num_queries(2):  # the key with its merchant; the balances
        assert get_balance(shop.key, REMOTE_ADDR="198.51.100.4").status_code == 200


def test_a_forged_forwarded_address_is_not_stored_and_not_a_500(shop: Any, settings: Any) -> None:
    settings.REST_FRAMEWORK = settings.REST_FRAMEWORK | {"NUM_PROXIES": 1}

    response = get_balance(shop.key, HTTP_X_FORWARDED_FOR="not-an-address")
    assert response.status_code == 200
    assert ApiKey.objects.get(merchant=shop.merchant).last_used_ip is None

    ApiKey.objects.filter(merchant=shop.merchant).update(last_used_at=None)
    get_balance(shop.key, HTTP_X_FORWARDED_FOR="198.51.100.1, 192.0.2.9")
    assert ApiKey.objects.get(merchant=shop.merchant).last_used_ip == "192.0.2.9"


def test_the_schema_documents_bearer_keys(shop: Any) -> None:
    schema = shop.client.get("/api/schema/?format=json").json()

    assert schema["components"]["securitySchemes"] == {
        "apiKey": {"type": "http", "scheme": "bearer"}
    }
    assert schema["paths"]["/api/v1/balance"]["get"]["security"] == [{"apiKey": []}]
