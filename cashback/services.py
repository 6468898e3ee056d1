"""The purchase path: validate, store, claim, send upstream, record the outcome; admin actions.

The invariant: a purchase is sent upstream only by whoever moved it to `sending` with a
conditional update (cashback.lifecycle, the only writer of statuses), and never while a
database transaction is open. An outcome that may have taken effect becomes `unknown`,
which nothing re-sends by itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from cashback import lifecycle, wakeup
from cashback.client import get_client
from cashback.models import Purchase, Status
from gateway import metrics
from gateway.exceptions import Conflict, InvalidInput
from gateway.money import format_plain, partner_cost_minor
from merchants.models import Merchant

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
    # Insert first: a repeat finds the order id taken (no SELECT before every new purchase).
    purchase = _store(merchant, data, requested, due_now=respond_async)
    if purchase is None:
        existing = _stored(merchant, data.order_id)
        if existing is not None:
            return _replay(existing, data, requested), False
        raise Conflict(
            "purchase_unit is already used by another order of this merchant.",
            extra={"purchase_unit": ["This unit is already used by another order."]},
        ) from None
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
            ("currency", existing.currency, data.currency),
            ("currency_amount", existing.amount_minor, data.amount_minor),
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
    merchant: Merchant, data: PurchaseInput, requested: Decimal, *, due_now: bool = False
) -> Purchase | None:
    """Store the purchase as `queued` (reserving its cost); None if the order id is known.

    `due_now`: no request will send it, so the worker may at once (no grace), and a NOTIFY
    in the storing transaction wakes the workers when it commits (a rollback wakes nobody).
    """
    now = timezone.now()
    grace = 0.0 if due_now else settings.CASHBACK_QUEUED_GRACE
    purchase = Purchase(
        merchant=merchant,
        order_id=data.order_id,
        customer=data.customer,
        description=data.description,
        address=data.address,
        currency=data.currency,
        amount_minor=data.amount_minor,
        requested_percentage=requested,
        percentage=requested,
        purchase_unit=data.purchase_unit,
        reserved_minor=partner_cost_minor(data.amount_minor, requested),
        status=Status.QUEUED,
        next_attempt_at=now + timedelta(seconds=grace),
        retry_deadline=now + timedelta(seconds=settings.CASHBACK_RETRY_WINDOW),
        created_at=now,
        updated_at=now,
    )
    refused = (
        f"The deposit in {data.currency} does not cover "
        f"{requested} % partner cashback; nothing was stored."
    )
    if not due_now:
        return purchase if lifecycle.store(purchase, refused=refused) else None
    with transaction.atomic():
        if not lifecycle.store(purchase, refused=refused):
            return None
        wakeup.notify_due()
    return purchase


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
    return lifecycle.record_outcome(
        purchase.pk, attempt, result, started_at=started_at, merchant=purchase.merchant
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
