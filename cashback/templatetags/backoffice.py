"""Template filters of the back office: amounts, bytes and percentages via gateway.money."""

from __future__ import annotations

from decimal import Decimal

from django import template

from gateway.money import bytes_to_gbyte, format_count, format_money, format_percent

register = template.Library()


@register.filter
def money(amount: Decimal | int | None, currency: str) -> str:
    """`{{ amount|money:currency }}`: "7,499.95"; "–" for no amount."""
    if amount is None or amount == "":
        return "–"
    return format_money(amount, currency)


@register.filter
def count(n: int | None) -> str:
    """`{{ n|count }}`: "7,499,950,000"."""
    return "–" if n is None else format_count(int(n))


@register.filter
def gbyte(n: int | None) -> str:
    """`{{ bytes|gbyte }}`: bytes shown in GBYTE with all nine decimals."""
    return "–" if n is None else format_money(bytes_to_gbyte(int(n)), "GBYTE")


@register.filter
def percent(p: Decimal | None) -> str:
    """`{{ p|percent }}`: "1.50"."""
    return "–" if p is None else format_percent(p)
