"""Payout figures and reports: the one code path behind the dashboard, the admin downloads
and the `export_payouts` command.

A period is a range of calendar days in a named time zone, both ends inclusive; it selects
purchases by `created_at` from 00:00 of the first day up to (not including) 00:00 of the day
after the last. Amounts leave the database as integer minor units and become exact `Decimal`
values here (gateway.money); nothing goes through float.
"""

from __future__ import annotations

import csv
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import IO, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.db import connection
from django.db.models import CharField, Count, Q, QuerySet, Sum
from django.db.models.functions import Cast, TruncDate
from django.utils import timezone
from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

from cashback.models import Purchase, Status
from gateway.money import Currency, bytes_to_gbyte, format_minor, from_minor, significant_digits
from merchants.models import Balance, Merchant

# Rows per XLSX sheet, the header rows included (Excel's limit); tests lower it.
XLSX_MAX_ROWS = 1_048_576
# Rows fetched per round trip when streaming a report (a server-side cursor on PostgreSQL).
CHUNK_SIZE = 5000
# Years a period may start or end in; keeps date arithmetic far from datetime's limits.
MIN_YEAR, MAX_YEAR = 1970, 9998
# A chart with more days than this shows months instead, so it stays readable and small.
MAX_DAILY_BARS = 92

REPORTS = ("detail", "summary")
FORMATS = ("csv", "xlsx")

# A spreadsheet treats a text cell beginning with one of these as a formula (OWASP CSV
# injection); tab and carriage return are included because some programs strip them first.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# The same as a set of first characters; "" (an empty cell's first character) is not in it.
_FORMULA_CHARS = frozenset(_FORMULA_START)


class ReportError(ValueError):
    """Bad report parameters, with a message fit to show the user."""


# --- Periods ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """Calendar days `start`..`end` (both inclusive) in time zone `tz`."""

    start: date
    end: date
    tz: ZoneInfo

    @property
    def zone(self) -> str:
        return self.tz.key

    def bounds(self) -> tuple[datetime, datetime]:
        """Return the aware datetimes [first instant, first instant after the period)."""
        first = datetime.combine(self.start, time.min, tzinfo=self.tz)
        after = datetime.combine(self.end + timedelta(days=1), time.min, tzinfo=self.tz)
        return first, after

    def days(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range((self.end - self.start).days + 1)]

    def label(self) -> str:
        """Return e.g. "2026-11-01 to 2026-11-30 (Europe/Berlin)"."""
        return f"{self.start.isoformat()} to {self.end.isoformat()} ({self.zone})"


PRESETS = {
    "today": "Today",
    "yesterday": "Yesterday",
    "last7": "Last 7 days",
    "this_month": "This month",
    "last_month": "Last month",
    "custom": "Custom range",
}


def parse_zone(name: str | None) -> ZoneInfo:
    """Return the named IANA time zone (default settings.TIME_ZONE) or raise ReportError."""
    name = (name or "").strip() or settings.TIME_ZONE
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ReportError(
            f"Unknown time zone {name!r}; use an IANA name like Europe/Berlin."
        ) from None


def parse_day(value: str | None, what: str) -> date:
    """Return a YYYY-MM-DD date or raise ReportError naming `what`."""
    if not value:
        raise ReportError(f"{what}: enter a date as YYYY-MM-DD.")
    try:
        day = date.fromisoformat(value.strip())
    except ValueError:
        raise ReportError(f"{what}: {value!r} is not a date as YYYY-MM-DD.") from None
    if not MIN_YEAR <= day.year <= MAX_YEAR:
        raise ReportError(f"{what}: the year must be between {MIN_YEAR} and {MAX_YEAR}.")
    return day


def make_period(start: date, end: date, tz: ZoneInfo) -> Period:
    if end < start:
        raise ReportError("The end date is before the start date.")
    return Period(start, end, tz)


def preset_period(preset: str, tz: ZoneInfo, now: datetime | None = None) -> Period:
    """Return the period a preset names, relative to `now` (default: the current time) in `tz`."""
    today = (now or timezone.now()).astimezone(tz).date()
    if preset == "today":
        return Period(today, today, tz)
    if preset == "yesterday":
        return Period(today - timedelta(days=1), today - timedelta(days=1), tz)
    if preset == "last7":
        return Period(today - timedelta(days=6), today, tz)
    if preset == "this_month":
        return Period(today.replace(day=1), today, tz)
    if preset == "last_month":
        last = today.replace(day=1) - timedelta(days=1)
        return Period(last.replace(day=1), last, tz)
    raise ReportError(f"Unknown period {preset!r}; choose one of {', '.join(PRESETS)}.")


@dataclass(frozen=True)
class ReportFilter:
    """What a report or the dashboard covers: a period and optionally one merchant."""

    period: Period
    merchant: Merchant | None = None

    def purchases(self) -> QuerySet[Purchase]:
        first, after = self.period.bounds()
        qs = Purchase.objects.filter(created_at__gte=first, created_at__lt=after)
        if self.merchant is not None:
            qs = qs.filter(merchant=self.merchant)
        return qs

    def title(self, report: str) -> str:
        who = f"merchant {self.merchant.public_id}" if self.merchant else "all merchants"
        return f"Payout {report} report, {self.period.label()}, {who}"

    def filename(self, report: str, fmt: str) -> str:
        zone = re.sub(r"[^A-Za-z0-9_+-]", "-", self.period.zone)
        who = f"_{self.merchant.public_id}" if self.merchant else ""
        p = self.period
        return f"payouts-{report}_{p.start.isoformat()}_{p.end.isoformat()}_{zone}{who}.{fmt}"


def find_merchant(public_id: str | None) -> Merchant | None:
    """Return the merchant with this public id, None for no filter, or raise ReportError."""
    if not public_id:
        return None
    merchant = Merchant.objects.filter(public_id=public_id).first()
    if merchant is None:
        raise ReportError(f"No merchant with public id {public_id!r}.")
    return merchant


# --- Dashboard figures ----------------------------------------------------------------------


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
        """Add one merchant-and-currency group of `_status_counts` (None sums are zero)."""
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
_ZERO_TEXT = {c: format_minor(0, c) for c in _CURRENCY_ORDER}


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

    def total_balance_amounts(self) -> list[tuple[str, Decimal, Decimal]]:
        return _balance_amounts(self.total_balances)


def _status_counts() -> dict[str, Any]:
    sent = Q(status=Status.SENT)
    return {
        "purchases": Count("pk"),
        "sent": Count("pk", filter=sent),
        "rejected": Count("pk", filter=Q(status=Status.REJECTED)),
        "pending_unknown": Count("pk", filter=Q(status__in=[Status.PENDING, Status.UNKNOWN])),
        "queued_sending": Count("pk", filter=Q(status__in=[Status.QUEUED, Status.SENDING])),
        "failed": Count("pk", filter=Q(status=Status.FAILED)),
        "volume": Sum("amount_minor"),
        "sent_volume": Sum("amount_minor", filter=sent),
        # The partner-funded cost of a sent purchase is captured from the deposit.
        "funded": Sum("reserved_minor", filter=sent),
        "cashback": Sum("cashback_amount", filter=sent),
    }


def dashboard(flt: ReportFilter, merchants: Iterable[Merchant]) -> Dashboard:
    """Return the dashboard's figures: one row per merchant with purchases in the period.

    Costs two queries whatever the number of merchants: one aggregate of purchases (grouped
    by merchant and currency, and by day for the chart, in one statement), and one of
    balances. `merchants` (already fetched for the page's merchant menu) names the rows.
    """
    by_id = {m.pk: m for m in merchants}
    measures = _status_counts()
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
    return Dashboard(flt, ordered, totals, total_balances, chart, unit)


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


# --- Report rows ------------------------------------------------------------------------------

DETAIL_COLUMNS = [
    "created_at",
    "sent_at",
    "merchant_id",
    "merchant_name",
    "order_id",
    "customer",
    "status",
    "currency",
    "amount",
    "requested_percentage",
    "applied_percentage",
    "partner_funded",
    "cashback_bytes",
    "cashback_gbyte",
    "unit",
    "error",
]

SUMMARY_COLUMNS = [
    "merchant_id",
    "merchant_name",
    "currency",
    "purchases",
    "sent",
    "rejected",
    "pending_unknown",
    "queued_sending",
    "failed",
    "volume",
    "sent_volume",
    "partner_funded",
    "cashback_bytes",
    "cashback_gbyte",
]

# A report row: text (str), exact amounts (Decimal), counts and bytes (int), or empty (None).
Cell = str | Decimal | int | None


def columns(report: str) -> list[str]:
    return DETAIL_COLUMNS if report == "detail" else SUMMARY_COLUMNS


def _detail_records(flt: ReportFilter) -> Iterator[tuple[Any, ...]]:
    """Yield the raw columns of each purchase, oldest first, reading the database in chunks.

    The two times come as database text, not datetimes: Django's PostgreSQL loader for
    timestamptz is pure Python and costs more than the rest of the row; `_LocalTimes`
    formats them from the text instead (several times faster on a million rows).
    """
    text: Any = CharField()
    return (
        flt.purchases()
        .order_by("created_at", "id")
        .annotate(created_text=Cast("created_at", text), sent_text=Cast("sent_at", text))
        .values_list(
            "created_text",
            "sent_text",
            "merchant__public_id",
            "merchant__name",
            "order_id",
            "customer",
            "status",
            "currency",
            "amount_minor",
            "requested_percentage",
            "percentage",
            "reserved_minor",
            "cashback_amount",
            "unit",
            "error",
        )
        .iterator(chunk_size=CHUNK_SIZE)
    )


def detail_rows(flt: ReportFilter) -> Iterator[list[Cell]]:
    """Yield one row per purchase, oldest first: text, exact Decimal amounts, int bytes."""
    iso = _LocalTimes(flt.period.tz).iso
    sent = Status.SENT
    for (
        created,
        sent_at,
        public_id,
        name,
        order_id,
        customer,
        status,
        currency,
        amount_minor,
        requested,
        applied,
        reserved_minor,
        cashback,
        unit,
        error,
    ) in _detail_records(flt):
        yield [
            iso(created),
            None if sent_at is None else iso(sent_at),
            public_id,
            name,
            order_id,
            customer,
            status,
            currency,
            from_minor(amount_minor, currency),
            requested,
            applied,
            # Only a sent purchase's reservation was captured, i.e. paid by the merchant.
            from_minor(reserved_minor if status == sent else 0, currency),
            cashback,
            bytes_to_gbyte(cashback) if cashback is not None else None,
            unit,
            error,
        ]


class _LocalTimes:
    """Turn stored UTC times into ISO 8601 text in a zone, fast: the export's hot loop.

    `datetime` calls cost microseconds each, more than the rest of a row, so for each UTC
    hour whose offset in the zone is whole hours and the same at its start and its end,
    the local "YYYY-MM-DDTHH" and the offset are computed once and the minutes, seconds
    and fraction are copied from the stored text. Any other time takes `datetime`'s way.
    """

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz
        self.hours: dict[str, tuple[str, str] | None] = {}

    def iso(self, stored: str) -> str:
        # PostgreSQL (session in UTC) writes "2026-10-01 08:00:00.5+00", SQLite
        # "2026-10-01 08:00:00.500000"; the fraction is what lies between :SS and "+00".
        tail = stored[19:]
        fraction = tail[:-3] if tail[-3:] == "+00" else tail
        if fraction and not (fraction[0] == "." and fraction[1:].isdigit()):
            return self.slow(stored)
        hour = stored[:13]
        if hour in self.hours:
            cached = self.hours[hour]
        else:
            cached = self.hours[hour] = self._hour(hour)
        if cached is None:
            return self.slow(stored)
        if fraction:
            # isoformat() writes six digits, and none for a whole second.
            fraction = (fraction + "00000")[:7]
            if fraction == ".000000":
                fraction = ""
        return cached[0] + stored[13:19] + fraction + cached[1]

    def slow(self, stored: str) -> str:
        moment = datetime.fromisoformat(stored)
        if moment.tzinfo is None:
            # SQLite stores times in UTC without an offset.
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(self.tz).isoformat()

    def _hour(self, hour: str) -> tuple[str, str] | None:
        try:
            start = datetime.fromisoformat(hour + ":00:00+00:00")
        except ValueError:
            return None
        first = start.astimezone(self.tz)
        last = (start + timedelta(seconds=3599, microseconds=999_999)).astimezone(self.tz)
        offset = first.utcoffset()
        if offset is None or offset != last.utcoffset() or offset.total_seconds() % 3600:
            return None
        text = first.isoformat()  # "2026-10-01T10:00:00+02:00"
        return text[:13], text[19:]


def _detail_csv_rows(flt: ReportFilter) -> Iterator[list[str]]:
    """Yield `detail_rows` as CSV cells, formatted straight from the integers and text (the
    export's hot loop: a million rows should cost little more than the database's COPY)."""
    iso = _LocalTimes(flt.period.tz).iso
    sent = Status.SENT
    formula = _FORMULA_CHARS
    # Few distinct percentages occur: format each once.
    percents: dict[Decimal, str] = {}
    for (
        created,
        sent_at,
        public_id,
        name,
        order_id,
        customer,
        status,
        currency,
        amount_minor,
        requested,
        applied,
        reserved_minor,
        cashback,
        unit,
        error,
    ) in _detail_records(flt):
        # Escapes written out inline: a function call per cell costs a third of the loop.
        yield [
            iso(created),
            "" if sent_at is None else iso(sent_at),
            "'" + public_id if public_id[:1] in formula else public_id,
            "'" + name if name[:1] in formula else name,
            "'" + order_id if order_id[:1] in formula else order_id,
            "'" + customer if customer[:1] in formula else customer,
            status,
            currency,
            format_minor(amount_minor, currency),
            percents.get(requested) or percents.setdefault(requested, format(requested, "f")),
            percents.get(applied) or percents.setdefault(applied, format(applied, "f")),
            format_minor(reserved_minor, currency) if status == sent else _ZERO_TEXT[currency],
            "" if cashback is None else str(cashback),
            "" if cashback is None else format_minor(cashback, Currency.GBYTE),
            "" if unit is None else ("'" + unit if unit[:1] in formula else unit),
            "" if error is None else ("'" + error if error[:1] in formula else error),
        ]


def summary_rows(flt: ReportFilter) -> Iterator[list[Cell]]:
    """Yield one row per merchant and currency with purchases in the period."""
    qs = (
        flt.purchases()
        .values("merchant__public_id", "merchant__name", "currency")
        .annotate(**_status_counts())
        .order_by("merchant__public_id", "currency")
    )
    for g in qs:
        cur = g["currency"]
        cashback = g["cashback"] or 0
        yield [
            g["merchant__public_id"],
            g["merchant__name"],
            cur,
            g["purchases"],
            g["sent"],
            g["rejected"],
            g["pending_unknown"],
            g["queued_sending"],
            g["failed"],
            from_minor(g["volume"] or 0, cur),
            from_minor(g["sent_volume"] or 0, cur),
            from_minor(g["funded"] or 0, cur),
            cashback,
            bytes_to_gbyte(cashback),
        ]


def rows(report: str, flt: ReportFilter) -> Iterator[list[Cell]]:
    if report == "detail":
        return detail_rows(flt)
    if report == "summary":
        return summary_rows(flt)
    raise ReportError(f"Unknown report {report!r}; choose detail or summary.")


def escape_text(value: str) -> str:
    """Return a text cell a spreadsheet will not run as a formula."""
    if value.startswith(_FORMULA_START):
        return "'" + value
    return value


# --- CSV --------------------------------------------------------------------------------------


class _Line:
    """A file-like object whose write() returns what csv.writer wrote."""

    def write(self, value: str) -> str:
        return value


def _csv_cell(value: Cell) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return escape_text(value)
    if isinstance(value, Decimal):
        # Exact, plain notation: never "1E-9".
        return format(value, "f")
    return str(value)


def _csv_row(row: list[Cell]) -> list[str]:
    return [_csv_cell(v) for v in row]


def csv_chunks(report: str, flt: ReportFilter, lines_per_chunk: int = 500) -> Iterator[str]:
    """Return the report as CSV text in chunks: a title line, the column names, the rows.

    Raises ReportError for an unknown report now, before anything is streamed.
    """
    if report not in REPORTS:
        raise ReportError(f"Unknown report {report!r}; choose detail or summary.")
    return _csv_chunks(report, flt, lines_per_chunk)


def _csv_chunks(report: str, flt: ReportFilter, lines_per_chunk: int) -> Iterator[str]:
    data = _detail_csv_rows(flt) if report == "detail" else map(_csv_row, rows(report, flt))
    writer = csv.writer(_Line())
    yield writer.writerow([escape_text(flt.title(report))])
    yield writer.writerow(columns(report))
    buffer: list[str] = []
    for row in data:
        buffer.append(writer.writerow(row))
        if len(buffer) >= lines_per_chunk:
            yield "".join(buffer)
            buffer.clear()
    if buffer:
        yield "".join(buffer)


# --- XLSX -------------------------------------------------------------------------------------


# Significant digits a spreadsheet number keeps exactly (an IEEE double holds any 15).
XLSX_EXACT_DIGITS = 15


def _xlsx_cell(value: Cell) -> Cell:
    if isinstance(value, str):
        # openpyxl refuses control characters that XML cannot hold.
        return ILLEGAL_CHARACTERS_RE.sub("", escape_text(value))
    if isinstance(value, Decimal | int) and significant_digits(Decimal(value)) > XLSX_EXACT_DIGITS:
        # A spreadsheet would silently round it: keep the exact digits as text instead.
        return format(value, "f") if isinstance(value, Decimal) else str(value)
    # Numbers: openpyxl writes them with 16 significant digits, exact up to 15.
    return value


def write_xlsx(report: str, flt: ReportFilter, out: IO[bytes]) -> int:
    """Write the report as an XLSX workbook to `out`; return the number of data rows.

    A sheet holds at most XLSX_MAX_ROWS rows; the rows continue on further sheets, each
    with the title and column names again.
    """
    data = rows(report, flt)
    workbook = Workbook(write_only=True)
    title = escape_text(flt.title(report))
    per_sheet = XLSX_MAX_ROWS - 2
    count = 0
    sheet = None
    for row in data:
        if count % per_sheet == 0:
            sheet = workbook.create_sheet(f"{report} {count // per_sheet + 1}")
            sheet.append([title])
            sheet.append(columns(report))
        assert sheet is not None
        sheet.append([_xlsx_cell(v) for v in row])
        count += 1
    if sheet is None:
        sheet = workbook.create_sheet(f"{report} 1")
        sheet.append([title])
        sheet.append(columns(report))
    workbook.save(out)
    return count


def xlsx_file(report: str, flt: ReportFilter) -> IO[bytes]:
    """Return a temporary file holding the workbook, positioned at its start."""
    out = tempfile.TemporaryFile()  # noqa: SIM115 - the response closes it
    write_xlsx(report, flt, out)
    out.seek(0)
    return out


def percent_of(part: int, whole: int) -> int:
    """Return round-down `part / whole` in whole percent (integers only), for chart heights."""
    return 0 if whole <= 0 else part * 100 // whole
