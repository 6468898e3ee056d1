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


@register.filter
def attr_of(obj: object, name: str) -> object:
    """`{{ obj|attr_of:name }}`: an attribute or a dict's item, by a name held in a variable."""
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


@register.simple_tag
def needs_attention() -> list[dict[str, object]]:
    """Return the `unknown` and `pending` purchases' counts and oldest ages (one query).

    `unknown` waits for a person; `pending` for the worker's next retry: they are kept apart.
    """
    from django.db.models import Count, Min
    from django.urls import reverse
    from django.utils import timezone

    from cashback.models import Purchase, Status

    rows = {
        r["status"]: r
        for r in Purchase.objects.filter(status__in=[Status.UNKNOWN, Status.PENDING])
        .values("status")
        .annotate(n=Count("pk"), oldest=Min("created_at"))
        .order_by()
    }
    now = timezone.now()
    url = reverse("admin:cashback_purchase_changelist")
    out: list[dict[str, object]] = []
    for status, label, meaning in (
        (Status.UNKNOWN, "Unknown", "upstream's answer was lost: check and reconcile by hand"),
        (Status.PENDING, "Pending", "waiting for the worker's next attempt"),
    ):
        row = rows.get(status)
        oldest = row["oldest"] if row else None
        out.append(
            {
                "status": status.value,
                "label": label,
                "meaning": meaning,
                "count": row["n"] if row else 0,
                "oldest": oldest,
                "age": _age(now - oldest) if oldest else "",
                "url": f"{url}?status__exact={status.value}&o=8",
            }
        )
    return out


def _age(delta: object) -> str:
    """Return a rough age: "3 d 4 h", "2 h 5 min", "40 s"."""
    from datetime import timedelta

    assert isinstance(delta, timedelta)
    seconds = max(int(delta.total_seconds()), 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min"
    return f"{seconds} s"
