"""Currencies, their precision, and the only rounding rules of the gateway.

Amounts are stored as integer minor units of their currency (cents, satoshis, bytes), so
that sums in SQL are exact on every database. Everything that turns a `Decimal` into minor
units or back, or rounds, lives here.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from fractions import Fraction

from django.db import models

# Upstream limits amounts to 18 significant digits in all; so do we.
MAX_DIGITS = 18
# Amounts are stored as signed 64-bit integers of minor units (BigIntegerField): 18 digits
# of EUR cents fit, but 99999999999999999.99 EUR (1.0e19 cents) or 10^10 GBYTE do not.
MAX_MINOR = 2**63 - 1
# Decimal exponents parse_decimal accepts (10^±100), far beyond any real amount.
MAX_ADJUSTED_EXPONENT = 100


class Currency(models.TextChoices):
    USD = "USD", "US dollar"
    EUR = "EUR", "Euro"
    RUR = "RUR", "Russian rouble"
    GBYTE = "GBYTE", "GBYTE"
    BTC = "BTC", "Bitcoin"


# Decimal places of each currency. GBYTE's minor unit is the byte (1 GBYTE = 10^9 bytes).
PRECISION: dict[str, int] = {
    Currency.USD: 2,
    Currency.EUR: 2,
    Currency.RUR: 2,
    Currency.BTC: 8,
    Currency.GBYTE: 9,
}

# Currencies a merchant may sell in that upstream does not take: ISO 4217 codes the ECB
# publishes a reference rate for, with their ISO 4217 minor units. A purchase in one of them
# is converted into the merchant's settlement currency (cashback/fx.py).
FOREIGN_PRECISION: dict[str, int] = {
    "AUD": 2, "BGN": 2, "BRL": 2, "CAD": 2, "CHF": 2, "CNY": 2, "CZK": 2, "DKK": 2,
    "GBP": 2, "HKD": 2, "HUF": 2, "IDR": 2, "ILS": 2, "INR": 2, "ISK": 0,
    "JPY": 0, "KRW": 0, "MXN": 2, "MYR": 2, "NOK": 2, "NZD": 2, "PHP": 2, "PLN": 2,
    "RON": 2, "RUB": 2, "SEK": 2, "SGD": 2, "THB": 2, "TRY": 2, "ZAR": 2,
}  # fmt: skip
PRECISION.update(FOREIGN_PRECISION)
# What a merchant's converted purchases settle in (upstream accepts both).
SETTLEMENT_CURRENCIES = (Currency.EUR, Currency.USD)
# The ECB publishes rates as units of a currency per 1 EUR.
RATE_BASE = Currency.EUR

# Percentages have at most two decimals: 5.25 % is stored as 525 hundredths of a percent.
PERCENT_PLACES = 2
BYTES_PER_GBYTE = 10**9


class AmountError(ValueError):
    """An amount that cannot be represented exactly in its currency."""


def quantum(currency: str) -> Decimal:
    """Return the smallest amount of `currency`, e.g. Decimal("0.01")."""
    return Decimal(1).scaleb(-PRECISION[currency])


def parse_decimal(value: object) -> Decimal:
    """Parse a JSON number or string into a finite `Decimal`, never through float."""
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise AmountError("must be a decimal number")
    try:
        d = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
    except InvalidOperation:
        raise AmountError("must be a decimal number") from None
    if not d.is_finite():
        raise AmountError("must be a finite decimal number")
    # "1E+100000000" overflows the decimal context (a 500) and "1E-100000000" underflows to
    # zero minor units; no amount or percentage is anywhere near these magnitudes.
    if abs(d.adjusted()) > MAX_ADJUSTED_EXPONENT:
        raise AmountError("is out of range")
    return d


def decimal_places(d: Decimal) -> int:
    """Return how many decimal places `d` really needs ("12.50" needs 1, "100" needs 0)."""
    exponent = d.normalize().as_tuple().exponent
    assert isinstance(exponent, int)  # finite numbers only
    return max(0, -exponent)


def significant_digits(d: Decimal) -> int:
    """Return the digits of `d` written plainly without leading or trailing zeros."""
    n = d.normalize()
    _, digits, exponent = n.as_tuple()
    assert isinstance(exponent, int)
    integer_digits = max(len(digits) + exponent, 0)
    fraction_digits = max(-exponent, 0)
    return max(integer_digits + fraction_digits, 1) if n else 1


def check_amount(d: Decimal, currency: str) -> None:
    """Raise AmountError unless `d` is a positive amount exact in `currency`."""
    places = PRECISION[currency]
    if d <= 0:
        raise AmountError("must be greater than 0")
    if decimal_places(d) > places:
        raise AmountError(f"{currency} amounts have at most {places} decimal places")
    if significant_digits(d) > MAX_DIGITS:
        raise AmountError(f"must have at most {MAX_DIGITS} digits in all")
    if d.scaleb(places) > MAX_MINOR:
        raise AmountError(f"must be at most {max_amount(currency)} {currency}")


def max_amount(currency: str) -> str:
    """Return the largest amount of `currency` that fits the stored minor units, as text."""
    return format_minor(MAX_MINOR, currency)


def check_minor(minor: int, what: str = "amount") -> None:
    """Raise AmountError unless `minor` fits the stored 64-bit minor units."""
    if not -MAX_MINOR <= minor <= MAX_MINOR:
        raise AmountError(f"{what} must be at most {MAX_MINOR}")


def to_minor(d: Decimal, currency: str) -> int:
    """Return `d` in minor units of `currency`; it must already be exact at that precision."""
    scaled = d.scaleb(PRECISION[currency])
    if scaled != scaled.to_integral_value():
        raise AmountError(f"{d} is not exact in {currency}")
    return int(scaled)


def from_minor(minor: int, currency: str) -> Decimal:
    """Return minor units of `currency` as a Decimal with the currency's decimal places."""
    return Decimal(minor).scaleb(-PRECISION[currency]).quantize(quantum(currency))


def format_minor(minor: int, currency: str) -> str:
    """Return minor units as the text of `from_minor` ("12.50"), with integers only (fast)."""
    places = PRECISION[currency]
    whole, part = divmod(abs(minor), 10**places)
    text = f"{whole}.{part:0{places}d}" if places else str(whole)
    return "-" + text if minor < 0 else text


def format_plain(d: Decimal) -> str:
    """Return `d` as a plain decimal string, never in exponent notation ("1E-9")."""
    s = format(d, "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s or "0"


def percent_to_hundredths(p: Decimal) -> int:
    """Return a percentage with at most two decimals as an integer of hundredths."""
    scaled = p.scaleb(PERCENT_PLACES)
    if scaled != scaled.to_integral_value():
        raise AmountError(f"percentages have at most {PERCENT_PLACES} decimal places")
    return int(scaled)


def partner_cost_minor(amount_minor: int, percent: Decimal) -> int:
    """Return `amount × percent / 100` in minor units, rounded up (never short-fund)."""
    hundredths = percent_to_hundredths(percent)
    # ceil(a * h / 10000) with integers only: exact at any size.
    return -((-amount_minor * hundredths) // 10_000)


def bytes_to_gbyte(amount: int) -> Decimal:
    """Return an amount of bytes in GBYTE, exactly."""
    return from_minor(amount, Currency.GBYTE)


# --- Amounts for people to read (admin pages) ------------------------------------------------


def format_money(amount: Decimal | int, currency: str, *, minor: bool = False) -> str:
    """Return an amount for people: the currency's decimals, thousands separators, never an
    exponent ("7,499.95", "0.00000000", not "0E-8"). `minor`: `amount` is in minor units.

    The one formatter of every amount the back office shows.
    """
    value = from_minor(int(amount), currency) if minor else Decimal(amount)
    # Never hide a digit: an amount finer than its currency (none should be) keeps them all.
    places = max(PRECISION[currency], decimal_places(value)) if value.is_finite() else 0
    return f"{value:,.{places}f}"


def format_count(n: int) -> str:
    """Return a whole number with thousands separators ("7,499,950,000")."""
    return f"{n:,}"


def format_percent(p: Decimal) -> str:
    """Return a percentage with its two decimals, the same everywhere ("1.50")."""
    return f"{Decimal(p):.{PERCENT_PLACES}f}"


def is_upstream_currency(currency: str) -> bool:
    """Return whether upstream takes `currency` as it is (USD, EUR, RUR, GBYTE, BTC)."""
    return currency in Currency.values


def convert(amount: Decimal, rate_from: Decimal, rate_to: Decimal, currency_to: str) -> Decimal:
    """Return `amount` converted at rates per EUR, rounded once, half-even, to `currency_to`.

    `rate_from` and `rate_to` are units of the source and target currency per 1 EUR (as the
    ECB publishes them; 1 for EUR itself), so amount_in_EUR = amount / rate_from and the
    result is amount × rate_to / rate_from. That is computed as an exact fraction, and only
    the final result is rounded: no intermediate EUR amount, no float, no context precision.
    """
    for value in (amount, rate_from, rate_to):
        if not isinstance(value, Decimal) or not value.is_finite():
            raise TypeError("convert() takes finite Decimals only")
    if rate_from <= 0 or rate_to <= 0:
        raise AmountError("rates must be positive")
    exact = Fraction(amount) * Fraction(rate_to) / Fraction(rate_from)
    places = PRECISION[currency_to]
    # round() of a Fraction rounds half to even, exactly.
    minor = round(exact * 10**places)
    return from_minor(minor, currency_to)


def round_minor_up(minor: Fraction, currency: str) -> Decimal:
    """Return a fraction of minor units as an amount of `currency`, rounded up."""
    return from_minor(-(-minor.numerator // minor.denominator), currency)
