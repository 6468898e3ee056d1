"""Properties of currency conversion (gateway.money.convert): exact, half-even, monotonic."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.money import (
    FOREIGN_PRECISION,
    SETTLEMENT_CURRENCIES,
    AmountError,
    convert,
    from_minor,
    quantum,
    to_minor,
)

foreign = st.sampled_from(sorted(FOREIGN_PRECISION))
settlement = st.sampled_from(sorted(SETTLEMENT_CURRENCIES))
# ECB rates: 1 to 6 significant digits, from 0.0001 to 99999.
rates = st.builds(
    lambda digits, exp: Decimal(digits).scaleb(exp),
    st.integers(min_value=1, max_value=999_999),
    st.integers(min_value=-8, max_value=-1),
)
minor_amounts = st.integers(min_value=1, max_value=10**15)


def exact(amount: Decimal, rate_from: Decimal, rate_to: Decimal) -> Fraction:
    return Fraction(amount) * Fraction(rate_to) / Fraction(rate_from)


@given(foreign, settlement, minor_amounts, rates, rates)
def test_the_result_is_the_exact_value_rounded_once_half_even(
    source: str, target: str, minor: int, rate_from: Decimal, rate_to: Decimal
) -> None:
    amount = from_minor(minor, source)
    result = convert(amount, rate_from, rate_to, target)

    assert isinstance(result, Decimal)
    assert result == result.quantize(quantum(target))
    error = Fraction(result) - exact(amount, rate_from, rate_to)
    half = Fraction(quantum(target)) / 2
    assert abs(error) <= half
    if abs(error) == half:  # a tie goes to the even last digit
        assert to_minor(result, target) % 2 == 0
    # The same as Decimal's own half-even at a precision wide enough to be exact here.
    with localcontext(prec=100):
        assert result == (amount * rate_to / rate_from).quantize(
            quantum(target), rounding=ROUND_HALF_EVEN
        )


@given(foreign, settlement, minor_amounts, minor_amounts, rates, rates)
def test_conversion_is_monotonic(
    source: str, target: str, a: int, b: int, rate_from: Decimal, rate_to: Decimal
) -> None:
    low, high = sorted((a, b))
    assert convert(from_minor(low, source), rate_from, rate_to, target) <= convert(
        from_minor(high, source), rate_from, rate_to, target
    )


@given(foreign, settlement, minor_amounts, rates)
def test_a_round_trip_comes_back_within_the_two_roundings(
    source: str, target: str, minor: int, rate: Decimal
) -> None:
    # X → EUR at rate, then EUR → X at the same rate: off by at most half a unit of X plus
    # half a cent of EUR carried back at the rate.
    amount = from_minor(minor, source)
    eur = convert(amount, rate, Decimal(1), "EUR")
    back = convert(eur, Decimal(1), rate, source)
    bound = Fraction(quantum(source)) / 2 + Fraction(quantum("EUR")) / 2 * Fraction(rate)
    assert abs(Fraction(back) - Fraction(amount)) <= bound


@given(settlement, minor_amounts, rates)
def test_the_same_rate_on_both_sides_is_the_identity(
    target: str, minor: int, rate: Decimal
) -> None:
    amount = from_minor(minor, target)
    assert convert(amount, rate, rate, target) == amount


@given(st.floats(allow_nan=False, allow_infinity=False, min_value=0.01, max_value=1e6))
def test_a_float_is_never_accepted(value: float) -> None:
    with pytest.raises(TypeError):
        convert(value, Decimal("0.8338"), Decimal(1), "EUR")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        convert(Decimal("12.50"), value, Decimal(1), "EUR")  # type: ignore[arg-type]


def test_exact_ties_round_half_even() -> None:
    assert convert(Decimal("0.25"), Decimal(2), Decimal(1), "EUR") == Decimal("0.12")
    assert convert(Decimal("0.75"), Decimal(2), Decimal(1), "EUR") == Decimal("0.38")
    assert convert(Decimal("12.50"), Decimal("0.8000"), Decimal(1), "EUR") == Decimal("15.62")


def test_the_worked_example_of_docs_currencies() -> None:
    assert convert(Decimal("12.50"), Decimal("0.8338"), Decimal(1), "EUR") == Decimal("14.99")
    assert convert(Decimal("12.50"), Decimal("0.8338"), Decimal("1.1172"), "USD") == Decimal(
        "16.75"
    )


def test_a_zero_or_negative_rate_is_refused() -> None:
    with pytest.raises(AmountError):
        convert(Decimal("1"), Decimal(0), Decimal(1), "EUR")
    with pytest.raises(AmountError):
        convert(Decimal("1"), Decimal(1), Decimal("-1"), "EUR")
