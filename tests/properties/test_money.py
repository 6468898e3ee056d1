"""Properties of amounts: parsing, precision, minor units, plain formatting, percentages."""

from __future__ import annotations

import json
from decimal import ROUND_CEILING, Decimal, localcontext

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.money import (
    MAX_DIGITS,
    PRECISION,
    AmountError,
    check_amount,
    decimal_places,
    format_plain,
    from_minor,
    parse_decimal,
    partner_cost_minor,
    quantum,
    to_minor,
)

currencies = st.sampled_from(sorted(PRECISION))
# Every amount the gateway can hold: 1 minor unit up to 18 digits in all.
minor_amounts = st.integers(min_value=1, max_value=10**MAX_DIGITS - 1)
finite_decimals = st.decimals(allow_nan=False, allow_infinity=False)
# Percentages with at most two decimals, 0 to 100.
percentages = st.integers(min_value=0, max_value=10_000).map(lambda h: Decimal(h).scaleb(-2))


@given(currencies, minor_amounts)
def test_minor_units_round_trip_through_every_written_form(currency: str, minor: int) -> None:
    amount = from_minor(minor, currency)
    plain = format_plain(amount)

    check_amount(amount, currency)
    assert to_minor(amount, currency) == minor
    assert parse_decimal(plain) == amount
    assert to_minor(parse_decimal(plain), currency) == minor
    # A JSON number goes through Decimal too, never float.
    number = json.loads(plain, parse_float=Decimal, parse_int=Decimal)
    assert to_minor(parse_decimal(number), currency) == minor


@given(currencies, minor_amounts, st.integers(min_value=1, max_value=6))
def test_one_place_too_many_is_refused_with_the_currencys_message(
    currency: str, minor: int, extra: int
) -> None:
    places = PRECISION[currency]
    # A non-zero digit beyond the currency's last place.
    amount = from_minor(minor, currency) + Decimal(7).scaleb(-(places + extra))

    with pytest.raises(AmountError) as exc:
        check_amount(amount, currency)

    if len(str(minor)) + extra <= MAX_DIGITS:
        assert str(exc.value) == f"{currency} amounts have at most {places} decimal places"


@given(finite_decimals)
def test_format_plain_never_uses_an_exponent_and_parses_back(value: Decimal) -> None:
    plain = format_plain(value)

    assert "e" not in plain.lower()
    assert Decimal(plain) == value
    assert plain == "0" or not plain.endswith("0") or "." not in plain


# Decimal-looking text, and numbers with exponents far beyond the decimal context's limits.
decimal_texts = st.from_regex(r"-?\d{0,25}(\.\d{0,25})?([eE][-+]?\d{1,12})?", fullmatch=True)
scientific = st.tuples(st.integers(-(10**20), 10**20), st.integers(-(10**10), 10**10)).map(
    lambda t: f"{t[0]}E{t[1]:+d}"
)


@given(st.one_of(st.text(max_size=30), decimal_texts, scientific))
def test_any_text_parses_to_an_exact_amount_or_a_clean_error(text: str) -> None:
    # Nothing but AmountError may escape: an Overflow here was a 500 before.
    for currency in PRECISION:
        try:
            amount = parse_decimal(text)
            check_amount(amount, currency)
        except AmountError:
            continue
        minor = to_minor(amount, currency)
        assert minor >= 1
        assert from_minor(minor, currency) == amount
        assert decimal_places(amount) <= PRECISION[currency]


@given(currencies, minor_amounts, percentages)
def test_the_partner_cost_is_the_exact_cost_rounded_up_to_the_currency(
    currency: str, minor: int, percent: Decimal
) -> None:
    cost = from_minor(partner_cost_minor(minor, percent), currency)

    with localcontext() as ctx:
        ctx.prec = 60  # exact for 18 digits times 5 digits
        exact = from_minor(minor, currency) * percent / 100
        expected = exact.quantize(quantum(currency), rounding=ROUND_CEILING)
        assert cost == expected
        assert cost >= exact
        assert cost - exact < quantum(currency)
