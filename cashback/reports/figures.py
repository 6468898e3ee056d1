"""The payouts dashboard's figures: per merchant and currency, totals, and the chart."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import Count, Sum
from django.db.models.functions import TruncDate

from cashback.models import Status
from cashback.reports.columns import status_counts
from cashback.reports.periods import Period, ReportFilter
from gateway.money import Currency, bytes_to_gbyte, from_minor
from merchants.models import Balance, Merchant

# A chart with more days than this shows months instead, so it stays readable and small.
MAX_DAILY_BARS = 92


@dataclass
class Figures:
    """Counts and amounts of a set of purchases; amounts per currency in minor units."""

    purchases: int = 0
    sent: int = 0
    rejected: int = 0
    pending_unknown: int = 0
    queued_sending: int = 0
    failed: int = 0
    cashback_bytes: int = 0
    volume: dict[str, int] = field(default_factory=dict)
    funded: dict[str, int] = field(default_factory=dict)

    def add(self, row: dict[str, Any]) -> None:
        """Add one merchant-and-currency group of `status_counts` (None sums are zero)."""
        for name in ("purchases", "sent", "rejected", "pending_unknown", "queued_sending"):
            setattr(self, name, getattr(self, name) + row[name])
        self.failed += row["failed"]
        self.cashback_bytes += row["cashback"] or 0
        cur = row["currency"]
        self.volume[cur] = self.volume.get(cur, 0) + (row["volume"] or 0)
        self.funded[cur] = self.funded.get(cur, 0) + (row["funded"] or 0)

    @property
    def cashback_gbyte(self) -> Decimal:
        return bytes_to_gbyte(self.cashback_bytes)

    def volume_amounts(self) -> list[tuple[str, Decimal]]:
        return _amounts(self.volume)

    def funded_amounts(self) -> list[tuple[str, Decimal]]:
        return _amounts(self.funded)


_CURRENCY_ORDER = list(Currency.values)


def _amounts(minor_by_currency: dict[str, int]) -> list[tuple[str, Decimal]]:
    return [
        (c, from_minor(minor_by_currency[c], c)) for c in _CURRENCY_ORDER if c in minor_by_currency
    ]


@dataclass
class MerchantRow:
    merchant: Merchant
    figures: Figures
    # Current balances per currency, in minor units: (available, reserved).
    balances: dict[str, tuple[int, int]] = field(default_factory=dict)

    def balance_amounts(self) -> list[tuple[str, Decimal, Decimal]]:
        return _balance_amounts(self.balances)


def _balance_amounts(balances: dict[str, tuple[int, int]]) -> list[tuple[str, Decimal, Decimal]]:
    """Return (currency, available, reserved) in the usual currency order."""
    return [
        (c, from_minor(balances[c][0], c), from_minor(balances[c][1], c))
        for c in _CURRENCY_ORDER
        if c in balances
    ]


@dataclass
class Dashboard:
    filter: ReportFilter
    rows: list[MerchantRow]
    totals: Figures
    total_balances: dict[str, tuple[int, int]]
    # (first day of the bar, cashback bytes), one bar per day or per month.
    chart: list[tuple[date, int]]
    chart_unit: str  # "day" or "month"
    # The bars split by the merchants that paid most (up to CHART_STACKS, then "others"):
    # (merchant or None for the others, bytes per bar in the order of `chart`).
    stacks: list[tuple[Merchant | None, list[int]]] = field(default_factory=list)
    # The same number of days just before the period, bar by bar, for comparison.
    previous: list[int] = field(default_factory=list)
    previous_period: Period | None = None
    # Converted purchases (docs/currencies.md): (settlement currency, currency sent, count,
    # amount sent, amount settled), so both sums can be read side by side.
    conversions: list[tuple[str, str, int, Decimal, Decimal]] = field(default_factory=list)

    def total_balance_amounts(self) -> list[tuple[str, Decimal, Decimal]]:
        return _balance_amounts(self.total_balances)


def dashboard(flt: ReportFilter, merchants: Iterable[Merchant]) -> Dashboard:
    """Return the dashboard's figures: one row per merchant with purchases in the period.

    Costs two queries whatever the number of merchants: one aggregate of purchases (grouped
    by merchant and currency, and by day for the chart, in one statement), and one of
    balances. `merchants` (already fetched for the page's merchant menu) names the rows.
    """
    by_id = {m.pk: m for m in merchants}
    measures = status_counts()
    groups = (
        flt.purchases()
        .annotate(day=TruncDate("created_at", tzinfo=flt.period.tz))
        .values("merchant_id", "currency", "day")
        .annotate(**measures)
        .order_by()
        .values_list("merchant_id", "currency", "day", *measures)
    )
    # A month of a thousand merchants is some 150,000 day groups. Rather than bring them all
    # to Python, the database sums them again twice in the same statement (the CTE is
    # computed once): per merchant and currency (kind 0) and per day (kind 1).
    inner, params = groups.query.sql_with_params()
    names = [f"m{i}" for i in range(len(measures))]
    sums_sql = ", ".join(f"SUM({n})" for n in names)
    # Only the ORM's own SQL and fixed names go into the text; the values stay parameters.
    sql = (
        f"WITH g (merchant_id, currency, day, {', '.join(names)}) AS ({inner}) "  # noqa: S608
        f"SELECT 0, merchant_id, currency, MIN(day), {sums_sql} FROM g "
        "GROUP BY merchant_id, currency "
        f"UNION ALL SELECT 1, MIN(merchant_id), MIN(currency), day, {sums_sql} FROM g "
        "GROUP BY day"
    )
    sums: dict[tuple[int, str], list[int]] = {}
    per_day: dict[date, int] = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for kind, merchant_id, currency, day, *values in cursor.fetchall():
            if kind == 0:
                sums[(merchant_id, currency)] = [int(v or 0) for v in values]
            elif values[-1]:
                # SQLite returns the day as text.
                day = day if isinstance(day, date) else date.fromisoformat(day)
                per_day[day] = int(values[-1])
    rows: dict[int, MerchantRow] = {}
    totals = Figures()
    for (merchant_id, currency), values in sums.items():
        row = rows.get(merchant_id)
        if row is None:
            row = rows[merchant_id] = MerchantRow(by_id[merchant_id], Figures())
        group: dict[str, Any] = dict(zip(measures, values, strict=True))
        group["currency"] = currency
        row.figures.add(group)
        totals.add(group)
    if flt.merchant is not None and flt.merchant.pk not in rows:
        rows[flt.merchant.pk] = MerchantRow(flt.merchant, Figures())

    balances = Balance.objects.values_list(
        "merchant_id", "currency", "available_minor", "reserved_minor"
    )
    if flt.merchant is not None:
        balances = balances.filter(merchant=flt.merchant)
    total_balances: dict[str, tuple[int, int]] = {}
    for merchant_id, currency, available, reserved in balances:
        row = rows.get(merchant_id)
        if row is None:
            continue
        row.balances[currency] = (available, reserved)
        a, r = total_balances.get(currency, (0, 0))
        total_balances[currency] = (a + available, r + reserved)

    chart, unit = _chart(flt.period, per_day)
    ordered = sorted(rows.values(), key=lambda r: (r.merchant.name.lower(), r.merchant.public_id))
    board = Dashboard(flt, ordered, totals, total_balances, chart, unit)
    board.stacks = _stacks(flt, rows, chart, unit)
    board.previous_period = previous = flt.period.previous()
    past, _ = _chart(previous, _sent_per_day(ReportFilter(previous, flt.merchant)))
    board.previous = [v for _, v in past][: len(chart)]
    board.conversions = _conversions(flt)
    return board


def _conversions(flt: ReportFilter) -> list[tuple[str, str, int, Decimal, Decimal]]:
    """Return the period's converted purchases summed per settlement and original currency."""
    groups = (
        flt.purchases()
        .filter(original_currency__isnull=False)
        .values("currency", "original_currency")
        .annotate(n=Count("pk"), sent=Sum("original_amount_minor"), settled=Sum("amount_minor"))
        .order_by("currency", "original_currency")
    )
    return [
        (
            g["currency"],
            g["original_currency"],
            g["n"],
            from_minor(g["sent"], g["original_currency"]),
            from_minor(g["settled"], g["currency"]),
        )
        for g in groups
    ]


# Merchants the chart shows apart; the rest are summed as "others".
CHART_STACKS = 5


def _sent_groups(flt: ReportFilter, merchant_ids: list[int] | None) -> dict[tuple[date, int], int]:
    """Return cashback bytes of sent purchases per (day, merchant); merchant 0 when not split."""
    qs = flt.purchases().filter(status=Status.SENT)
    keys = ["day"]
    if merchant_ids is not None:
        qs = qs.filter(merchant_id__in=merchant_ids)
        keys.append("merchant_id")
    grouped = (
        qs.annotate(day=TruncDate("created_at", tzinfo=flt.period.tz))
        .values(*keys)
        .annotate(total=Sum("cashback_amount"))
        .order_by()
    )
    out: dict[tuple[date, int], int] = {}
    for g in grouped:
        # SQLite returns the day as text.
        day = g["day"] if isinstance(g["day"], date) else date.fromisoformat(g["day"])
        out[(day, g.get("merchant_id", 0))] = int(g["total"] or 0)
    return out


def _sent_per_day(flt: ReportFilter) -> dict[date, int]:
    return {day: total for (day, _), total in _sent_groups(flt, None).items()}


def _stacks(
    flt: ReportFilter,
    rows: dict[int, MerchantRow],
    chart: list[tuple[date, int]],
    unit: str,
) -> list[tuple[Merchant | None, list[int]]]:
    """Split each bar by the merchants that paid most in the period (one query)."""
    paying = sorted(
        (r for r in rows.values() if r.figures.cashback_bytes),
        key=lambda r: (-r.figures.cashback_bytes, r.merchant.public_id),
    )
    top = paying[:CHART_STACKS]
    if not top:
        return []
    per = _sent_groups(flt, [r.merchant.pk for r in top])
    index = {d: i for i, (d, _) in enumerate(chart)}
    stacks: list[tuple[Merchant | None, list[int]]] = []
    for row in top:
        values = [0] * len(chart)
        for (day, merchant_id), total in per.items():
            if merchant_id == row.merchant.pk:
                bucket = day.replace(day=1) if unit == "month" else day
                values[index[bucket]] += total
        stacks.append((row.merchant, values))
    others = [total - sum(s[1][i] for s in stacks) for i, (_, total) in enumerate(chart)]
    if any(others):
        stacks.append((None, others))
    return stacks


def _chart(period: Period, per_day: dict[date, int]) -> tuple[list[tuple[date, int]], str]:
    days = (period.end - period.start).days + 1
    if days <= MAX_DAILY_BARS:
        return [(d, per_day.get(d, 0)) for d in period.days()], "day"
    months: dict[date, int] = {}
    month = period.start.replace(day=1)
    while month <= period.end:
        months[month] = 0
        month = (month + timedelta(days=32)).replace(day=1)
    for d, value in per_day.items():
        months[d.replace(day=1)] += value
    return list(months.items()), "month"


def percent_of(part: int, whole: int) -> int:
    """Return round-down `part / whole` in whole percent (integers only), for chart heights."""
    return 0 if whole <= 0 else part * 100 // whole
