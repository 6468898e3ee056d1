"""`POST /new_purchase`: the upstream protocol, replayed as the known clients send it."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from cashback.models import Purchase, Status
from cashback.sandbox import demo_unit
from merchants.models import ApiKey, Balance, LedgerEntry
from merchants.services import record_entry
from tests.conftest import ADDRESS, MerchantWithKey

EMAIL = "alice@example.com"
GBYTE_UNIT = "kYbc5KGKB/KnjynYePEF4cpumKmOz22xVKSVWbmtZ0M="
# 12 EUR at the sandbox's 55,000,000 bytes per EUR: 10 % regular, plus 10 % partner matched.
CASHBACK_AT_10 = 198_000_000
CASHBACK_AT_0 = 66_000_000


def known_client_fields(shop: MerchantWithKey, **overrides: Any) -> dict[str, str]:
    """Return the fields the known clients send: strings, no `merchant`, a QR-prefixed address."""
    fields = {
        "partner": shop.merchant.public_id,
        "partner_key": shop.key,
        "customer": uuid.uuid4().hex,
        "order_id": f"ord-{uuid.uuid4().hex[:12]}",
        "description": "coffee",
        "address": f"obyte:{ADDRESS}",
        "currency": "EUR",
        "currency_amount": "12",
        "partner_cashback_percentage": "10",
    }
    fields.update(overrides)
    return {k: v for k, v in fields.items() if v is not None}


def post_form(fields: dict[str, str]) -> Any:
    return Client().post(
        "/new_purchase", urlencode(fields), content_type="application/x-www-form-urlencoded"
    )


def post_json(body: Any) -> Any:
    raw = body if isinstance(body, str | bytes) else json.dumps(body)
    return Client().post("/new_purchase", raw, content_type="application/json")


@pytest.fixture
def funded(make_merchant: Any) -> MerchantWithKey:
    """A merchant allowed 10 % partner cashback, with 5 EUR deposited to fund it."""
    shop = make_merchant(max_percentage="10")
    record_entry(shop.merchant, "deposit", Decimal("5"), "EUR")
    return shop


def assert_nothing_stored(upstream: Any) -> None:
    assert Purchase.objects.count() == 0
    assert LedgerEntry.objects.exclude(kind="deposit").count() == 0
    assert upstream.state.requests == 0


# --- The known clients' requests -----------------------------------------------------------


def test_a_known_clients_form_request_is_sent_with_the_processors_credentials(
    funded: MerchantWithKey, upstream: Any
) -> None:
    fields = known_client_fields(funded)

    response = post_form(fields)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "result": "ok",
        "cashback_amount": CASHBACK_AT_10,
        "unit": demo_unit("sandbox", funded.merchant.public_id, fields["order_id"]),
    }
    assert upstream.state.log == [
        {
            "partner": "sandbox",
            "partner_key_ok": "True",
            "merchant": funded.merchant.public_id,
            "customer": fields["customer"],
            "order_id": fields["order_id"],
            "description": "coffee",
            "address": ADDRESS,
            "currency": "EUR",
            "currency_amount": "12",
            "partner_cashback_percentage": "10",
        }
    ]
    purchase = Purchase.objects.get()
    assert (purchase.status, purchase.percentage, purchase.reserved_minor) == (
        Status.SENT,
        Decimal("10.00"),
        120,
    )
    balance = Balance.objects.get(merchant=funded.merchant, currency="EUR")
    assert (balance.available_minor, balance.reserved_minor) == (380, 0)


def test_an_email_address_gets_a_textcoin(funded: MerchantWithKey, upstream: Any) -> None:
    response = post_form(known_client_fields(funded, address=EMAIL))

    assert response.status_code == 200
    assert response.json()["result"] == "ok"
    assert upstream.state.log[0]["address"] == EMAIL
    assert Purchase.objects.get().address == EMAIL


def test_the_merchant_field_is_ignored_and_filled_by_the_gateway(
    funded: MerchantWithKey, upstream: Any
) -> None:
    response = post_form(known_client_fields(funded, merchant="somebody-else"))

    assert response.json()["result"] == "ok"
    assert upstream.state.log[0]["merchant"] == funded.merchant.public_id


def test_without_a_deposit_the_percentage_is_downgraded_to_0(
    make_merchant: Any, upstream: Any
) -> None:
    shop = make_merchant(max_percentage="10")

    response = post_form(known_client_fields(shop))

    assert response.json()["cashback_amount"] == CASHBACK_AT_0
    assert upstream.state.log[0]["partner_cashback_percentage"] == "0"
    purchase = Purchase.objects.get()
    assert (purchase.requested_percentage, purchase.percentage) == (Decimal("10"), Decimal("0"))


@pytest.mark.parametrize("percentage", [None, ""])
def test_an_absent_percentage_means_0_not_the_merchants_default(
    make_merchant: Any, upstream: Any, percentage: str | None
) -> None:
    shop = make_merchant(percentage="5", max_percentage="10")
    record_entry(shop.merchant, "deposit", Decimal("5"), "EUR")

    response = post_form(known_client_fields(shop, partner_cashback_percentage=percentage))

    assert response.json()["cashback_amount"] == CASHBACK_AT_0
    assert upstream.state.log[0]["partner_cashback_percentage"] == "0"
    assert Purchase.objects.get().requested_percentage == Decimal("0")


def test_a_json_body_with_numbers_is_parsed_exactly(funded: MerchantWithKey, upstream: Any) -> None:
    body = known_client_fields(funded)
    raw = json.dumps(body).replace('"12"', "12.50").replace('"10"', "10")

    response = post_json(raw)

    assert response.status_code == 200
    assert response.json()["cashback_amount"] == 206_250_000  # 12.50 EUR at 30 %
    assert upstream.state.log[0]["currency_amount"] == "12.5"
    assert upstream.state.log[0]["partner_cashback_percentage"] == "10"
    assert Purchase.objects.get().amount_minor == 1250


def test_a_multipart_form_works_too(funded: MerchantWithKey, upstream: Any) -> None:
    response = Client().post("/new_purchase", known_client_fields(funded))

    assert response.json()["result"] == "ok"


def test_a_real_client_over_http_gets_the_upstream_answer(
    live_server: Any, make_merchant: Any, upstream: Any
) -> None:
    shop = make_merchant(max_percentage="10")
    fields = known_client_fields(shop)

    # Exactly what the known clients do: a form-encoded POST read as JSON.
    response = requests.post(f"{live_server.url}/new_purchase", data=fields, timeout=10)

    assert response.status_code == 200
    assert response.json() == {
        "result": "ok",
        "cashback_amount": CASHBACK_AT_0,
        "unit": demo_unit("sandbox", shop.merchant.public_id, fields["order_id"]),
    }


# --- Idempotency, shared with the REST API -------------------------------------------------


def test_a_repeated_order_answers_the_stored_outcome_without_calling_upstream(
    funded: MerchantWithKey, upstream: Any
) -> None:
    fields = known_client_fields(funded)
    first = post_form(fields)

    second = post_form(fields)

    assert second.status_code == 200
    assert second.json() == first.json()
    assert second.json()["result"] == "ok"
    assert upstream.state.requests == 1
    assert Purchase.objects.count() == 1


def test_a_repeated_order_with_other_fields_is_an_error(
    funded: MerchantWithKey, upstream: Any
) -> None:
    fields = known_client_fields(funded)
    post_form(fields)

    response = post_form({**fields, "currency_amount": "13"})

    assert response.status_code == 200
    assert response.json() == {
        "result": "error",
        "error": f"order_id {fields['order_id']!r} was already reported with different "
        "currency_amount.",
    }
    assert upstream.state.requests == 1


def test_the_rest_api_replays_an_order_sent_through_the_drop_in(
    funded: MerchantWithKey, upstream: Any
) -> None:
    fields = known_client_fields(funded)
    post_form(fields)

    response = funded.client.post(
        "/api/v1/purchases",
        {
            "customer": fields["customer"],
            "order_id": fields["order_id"],
            "description": "coffee",
            "address": ADDRESS,
            "currency": "EUR",
            "currency_amount": "12.00",
            "partner_cashback_percentage": "10",
        },
        format="json",
    )

    assert response.status_code == 200
    assert response.headers["Idempotent-Replayed"] == "true"
    assert response.json()["status"] == "sent"
    assert upstream.state.requests == 1


# --- Credentials ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        "wrong key",
        "another merchant's key",
        "wrong partner",
        "no partner_key",
        "no partner",
        "revoked key",
        "key with a NUL",
    ],
)
def test_bad_credentials_answer_authentication_failed_with_http_200(
    make_merchant: Any, upstream: Any, change: str
) -> None:
    shop, other = make_merchant(max_percentage="10"), make_merchant()
    fields = known_client_fields(shop)
    if change == "wrong key":
        fields["partner_key"] = shop.key[:-1] + ("A" if shop.key[-1] != "A" else "B")
    elif change == "another merchant's key":
        fields["partner_key"] = other.key
    elif change == "wrong partner":
        fields["partner"] = other.merchant.public_id
    elif change == "no partner_key":
        del fields["partner_key"]
    elif change == "no partner":
        del fields["partner"]
    elif change == "revoked key":
        ApiKey.objects.filter(merchant=shop.merchant).update(revoked_at=timezone.now())
    elif change == "key with a NUL":
        fields["partner_key"] = "cbk_" + "\x00" * 10 + shop.key[14:]

    response = post_form(fields)

    assert response.status_code == 200
    assert response.json() == {"result": "error", "error": "authentication failed"}
    assert_nothing_stored(upstream)


def test_a_disabled_merchant_is_an_error(funded: MerchantWithKey, upstream: Any) -> None:
    funded.merchant.is_active = False
    funded.merchant.save()

    response = post_form(known_client_fields(funded))

    assert response.status_code == 200
    assert response.json() == {"result": "error", "error": "this merchant is disabled"}
    assert_nothing_stored(upstream)


# --- Invalid input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"currency_amount": "12.505"},
            "currency_amount: EUR amounts have at most 2 decimal places",
        ),
        ({"currency_amount": "0"}, "currency_amount: must be greater than 0"),
        ({"currency_amount": "twelve"}, "currency_amount: must be a decimal number"),
        ({"currency_amount": "1E+100000000"}, "currency_amount: is out of range"),
        ({"currency_amount": "1E-100000000"}, "currency_amount: is out of range"),
        ({"currency_amount": None}, "currency_amount: This field is required."),
        (
            {"currency": "DOGE"},
            "currency: 'DOGE' is not a currency the gateway takes: USD, EUR, RUR, GBYTE, BTC, or an "
            "ISO 4217 currency with an ECB reference rate (upper case, e.g. GBP).",
        ),
        ({"customer": None}, "customer: This field is required."),
        ({"customer": ""}, "customer: This field may not be blank."),
        ({"order_id": "A\n1"}, "order_id: Must not contain control characters."),
        (
            {"description": "x" * 1001},
            "description: Ensure this field has no more than 1000 characters.",
        ),
        (
            {"address": "obyte:WR5FPYE6LHBQ57ZCFUTJXDDNHWK5355T"},
            "address: Enter a valid Obyte address (32 characters A-Z, 2-7 with a valid "
            "checksum) or an email address.",
        ),
        ({"address": "someone@"}, "address: Enter a valid Obyte address or email address."),
        (
            {"partner_cashback_percentage": "10.5"},
            "partner_cashback_percentage: at most 10.00 for this merchant.",
        ),
        (
            {"partner_cashback_percentage": "-1"},
            "partner_cashback_percentage: Must be between 0 and 100.",
        ),
        (
            {"partner_cashback_percentage": "1.234"},
            "partner_cashback_percentage: percentages have at most 2 decimal places",
        ),
        (
            {"purchase_unit": GBYTE_UNIT},
            "purchase_unit: Only purchases paid in GBYTE have a purchase unit.",
        ),
    ],
)
def test_invalid_input_is_an_error_with_http_200_and_nothing_is_stored(
    funded: MerchantWithKey, upstream: Any, overrides: dict[str, Any], message: str
) -> None:
    response = post_form(known_client_fields(funded, **overrides))

    assert response.status_code == 200
    assert response.json() == {"result": "error", "error": message}
    assert_nothing_stored(upstream)


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        ("{not json", "application/json", "the request body is not valid JSON"),
        ("[1, 2]", "application/json", "the request body must be form fields or a JSON object"),
        ('"text"', "application/json", "the request body must be form fields or a JSON object"),
        ("NaN", "application/json", "the request body is not valid JSON"),
        ("partner=x", "text/plain", 'Unsupported media type "text/plain" in request.'),
        (b"\xff\xfe{}", "application/json", "the request body is not valid JSON"),
        ("", "application/json", "authentication failed"),
        (
            "--x\r\nbroken",
            "multipart/form-data",
            "Multipart form parse error - Invalid boundary in multipart: None",
        ),
    ],
)
def test_an_unreadable_body_is_an_error_with_http_200(
    db: None, upstream: Any, body: str | bytes, content_type: str, message: str
) -> None:
    response = Client().post("/new_purchase", body, content_type=content_type)

    assert response.status_code == 200
    assert response.json() == {"result": "error", "error": message}
    assert_nothing_stored(upstream)


def test_json_fields_of_the_wrong_type_are_errors(funded: MerchantWithKey, upstream: Any) -> None:
    body: dict[str, Any] = known_client_fields(funded)

    assert post_json({**body, "partner_key": 12}).json()["error"] == "authentication failed"
    assert post_json({**body, "customer": {"a": 1}}).json()["error"] == (
        "customer: Not a valid string."
    )
    assert post_json({**body, "currency_amount": True}).json()["error"] == (
        "currency_amount: must be a decimal number"
    )
    assert_nothing_stored(upstream)


# --- Outcomes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "status", "next_step"),
    [
        ("503", "pending", "the gateway will send it"),
        ("500", "unknown", "the processor is checking whether upstream received it"),
    ],
)
def test_an_undecided_outcome_says_the_cashback_is_queued(
    funded: MerchantWithKey, upstream: Any, mode: str, status: str, next_step: str
) -> None:
    upstream.state.set_mode(mode)
    fields = known_client_fields(funded)

    first = post_form(fields)
    upstream.state.set_mode("ok")
    again = post_form(fields)

    expected = {
        "result": "error",
        "error": f"cashback is queued (status {status}): {next_step}; "
        f"do not request cashback for order_id {fields['order_id']!r} anywhere else",
    }
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json() == expected
    assert upstream.state.requests == 1
    assert Purchase.objects.get().status == status


def test_a_rejection_passes_upstreams_message(funded: MerchantWithKey, upstream: Any) -> None:
    upstream.state.set_mode("error")

    response = post_form(known_client_fields(funded))

    assert response.status_code == 200
    assert response.json() == {"result": "error", "error": "purchase refused by the sandbox"}
    purchase = Purchase.objects.get()
    assert (purchase.status, purchase.hold) == (Status.REJECTED, "released")


def test_a_failed_purchase_is_answered_as_failed(funded: MerchantWithKey, upstream: Any) -> None:
    fields = known_client_fields(funded)
    upstream.state.set_mode("503")
    post_form(fields)
    Purchase.objects.update(status=Status.FAILED, error="retries ran out: upstream busy (HTTP 503)")

    response = post_form(fields)

    assert response.json() == {
        "result": "error",
        "error": "cashback failed: retries ran out: upstream busy (HTTP 503)",
    }


def test_an_uncovered_deposit_under_policy_reject_is_an_error(
    make_merchant: Any, upstream: Any
) -> None:
    shop = make_merchant(max_percentage="10", policy="reject")

    response = post_form(known_client_fields(shop))

    assert response.status_code == 200
    assert response.json() == {
        "result": "error",
        "error": "The deposit in EUR does not cover 10.00 % partner cashback; nothing was stored.",
    }
    assert_nothing_stored(upstream)


def test_a_reused_purchase_unit_is_an_error(funded: MerchantWithKey, upstream: Any) -> None:
    gbyte = {"currency": "GBYTE", "currency_amount": "0.5", "purchase_unit": GBYTE_UNIT}
    post_form(known_client_fields(funded, partner_cashback_percentage="0", **gbyte))

    response = post_form(known_client_fields(funded, partner_cashback_percentage="0", **gbyte))

    assert response.json() == {
        "result": "error",
        "error": "purchase_unit is already used by another order of this merchant.",
    }
    assert upstream.state.requests == 1


# --- Transport limits ----------------------------------------------------------------------


def test_a_body_over_the_limit_is_413(funded: MerchantWithKey, upstream: Any) -> None:
    fields = known_client_fields(funded, description="x" * (1024 * 1024))

    response = post_form(fields)

    assert response.status_code == 413
    assert_nothing_stored(upstream)


def test_get_is_405_in_upstreams_format(db: None) -> None:
    response = Client().get("/new_purchase")

    assert response.status_code == 405
    assert response.json() == {"result": "error", "error": 'Method "GET" not allowed.'}


def test_a_merchant_key_is_throttled_with_429(
    funded: MerchantWithKey, upstream: Any, settings: Any
) -> None:
    cache.clear()
    settings.API_THROTTLE_RATE = "2/min"

    answers = [post_form(known_client_fields(funded)) for _ in range(3)]

    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[2].json() == {"result": "error", "error": "too many requests; retry later"}
    assert answers[2]["Retry-After"] == "60"
    assert upstream.state.requests == 2
    cache.clear()


def test_a_client_address_is_throttled_before_authentication(
    db: None, upstream: Any, settings: Any
) -> None:
    cache.clear()
    settings.API_IP_THROTTLE_RATE = "2/min"

    answers = [post_form({"partner": "x", "partner_key": "y"}) for _ in range(3)]

    assert [a.status_code for a in answers] == [200, 200, 429]
    cache.clear()
