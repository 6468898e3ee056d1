"""Periods in a time zone and the filter every report and the dashboard share.

A period is a range of calendar days in a named time zone, both ends inclusive; it selects
purchases by `created_at` from 00:00 of the first day up to (not including) 00:00 of the day
after the last.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from cashback.models import Purchase
from merchants.models import Merchant

# Years a period may start or end in; keeps date arithmetic far from datetime's limits.
MIN_YEAR, MAX_YEAR = 1970, 9998


class ReportError(ValueError):
    """Bad report parameters, with a message fit to show the user."""


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

    def previous(self) -> Period:
        """Return the period of as many days that ends the day before this one starts."""
        length = self.end - self.start
        end = self.start - timedelta(days=1)
        return Period(end - length, end, self.tz)

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
