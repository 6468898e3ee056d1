"""HTML of amounts, bytes and times for the back office, all through gateway.money."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from gateway.money import bytes_to_gbyte, format_count, format_money, format_percent

EMPTY = "–"


def amount(value: Decimal | int | None, currency: str, *, minor: bool = False) -> SafeString:
    """Return `<span class="amount">7,499.95 <span class="cur">EUR</span></span>`."""
    if value is None:
        return format_html("{}", EMPTY)
    return format_html(
        '<span class="amount">{}\u00a0<span class="cur">{}</span></span>',
        format_money(value, currency, minor=minor),
        currency,
    )


def amounts(pairs: list[tuple[str, Decimal]]) -> SafeString:
    """Return several amounts (currency, value), one per line."""
    if not pairs:
        return format_html("{}", EMPTY)
    parts = [amount(v, c) for c, v in pairs]
    return format_html("{}", SafeString("<br>".join(parts)))


def byte_amount(n: int | None) -> SafeString:
    """Return bytes with their GBYTE beside them: "7,499,950,000 bytes (7.499950000 GBYTE)"."""
    if n is None:
        return format_html("{}", EMPTY)
    return format_html(
        '<span class="amount">{}\u00a0<span class="cur">bytes</span></span>'
        ' <span class="amount quiet">({}\u00a0<span class="cur">GBYTE</span>)</span>',
        format_count(n),
        format_money(bytes_to_gbyte(n), "GBYTE"),
    )


def gbyte_amount(n: int | None) -> SafeString:
    """Return bytes as GBYTE, with the bytes in the tooltip."""
    if n is None:
        return format_html("{}", EMPTY)
    return format_html(
        '<span class="amount" title="{} bytes">{}\u00a0<span class="cur">GBYTE</span></span>',
        format_count(n),
        format_money(bytes_to_gbyte(n), "GBYTE"),
    )


def percent(p: Decimal | None) -> str:
    return EMPTY if p is None else f"{format_percent(p)} %"


def moment(value: datetime | None) -> str:
    """Return a time with seconds and its zone, in the server's zone: "2026-11-01 09:00:00 UTC"."""
    if value is None:
        return EMPTY
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z")
