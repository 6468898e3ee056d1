"""The purchase path: validate, store, claim, send upstream, record the outcome; admin actions.

The invariant: a purchase is sent upstream only by whoever moved it to `sending` with a
conditional update (cashback.lifecycle, the only writer of statuses), and never while a
database transaction is open. An outcome that may have taken effect becomes `unknown`,
which nothing re-sends by itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from cashback import fx, lifecycle, spool, wakeup
from cashback.client import get_client
from cashback.models import Hold, Purchase, WebhookDelivery
from gateway import metrics
from gateway.exceptions import Conflict, InvalidInput
from gateway.money import format_minor, format_plain, partner_cost_minor, round_minor_up
from merchants import services as ledger
from merchants.models import Balance, Merchant

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PurchaseInput:
    """A validated, normalised purchase as a merchant reported it."""

    order_id: str
    customer: str
    description: str
    address: str
    currency: str
    amount_minor: int
    percentage: Decimal | None  # None: the merchant's default
    purchase_unit: str | None


# --- Submission ----------------------------------------------------------------------------


def submit_purchase(
    merchant: Merchant, data: PurchaseInput, *, send: bool = True, respond_async: bool = False
) -> tuple[Purchase, bool]:
    """Store a purchase and send it upstream; return it and whether it was new.

    `respond_async`: store it due at once, wake the workers, and send nothing here.

    A repeated order id with the same fields returns the stored purchase (not new) and
    sends nothing; with different fields it raises Conflict.
    """
    requested = merchant.default_percentage if data.percentage is None else data.percentage
    if requested > merchant.max_percentage:
        raise InvalidInput(
            f"partner_cashback_percentage: at most {merchant.max_percentage} for this merchant.",
            extra={
                "partner_cashback_percentage": [
                    f"Ensure this value is at most {merchant.max_percentage}."
                ]
            },
        )
    try:
        conversion = fx.conversion_for(merchant, data.currency, data.amount_minor, timezone.now())
    except InvalidInput:
        # No usable rate now: a replay of a stored purchase is still answered as stored.
        existing = _stored(merchant, data.order_id)
        if existing is None:
            raise
        return _replay(existing, data, requested), False
    # Insert first: a repeat finds the order id taken (no SELECT before every new purchase).
    # A replay compares what the merchant sent (currency, amount), whatever the rates did.
    purchase = _store(merchant, data, requested, conversion, due_now=respond_async)
    if purchase is None:
        existing = _stored(merchant, data.order_id)
        if existing is not None:
            return _replay(existing, data, requested), False
        raise Conflict(
            "purchase_unit is already used by another order of this merchant.",
            extra={"purchase_unit": ["This unit is already used by another order."]},
        ) from None
    if purchase.hold == Hold.HELD:
        notify_if_runway_low(merchant, purchase.currency, purchase.created_at)
    if send and not respond_async:
        purchase = send_now(purchase)
    return purchase, True


def _stored(merchant: Merchant, order_id: str) -> Purchase | None:
    """Return the merchant's purchase with this order id, if one is stored."""
    # (merchant, order_id) is unique: no ORDER BY, which `.first()` would add for nothing.
    found = Purchase.objects.filter(merchant=merchant, order_id=order_id).order_by()[:1]
    return next(iter(found), None)


def _replay(existing: Purchase, data: PurchaseInput, requested: Decimal) -> Purchase:
    differing = [
        name
        for name, stored, given in (
            ("customer", existing.customer, data.customer),
            ("description", existing.description, data.description),
            ("address", existing.address, data.address),
            ("currency", existing.sent_currency, data.currency),
            ("currency_amount", existing.sent_amount_minor, data.amount_minor),
            ("partner_cashback_percentage", existing.requested_percentage, requested),
            ("purchase_unit", existing.purchase_unit, data.purchase_unit),
        )
        if stored != given
    ]
    if differing:
        raise Conflict(
            f"order_id {existing.order_id!r} was already reported with different "
            f"{', '.join(differing)}.",
            extra={"fields": differing},
        )
    return existing


def _store(
    merchant: Merchant,
    data: PurchaseInput,
    requested: Decimal,
    conversion: fx.Conversion | None = None,
    *,
    due_now: bool = False,
) -> Purchase | None:
    """Store the purchase as `queued` (reserving its cost); None if the order id is known.

    A converted purchase is sent, and its partner share reserved, in the settlement currency.
    `due_now`: no request will send it, so the worker may at once (no grace), and the
    INSERT itself sends the NOTIFY that wakes the workers when it commits (a rollback wakes
    nobody).
    """
    now = timezone.now()
    grace = 0.0 if due_now else settings.CASHBACK_QUEUED_GRACE
    currency, amount_minor = (
        (conversion.currency, conversion.amount_minor)
        if conversion
        else (data.currency, data.amount_minor)
    )
    purchase = Purchase(
        merchant=merchant,
        order_id=data.order_id,
        customer=data.customer,
        description=data.description,
        address=data.address,
        currency=currency,
        amount_minor=amount_minor,
        original_currency=data.currency if conversion else None,
        original_amount_minor=data.amount_minor if conversion else None,
        fx_rate=conversion.rate if conversion else None,
        fx_settlement_rate=conversion.settlement_rate if conversion else None,
        fx_rate_date=conversion.rate_date if conversion else None,
        fx_rate_source=conversion.source if conversion else None,
        requested_percentage=requested,
        percentage=requested,
        purchase_unit=data.purchase_unit,
        reserved_minor=partner_cost_minor(amount_minor, requested),
        next_attempt_at=now + timedelta(seconds=grace),
        retry_deadline=now + timedelta(seconds=settings.CASHBACK_RETRY_WINDOW),
        created_at=now,
        updated_at=now,
    )
    refused = (
        f"The deposit in {currency} does not cover "
        f"{requested} % partner cashback; nothing was stored."
    )
    notify = wakeup.CHANNEL if due_now else None
    return purchase if lifecycle.store(purchase, refused=refused, notify=notify) else None


def notify_if_runway_low(merchant: Merchant, currency: str, now: datetime) -> None:
    """Send `balance.low` once when the deposit's runway drops under the threshold.

    Runway = available / average daily reservations over the last 7 days. The flag on the
    balance, flipped by a conditional update, makes it once per crossing even with
    concurrent purchases; a deposit that lengthens the runway again clears it.
    """
    if not merchant.webhook_url or settings.WEBHOOK_BALANCE_LOW_DAYS <= 0:
        return
    balance = Balance.objects.filter(merchant=merchant, currency=currency).first()
    if balance is None:
        return
    low, days = ledger.runway_is_low(balance, now)
    if low == balance.runway_low:
        return
    with transaction.atomic():
        flipped = Balance.objects.filter(pk=balance.pk, runway_low=not low).update(runway_low=low)
        if not (flipped and low):
            return
        assert days is not None
        per_day = ledger.daily_spending_minor(balance, now)
        WebhookDelivery.objects.create(
            purchase=None,
            merchant=merchant,
            event="balance.low",
            payload={
                "merchant_id": merchant.public_id,
                "currency": currency,
                "available": format_minor(balance.available_minor, currency),
                "reserved": format_minor(balance.reserved_minor, currency),
                "daily_average": format_plain(round_minor_up(per_day, currency)),
                # Rounded down to a tenth of a day: never a longer runway than there is.
                "runway_days": format_plain(Decimal(int(days * 10)) / 10),
                "threshold_days": format_plain(Decimal(str(settings.WEBHOOK_BALANCE_LOW_DAYS))),
            },
            next_attempt_at=now,
        )
    logger.warning(
        "balance runway low", extra={"merchant": merchant.public_id, "currency": currency}
    )


# --- Sending -------------------------------------------------------------------------------


def send_now(purchase: Purchase) -> Purchase:
    """Claim a freshly stored purchase and send it; return it as recorded."""
    if not lifecycle.claim(purchase, lifecycle.Actor.REQUEST):
        purchase.refresh_from_db()
        return purchase
    return send_claimed(purchase)


def upstream_fields(purchase: Purchase) -> dict[str, str]:
    """Return the form fields of `new_purchase` for a purchase, credentials excepted."""
    fields = {
        "customer": purchase.customer,
        "order_id": purchase.order_id,
        "description": purchase.description,
        "merchant": purchase.merchant.public_id,
        "address": purchase.address,
        "currency": purchase.currency,
        "currency_amount": format_plain(purchase.currency_amount),
        "partner_cashback_percentage": format_plain(purchase.percentage),
    }
    if purchase.purchase_unit:
        fields["purchase_unit"] = purchase.purchase_unit
    return fields


def send_claimed(purchase: Purchase) -> Purchase:
    """Call upstream for a purchase this process claimed, then record what happened."""
    attempt = purchase.attempts
    started_at = timezone.now()
    result = get_client().new_purchase(upstream_fields(purchase))
    metrics.UPSTREAM_CALLS.labels(outcome=result.outcome).inc()
    metrics.UPSTREAM_LATENCY.observe(result.duration_ms / 1000)
    logger.info(
        "upstream attempt",
        extra={
            "order_id": purchase.order_id,
            "merchant": purchase.merchant.public_id,
            "attempt": attempt,
            "outcome": result.outcome,
            "http_status": result.http_status,
            "ms": result.duration_ms,
        },
    )
    # Through the spool: an answer the database cannot take now is kept on disk, not lost.
    return spool.record(
        purchase, attempt, result, started_at=started_at, merchant=purchase.merchant
    )


record_outcome = lifecycle.record_outcome
raise_alert = lifecycle.raise_alert


# --- Reconciliation by admins --------------------------------------------------------------


def retry(purchase_id: Any, user: Any, *, send: bool = True) -> Purchase:
    """Send an `unknown`, `failed` or `pending` purchase again; the admin accepts the risk.

    Refused when upstream already answered `ok` for it (mark it sent instead).
    """
    purchase = lifecycle.retry(purchase_id, user)
    if send and lifecycle.claim(purchase, lifecycle.Actor.ADMIN):
        return send_claimed(purchase)
    return purchase


def mark_sent(
    purchase_id: Any, user: Any, cashback_amount: int, unit: str, note: str = ""
) -> Purchase:
    """Record that upstream did pay an `unknown` or `pending` purchase (checked by an admin)."""
    return lifecycle.mark_sent(purchase_id, user, cashback_amount, unit, note)


def mark_rejected(purchase_id: Any, user: Any, error: str, note: str = "") -> Purchase:
    """Record that upstream did not pay an `unknown` or `pending` purchase."""
    return lifecycle.mark_rejected(purchase_id, user, error, note)
