"""Limits as one rule: amounts that fit the stored minor units, texts that fit their columns,
no control characters; on the REST API, the drop-in endpoint, the admin and the commands."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from cashback.models import Purchase, PurchaseAction
from cashback.serializers import PurchaseRequestSerializer
from merchants.models import LedgerEntry
from tests.admin.conftest import make_purchase
from tests.conftest import ADDRESS, purchase_body
from tests.dropin.test_new_purchase import known_client_fields, post_form, post_json

UNIT = "kYbc5KGKB/KnjynYePEF4cpumKmOz22xVKSVWbmtZ0M="

# Amounts within 18 digits whose minor units do not fit a signed 64-bit integer.
OVERFLOWING = [
    ("EUR", "99999999999999999", "must be at most 92233720368547758.07 EUR"),
    ("EUR", "92233720368547759", "must be at most 92233720368547758.07 EUR"),
    ("USD", "100000000000000000", "must be at most 92233720368547758.07 USD"),
    ("GBYTE", "10000000000", "must be at most 9223372036.854775807 GBYTE"),
    ("BTC", "92233720369", "must be at most 92233720368.54775807 BTC"),
]


def assert_nothing_stored(upstream: Any) -> None:
    assert Purchase.objects.count() == 0
    assert LedgerEntry.objects.count() == 0
    assert upstream.state.requests == 0


@pytest.mark.parametrize(("currency", "amount", "message"), OVERFLOWING)
def test_an_amount_beyond_64_bit_minor_units_is_400(
    shop: Any, upstream: Any, currency: str, amount: str, message: str
) -> None:
    response = shop.post_purchase(currency=currency, currency_amount=amount)

    assert response.status_code == 400, response.content
    assert response.json() == {
        "detail": f"currency_amount: {message}",
        "currency_amount": [message],
    }
    assert_nothing_stored(upstream)


@pytest.mark.parametrize(("currency", "amount", "message"), OVERFLOWING)
def test_an_amount_beyond_64_bit_minor_units_is_a_drop_in_error(
    shop: Any, upstream: Any, currency: str, amount: str, message: str
) -> None:
    fields = known_client_fields(shop, currency=currency, currency_amount=amount)
    form = post_form(fields)
    as_json = post_json(fields | {"order_id": fields["order_id"] + "-j"})

    for response in (form, as_json):
        assert response.status_code == 200
        assert response.json() == {"result": "error", "error": f"currency_amount: {message}"}
    assert_nothing_stored(upstream)


@pytest.mark.parametrize(
    ("currency", "amount"),
    [("EUR", "9999999999999999.99"), ("GBYTE", "9223372036.85477580"), ("BTC", "92233720368")],
)
def test_the_largest_amounts_that_fit_are_valid(currency: str, amount: str) -> None:
    serializer = PurchaseRequestSerializer(
        data=purchase_body(currency=currency, currency_amount=amount)
    )

    assert serializer.is_valid(), serializer.errors
    assert serializer.to_input().amount_minor <= 2**63 - 1


def _email(length: int) -> str:
    """Return a syntactically valid email address of exactly `length` characters."""
    local = "a" * 64
    domain_length = length - len(local) - 1
    labels, rest = [], domain_length - len(".com")
    while rest > 0:
        label = min(63, rest)
        if rest - label == 1:  # a label needs a dot before it, and at least one character
            label -= 1
        labels.append("b" * label)
        rest -= label + 1 if rest > label else label
    address = f"{local}@{'.'.join(labels)}.com"
    assert len(address) == length, len(address)
    return address


@pytest.mark.parametrize("length", [255, 263, 300])
def test_an_email_address_longer_than_its_column_is_400(
    shop: Any, upstream: Any, length: int
) -> None:
    response = shop.post_purchase(address=_email(length))

    assert response.status_code == 400, response.content
    if length <= 263:  # within the raw bound (a QR prefix may come on top), then checked bare
        assert response.json()["address"] == ["Ensure this field has no more than 254 characters."]
    else:
        assert response.json()["address"] == ["Ensure this field has no more than 263 characters."]
    assert_nothing_stored(upstream)


def test_an_email_address_of_254_characters_is_stored(shop: Any, upstream: Any) -> None:
    address = _email(254)

    response = shop.post_purchase(address=address)
    dropin = post_form(known_client_fields(shop, address=f"obyte:{address}"))

    assert response.status_code == 201, response.content
    assert dropin.json()["result"] == "ok", dropin.content
    assert set(Purchase.objects.values_list("address", flat=True)) == {address}


def test_a_long_email_address_is_a_drop_in_error(shop: Any, upstream: Any) -> None:
    response = post_form(known_client_fields(shop, address=_email(255)))

    assert response.json() == {
        "result": "error",
        "error": "address: Ensure this field has no more than 254 characters.",
    }
    assert_nothing_stored(upstream)


# --- Control characters ------------------------------------------------------------------

CONTROL = "Must not contain control characters."
CONTROL_INPUTS = [
    ("customer", "c\x0142"),  # SOH
    ("customer", "\x1b[31mred"),  # ESC, a terminal colour
    ("customer", "bell\x07"),
    ("customer", "two\r\nlines"),
    ("customer", "tab\there"),
    ("customer", "\ud800"),  # a lone surrogate (JSON "\ud800")
    ("description", "coffee\x85"),  # C1 next line
    ("description", "coffee\u2028tea"),  # line separator
    ("description", "cof\u202efee"),  # right-to-left override
    ("description", "\ufeffcoffee"),  # byte order mark
    ("description", "cof\u200bfee"),  # zero-width space
    ("order_id", "A-1\x7f"),  # DEL
    ("order_id", "A\u20661"),  # left-to-right isolate
    ("address", f"obyte:\x0b{ADDRESS}"),  # (leading and trailing whitespace is trimmed)
    ("address", '"a\x01b"@example.com'),  # a quoted local part Django's email check allows
    ("address", "alice\u2029@example.com"),
]


@pytest.mark.parametrize(("field", "value"), CONTROL_INPUTS)
def test_a_control_character_in_any_text_field_is_400_naming_it(
    shop: Any, upstream: Any, field: str, value: str
) -> None:
    raw = json.dumps(purchase_body(**{field: value}))  # \ud800 travels escaped, as JSON can
    response = shop.client.generic("POST", "/api/v1/purchases", raw, "application/json")

    assert response.status_code == 400, response.content
    body = response.json()
    assert body["detail"] == f"{field}: {CONTROL}"
    # DRF adds its own message for a lone surrogate; ours comes first.
    assert body[field][0] == CONTROL
    assert set(body) == {"detail", field}
    assert_nothing_stored(upstream)


@pytest.mark.parametrize(("field", "value"), CONTROL_INPUTS)
def test_a_control_character_in_any_text_field_is_a_drop_in_error(
    shop: Any, upstream: Any, field: str, value: str
) -> None:
    response = post_json(json.dumps(known_client_fields(shop, **{field: value})))

    assert response.status_code == 200
    assert response.json() == {"result": "error", "error": f"{field}: {CONTROL}"}
    assert_nothing_stored(upstream)


def test_a_control_character_in_the_purchase_unit_is_refused(shop: Any, upstream: Any) -> None:
    response = shop.post_purchase(currency="GBYTE", purchase_unit=UNIT[:-2] + "\x01=")

    assert response.status_code == 400
    assert response.json()["purchase_unit"] == [CONTROL]
    assert_nothing_stored(upstream)


def test_a_control_character_in_a_form_field_is_a_drop_in_error(shop: Any, upstream: Any) -> None:
    response = post_form(known_client_fields(shop, customer="c\x1b42"))

    assert response.json() == {"result": "error", "error": f"customer: {CONTROL}"}
    assert_nothing_stored(upstream)


@pytest.mark.parametrize(
    "description",
    ["Kaffee für zwei", "👨\u200d👩\u200d👧 family menu", "می\u200cخواهم", "東京 ☕", "a b"],
)
def test_ordinary_text_with_joiners_and_any_script_is_accepted(
    shop: Any, upstream: Any, description: str
) -> None:
    response = shop.post_purchase(description=description)

    assert response.status_code == 201, response.content
    assert Purchase.objects.get().description == description


# --- Admin and commands --------------------------------------------------------------------


@pytest.fixture
def admin_client_plain(admin_client: Client, plain_static: None, settings: Any) -> Client:
    return admin_client


def _mark_sent(client: Client, purchase: Purchase, amount: str) -> Any:
    return client.post(
        "/admin/cashback/purchase/",
        {
            "action": "mark_sent",
            "_selected_action": [str(purchase.pk)],
            "apply": "1",
            "cashback_amount": amount,
            "unit": UNIT,
        },
    )


def test_admin_mark_sent_refuses_an_amount_beyond_64_bits(
    admin_client_plain: Client, shop: Any
) -> None:
    purchase = make_purchase(shop.merchant, "A-1")

    refused = _mark_sent(admin_client_plain, purchase, str(2**63))
    accepted = _mark_sent(admin_client_plain, purchase, str(2**63 - 1))

    assert refused.status_code == 200
    assert refused.context["form"].errors["cashback_amount"] == [
        "Ensure this value is less than or equal to 9223372036854775807."
    ]
    assert accepted.status_code == 302
    purchase.refresh_from_db()
    assert (purchase.status, purchase.cashback_amount) == ("sent", 2**63 - 1)
    assert PurchaseAction.objects.count() == 1


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("99999999999999999", "amount: must be at most 92233720368547758.07 EUR"),
        ("1e30", "amount: must have at most 18 digits in all"),
        ("1E+999999999", "amount '1E+999999999' is out of range."),
        ("NaN", "amount 'NaN' must be a finite decimal number."),
        ("Infinity", "amount 'Infinity' must be a finite decimal number."),
        ("twelve", "amount 'twelve' must be a decimal number."),
    ],
)
def test_record_deposit_refuses_amounts_it_cannot_store_with_a_clear_error(
    shop: Any, amount: str, message: str
) -> None:
    with pytest.raises(CommandError) as refused:
        call_command("record_deposit", shop.merchant.public_id, amount, "EUR", stdout=io.StringIO())

    assert str(refused.value) == message
    assert LedgerEntry.objects.count() == 0


def test_record_deposit_refuses_a_memo_longer_than_its_column(shop: Any) -> None:
    with pytest.raises(CommandError) as refused:
        call_command("record_deposit", shop.merchant.public_id, "1", "EUR", "--memo", "m" * 501)

    assert str(refused.value) == "--memo has 501 characters; at most 500."
    assert LedgerEntry.objects.count() == 0


def test_a_deposit_that_would_overflow_the_balance_is_refused_and_records_nothing(
    shop: Any,
) -> None:
    most = "999999999.999999999"  # the largest GBYTE amount of 18 digits
    for _ in range(9):  # 8,999,999,999,999,999,991 bytes: still fits 64 bits
        call_command("record_deposit", shop.merchant.public_id, most, "GBYTE", stdout=io.StringIO())

    with pytest.raises(CommandError) as refused:
        call_command("record_deposit", shop.merchant.public_id, most, "GBYTE", stdout=io.StringIO())

    assert str(refused.value) == (
        "amount: the available balance is 8999999999.999999991 GBYTE, and it can hold at most "
        "9223372036.854775807 GBYTE."
    )
    assert LedgerEntry.objects.count() == 9
