"""The purchase path: store, claim, send upstream, record the outcome; and reconciliation.

The invariant: a purchase is sent upstream only by whoever moved it to `sending` with a
conditional update (or a row lock), and never while a database transaction is open. An
outcome that may have taken effect becomes `unknown`, which nothing re-sends by itself.
"""

from __future__ import annotations

import logging
import os
import random
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from cashback.client import UpstreamResult, get_client
from cashback.models import (
    OPEN_STATUSES,
    Alert,
    Attempt,
    Hold,
    Outcome,
    Purchase,
    PurchaseAction,
    Status,
    WebhookDelivery,
)
from cashback.resources import PurchaseSerializer
from gateway.exceptions import Conflict, DomainError, InsufficientDeposit, InvalidInput
from gateway.money import format_plain, partner_cost_minor
from merchants import services as ledger
from merchants.models import DepositPolicy, EntryKind, Merchant

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
    merchant: Merchant, data: PurchaseInput, *, send: bool = True
) -> tuple[Purchase, bool]:
    """Store a purchase and send it upstream; return it and whether it was new.

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
    existing = _stored(merchant, data.order_id)
    if existing is not None:
        return _replay(existing, data, requested), False
    try:
        purchase = _store(merchant, data, requested)
    except IntegrityError:
        # A concurrent request stored the same order id first (or reused the unit).
        existing = _stored(merchant, data.order_id)
        if existing is not None:
            return _replay(existing, data, requested), False
        raise Conflict(
            "purchase_unit is already used by another order of this merchant.",
            extra={"purchase_unit": ["This unit is already used by another order."]},
        ) from None
    if send:
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


def _store(merchant: Merchant, data: PurchaseInput, requested: Decimal) -> Purchase:
    """Store the purchase as `queued`, reserving its partner-funded cost, in one transaction."""
    now = timezone.now()
    applied, cost = requested, partner_cost_minor(data.amount_minor, requested)
    with transaction.atomic():
        balance = ledger.try_reserve(merchant, data.currency, cost) if cost else None
        if cost and balance is None:
            if merchant.deposit_policy == DepositPolicy.REJECT:
                raise InsufficientDeposit(
                    f"The deposit in {data.currency} does not cover "
                    f"{requested} % partner cashback; nothing was stored.",
                )
            applied, cost = Decimal(0), 0
        purchase = Purchase.objects.create(
            merchant=merchant,
            order_id=data.order_id,
            customer=data.customer,
            description=data.description,
            address=data.address,
            currency=data.currency,
            amount_minor=data.amount_minor,
            requested_percentage=requested,
            percentage=applied,
            purchase_unit=data.purchase_unit,
            reserved_minor=cost,
            status=Status.QUEUED,
            next_attempt_at=now + timedelta(seconds=settings.CASHBACK_QUEUED_GRACE),
            retry_deadline=now + timedelta(seconds=settings.CASHBACK_RETRY_WINDOW),
            created_at=now,
            updated_at=now,
        )
        if balance is not None:
            ledger.reserve(balance, purchase)
            purchase.hold = Hold.HELD
            Purchase.objects.filter(pk=purchase.pk).update(hold=purchase.hold)
    return purchase


def lock_purchase(purchase_id: Any) -> Purchase:
    """Return the purchase with its row locked until the transaction ends.

    Only the purchase row is locked (not its merchant, which every insert of a purchase
    references), and FOR NO KEY UPDATE lets ledger and attempt rows reference it meanwhile.
    Lock order everywhere: purchase, then balance.
    """
    return (
        Purchase.objects.select_for_update(no_key=True, of=("self",))
        .select_related("merchant")
        .get(pk=purchase_id)
    )


# --- Sending -------------------------------------------------------------------------------


def lease_seconds() -> float:
    return (
        settings.CASHBACK_CONNECT_TIMEOUT
        + settings.CASHBACK_TIMEOUT
        + settings.CASHBACK_LEASE_MARGIN
    )


def claim(purchase: Purchase, from_statuses: tuple[str, ...], now: datetime | None = None) -> bool:
    """Move the purchase to `sending` if it is still in one of `from_statuses`."""
    now = now or timezone.now()
    claimed = Purchase.objects.filter(pk=purchase.pk, status__in=from_statuses).update(
        status=Status.SENDING,
        lease_until=now + timedelta(seconds=lease_seconds()),
        attempts=F("attempts") + 1,
        updated_at=now,
    )
    if claimed:
        purchase.status = Status.SENDING
        purchase.attempts += 1
    return bool(claimed)


def send_now(purchase: Purchase) -> Purchase:
    """Claim a freshly stored purchase and send it; return it as recorded."""
    if not claim(purchase, (Status.QUEUED,)):
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
    return record_outcome(purchase.pk, attempt, result, started_at=started_at)


def backoff(attempt: int) -> float:
    """Return seconds before retry number `attempt` (1-based), with ±20 % jitter."""
    schedule = settings.CASHBACK_RETRY_SCHEDULE
    base = schedule[min(attempt, len(schedule)) - 1]
    return base * random.uniform(0.8, 1.2)


def record_outcome(
    purchase_id: Any,
    attempt: int,
    result: UpstreamResult,
    *,
    started_at: datetime,
    now: datetime | None = None,
) -> Purchase:
    """Store the attempt and, if this attempt still owns the purchase, its new status."""
    now = now or timezone.now()
    with transaction.atomic():
        purchase = lock_purchase(purchase_id)
        # A lease that ran out made it `unknown`; the real answer still wins. An admin's
        # later retry or decision owns the purchase instead.
        applied = purchase.attempts == attempt and purchase.status in (
            Status.SENDING,
            Status.UNKNOWN,
        )
        Attempt.objects.create(
            purchase=purchase,
            number=attempt,
            started_at=started_at,
            duration_ms=result.duration_ms,
            http_status=result.http_status,
            outcome=result.outcome,
            error=result.error,
            worker=f"{socket.gethostname()}:{os.getpid()}",
            response_excerpt=getattr(result, "response_excerpt", ""),
            cashback_amount=None if result.cashback_amount is None else str(result.cashback_amount),
            unit=result.unit,
            applied=applied,
        )
        if not applied:
            logger.warning(
                "outcome arrived after the purchase moved on",
                extra={
                    "order_id": purchase.order_id,
                    "attempt": attempt,
                    "status": purchase.status,
                },
            )
            return purchase
        _apply_result(purchase, result, now)
    return purchase


def _apply_result(purchase: Purchase, result: UpstreamResult, now: datetime) -> None:
    before = purchase.status
    purchase.lease_until = None
    purchase.updated_at = now
    if result.outcome == Outcome.OK:
        purchase.status = Status.SENT
        purchase.cashback_amount = result.cashback_amount
        purchase.unit = result.unit
        purchase.error = None
        purchase.sent_at = now
        purchase.next_attempt_at = None
        settle_hold(purchase, EntryKind.CAPTURE)
    elif result.outcome == Outcome.REJECTED:
        purchase.status = Status.REJECTED
        purchase.error = result.error
        purchase.next_attempt_at = None
        settle_hold(purchase, EntryKind.RELEASE)
    elif result.outcome in (Outcome.NOT_SENT, Outcome.AUTH_FAILED):
        purchase.error = result.error
        if result.outcome == Outcome.AUTH_FAILED:
            raise_alert(
                Alert.Kind.AUTH_FAILED,
                "Upstream answered 'authentication failed': check CASHBACK_PARTNER and CASHBACK_PARTNER_KEY.",
                now,
            )
        retry_at = now + timedelta(seconds=backoff(purchase.attempts))
        if purchase.retry_deadline and retry_at > purchase.retry_deadline:
            _fail(purchase)
        else:
            purchase.status = Status.PENDING
            purchase.next_attempt_at = retry_at
    else:
        purchase.status = Status.UNKNOWN
        purchase.error = result.error
        purchase.next_attempt_at = None
    purchase.save()
    if before in OPEN_STATUSES and purchase.is_final:
        enqueue_webhook(purchase)


def fail(purchase: Purchase, now: datetime) -> None:
    """Fail a `pending` purchase whose retry window ran out (row locked by the caller)."""
    _fail(purchase)
    purchase.updated_at = now
    purchase.save()
    enqueue_webhook(purchase)
    logger.warning("purchase failed", extra={"order_id": purchase.order_id})


def _fail(purchase: Purchase) -> None:
    purchase.status = Status.FAILED
    purchase.next_attempt_at = None
    purchase.error = f"retries ran out: {purchase.error or 'upstream unreachable'}"
    settle_hold(purchase, EntryKind.RELEASE)


def settle_hold(purchase: Purchase, kind: str, *, user: Any = None) -> None:
    """Capture or release the purchase's reservation, if it holds one, and record which."""
    if purchase.hold != Hold.HELD:
        return
    ledger.settle(purchase, kind, user=user)
    purchase.hold = Hold.CAPTURED if kind == EntryKind.CAPTURE else Hold.RELEASED


def raise_alert(kind: str, message: str, now: datetime, *, subject: str = "") -> None:
    """Open (or refresh) an alert that every admin page shows until it is resolved.

    One alert per (kind, subject): `subject` names what it is about (a purchase id, a
    merchant's public id), blank for a global condition.
    """
    subject = str(subject)
    updated = Alert.objects.filter(kind=kind, subject=subject).update(
        message=message, last_seen=now, count=F("count") + 1, resolved_at=None
    )
    if not updated:
        try:
            with transaction.atomic():
                Alert.objects.create(
                    kind=kind, subject=subject, message=message, first_seen=now, last_seen=now
                )
        except IntegrityError:
            pass
    logger.error("alert raised", extra={"alert": kind, "subject": subject})


def enqueue_webhook(purchase: Purchase) -> None:
    """Write the webhook delivery of a final status, in the caller's transaction."""
    if not purchase.merchant.webhook_url:
        return
    WebhookDelivery.objects.create(
        purchase=purchase,
        merchant=purchase.merchant,
        event=f"purchase.{purchase.status}",
        payload=PurchaseSerializer(purchase).data,
        next_attempt_at=timezone.now(),
    )


# --- Reconciliation by admins --------------------------------------------------------------


def _record_action(purchase: Purchase, user: Any, action: str, before: str, note: str = "") -> None:
    PurchaseAction.objects.create(
        purchase=purchase,
        user=user if getattr(user, "is_authenticated", False) else None,
        action=action,
        status_before=before,
        status_after=purchase.status,
        note=note,
    )


def retry(purchase_id: Any, user: Any, *, send: bool = True) -> Purchase:
    """Send an `unknown`, `failed` or `pending` purchase again; the admin accepts the risk.

    A released reservation is reserved again under the merchant's policy.
    """
    now = timezone.now()
    with transaction.atomic():
        purchase = lock_purchase(purchase_id)
        before = purchase.status
        if before not in (Status.UNKNOWN, Status.FAILED, Status.PENDING):
            raise DomainError(
                f"Only unknown, failed or pending purchases can be retried, not {before}."
            )
        if purchase.hold == Hold.RELEASED and purchase.reserved_minor:
            balance = ledger.try_reserve(
                purchase.merchant, purchase.currency, purchase.reserved_minor
            )
            if balance is not None:
                ledger.reserve(balance, purchase)
                purchase.hold = Hold.HELD
            elif purchase.merchant.deposit_policy == DepositPolicy.REJECT:
                raise InsufficientDeposit(
                    f"The deposit in {purchase.currency} no longer covers this purchase's "
                    f"partner cashback, and the merchant's policy is reject."
                )
            else:
                purchase.percentage, purchase.reserved_minor, purchase.hold = (
                    Decimal(0),
                    0,
                    Hold.NONE,
                )
        purchase.status = Status.PENDING
        purchase.next_attempt_at = now
        purchase.retry_deadline = now + timedelta(seconds=settings.CASHBACK_RETRY_WINDOW)
        purchase.updated_at = now
        purchase.save()
        _record_action(purchase, user, "retry", before)
    if send and claim(purchase, (Status.PENDING,)):
        return send_claimed(purchase)
    return purchase


def mark_sent(
    purchase_id: Any, user: Any, cashback_amount: int, unit: str, note: str = ""
) -> Purchase:
    """Record that upstream did pay an `unknown` or `pending` purchase (checked by an admin)."""
    return _resolve(purchase_id, user, "mark_sent", note, sent=(cashback_amount, unit))


def mark_rejected(purchase_id: Any, user: Any, error: str, note: str = "") -> Purchase:
    """Record that upstream did not pay an `unknown` or `pending` purchase."""
    return _resolve(purchase_id, user, "mark_rejected", note, error=error)


def _resolve(
    purchase_id: Any,
    user: Any,
    action: str,
    note: str,
    *,
    sent: tuple[int, str] | None = None,
    error: str = "",
) -> Purchase:
    now = timezone.now()
    with transaction.atomic():
        purchase = lock_purchase(purchase_id)
        before = purchase.status
        if before not in (Status.UNKNOWN, Status.PENDING):
            raise DomainError(
                f"Only unknown or pending purchases can be resolved by hand, not {before}."
            )
        if sent is not None:
            result = UpstreamResult(Outcome.OK, cashback_amount=sent[0], unit=sent[1])
        else:
            result = UpstreamResult(Outcome.REJECTED, error=error or "rejected by an admin")
        _apply_result(purchase, result, now)
        _record_action(purchase, user, action, before, note)
    return purchase
