"""The purchase POST's fast paths decide exactly what the general code decides.

The fast validation decides exactly what the serializer decides.

`fast_input` takes the ordinary valid bodies without the serializer and gives up (None) on
everything else, which the serializer then answers. So wherever it returns an input, the
serializer must accept the body and make the same input; and it must really take the
ordinary bodies, or the hot path would never use it.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cashback.client import form_encode
from cashback.serializers import PurchaseRequestSerializer, fast_input
from cashback.services import PurchaseInput
from tests.conftest import ADDRESS, purchase_body

UNIT = "2pAWjQ/aBFPVhMJvmEaUJu4xYQM2AifS4OCofFEXbb4="


def serializer_input(body: Any) -> PurchaseInput | None:
    serializer = PurchaseRequestSerializer(data=body)
    return serializer.to_input() if serializer.is_valid() else None


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"description": ""},
        {"description": None},  # removed: absent means empty
        {"description": "café ☕ au lait"},
        {"customer": "  spaced  "},
        {"address": f"obyte:{ADDRESS}"},
        {"address": "shop@example.com"},
        {"currency_amount": 12},
        {"currency_amount": Decimal("12.5")},
        {"currency_amount": " 12.50 "},
        {"currency": "JPY", "currency_amount": "1200"},
        {"currency": "GBYTE", "currency_amount": "0.000000001"},
        {"partner_cashback_percentage": "2.5"},
        {"partner_cashback_percentage": Decimal("100")},
        {"partner_cashback_percentage": 0},
        {"unknown_field": "ignored"},
    ],
)
def test_ordinary_bodies_take_the_fast_path_with_the_serializers_input(
    overrides: dict[str, Any],
) -> None:
    body = purchase_body(**overrides)
    fast = fast_input(body)
    assert fast is not None
    assert fast == serializer_input(body)


@pytest.mark.parametrize(
    "body",
    [
        [],
        "text",
        purchase_body(customer=""),
        purchase_body(customer=42),  # the serializer takes numbers as text: its answer
        purchase_body(customer="tab\there"),
        purchase_body(order_id="x" * 200),
        purchase_body(description=["list"]),
        {**purchase_body(), "description": None},
        purchase_body(address=f" {ADDRESS}"),
        purchase_body(address=ADDRESS.lower()),
        purchase_body(address="not an address"),
        purchase_body(currency="eur"),
        purchase_body(currency=" EUR"),
        purchase_body(currency="XYZ"),
        purchase_body(currency_amount="0"),
        purchase_body(currency_amount="12.505"),
        purchase_body(currency_amount="1e400"),
        purchase_body(currency_amount="NaN"),
        purchase_body(currency_amount=True),
        {k: v for k, v in purchase_body().items() if k != "currency_amount"},
        {**purchase_body(), "currency_amount": None},
        purchase_body(partner_cashback_percentage="100.01"),
        purchase_body(partner_cashback_percentage="-1"),
        purchase_body(partner_cashback_percentage="2.555"),
        purchase_body(currency="GBYTE", currency_amount="1", purchase_unit=UNIT),
        purchase_body(purchase_unit=UNIT),
    ],
)
def test_anything_else_is_left_to_the_serializer(body: Any) -> None:
    assert fast_input(body) is None


texts = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", " ", "c-42", "A-1001", "x" * 100, "x" * 101, "a\u202eb", "\x00"]),
    st.integers(),
    st.none(),
    st.booleans(),
)
addresses = st.one_of(
    st.sampled_from(
        [ADDRESS, ADDRESS.lower(), f"byteball:{ADDRESS}", f" {ADDRESS} ", "a@b.example", "@"]
    ),
    texts,
)
amounts = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True),
    st.decimals(min_value=Decimal("-1"), max_value=Decimal("1e20")),
    st.integers(min_value=-5, max_value=10**20),
    st.sampled_from(["12.50", " 1 ", "1e3", "0.001", "-1", "1E-100000000", "", "x"]),
    st.none(),
    st.booleans(),
)


ABSENT = object()
values = {
    "customer": texts,
    "order_id": texts,
    "description": texts,
    "address": addresses,
    "currency": st.one_of(st.sampled_from(["USD", "JPY", "GBYTE", "BTC", " EUR"]), texts),
    "currency_amount": amounts,
    "partner_cashback_percentage": st.one_of(st.sampled_from(["0", "2.50", 100]), amounts),
    "purchase_unit": st.one_of(st.just(UNIT), texts),
}
changes = st.one_of(
    *(
        st.tuples(st.just(name), st.one_of(st.just(ABSENT), strategy))
        for name, strategy in values.items()
    )
)


def changed(body: dict[str, Any], edits: list[tuple[str, Any]]) -> dict[str, Any]:
    for name, value in edits:
        if value is ABSENT:
            body.pop(name, None)
        else:
            body[name] = value
    return body


# A valid body with up to three fields changed (to anything) or removed: valid bodies,
# nearly valid ones and garbage.
bodies = st.builds(changed, st.builds(purchase_body), st.lists(changes, max_size=3))


@settings(max_examples=1000, deadline=None)
@given(bodies)
def test_the_fast_path_never_decides_otherwise_than_the_serializer(body: dict[str, Any]) -> None:
    fast = fast_input(body)
    if fast is not None:
        assert fast == serializer_input(body)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["customer", "order_id", "a b", "é"]), st.text()))
def test_the_upstream_form_encoding_is_urlencodes(fields: dict[str, str]) -> None:
    assert form_encode(fields) == urlencode(fields)
