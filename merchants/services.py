"""Writes to merchants and their deposit ledger.

Every balance change is one conditional UPDATE of the balance row (which locks the row it
reads and refuses to go below zero) plus one ledger entry, inside a transaction, so the
balance always equals the sums of its entries (ENTRY_EFFECTS says how each kind counts).
The purchase's own hold bookkeeping lives with the purchase (cashback.lifecycle).
"""

from __future__ import annotations

import logging
import secrets
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any, cast

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import connection, transaction
from django.db.models import F, Q, Sum
from django.utils import timezone
from django.utils.text import slugify

from audit import services as audit
from gateway.exceptions import DomainError, InsufficientDeposit, InvalidInput
from gateway.money import MAX_MINOR, AmountError, check_amount, format_minor, to_minor
from merchants.models import (
    ENTRY_EFFECTS,
    ApiKey,
    Balance,
    DepositPolicy,
    EntryKind,
    LedgerEntry,
    Merchant,
)

logger = logging.getLogger(__name__)

User = AbstractBaseUser | AnonymousUser | None


def create_merchant(
    name: str,
    *,
    public_id: str | None = None,
    percentage: Decimal = Decimal(0),
    max_percentage: Decimal | None = None,
    policy: str = DepositPolicy.DOWNGRADE,
    actor: Any = None,
) -> tuple[Merchant, str]:
    """Create a merchant with one API key; return both, the raw key shown only once.

    `actor` (a user or an audit Actor; None: "system") is written to the audit log with it.
    """
    if max_percentage is None:
        max_percentage = max(percentage, Decimal(10))
    if not (0 <= percentage <= max_percentage <= 100):
        raise InvalidInput("Percentages must satisfy 0 ≤ default ≤ maximum ≤ 100.")
    public_id = public_id or _unique_public_id(name)
    if Merchant.objects.filter(public_id=public_id).exists():
        raise InvalidInput(f"A merchant with public id {public_id!r} already exists.")
    with transaction.atomic():
        merchant = Merchant.objects.create(
            name=name,
            public_id=public_id,
            default_percentage=percentage,
            max_percentage=max_percentage,
            deposit_policy=policy,
        )
        key, raw_key = ApiKey.issue(merchant, name="initial")
        audit.record(actor, "add", merchant, audit.diff({}, audit.snapshot(merchant)))
        audit.record(actor, "issue_key", key, _key_changes(key))
    return merchant, raw_key


def _key_changes(key: ApiKey) -> audit.Changes:
    return {
        "merchant": [None, key.merchant.public_id],
        "name": [None, key.name],
        "expires_at": [None, key.expires_at],
    }


def _unique_public_id(name: str) -> str:
    base = slugify(name)[:30] or "merchant"
    candidate = base
    while Merchant.objects.filter(public_id=candidate).exists():
        candidate = f"{base}-{secrets.token_hex(3)}"
    return candidate


def _move(
    merchant_id: int,
    currency: str,
    kind: str,
    amount_minor: int,
    *,
    purchase_id: Any = None,
    user: User = None,
    memo: str = "",
) -> LedgerEntry | None:
    """Move the balance by one entry and write it; return None if the balance cannot take it.

    The conditional UPDATE locks the row it reads, so `available` and `reserved` never go
    below zero and concurrent writers serialise on the balance row.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("A ledger entry and its balance change need one transaction.")
    effect = ENTRY_EFFECTS[kind]
    available_delta = amount_minor * effect.available
    reserved_delta = amount_minor * effect.reserved
    moved = Balance.objects.filter(
        merchant_id=merchant_id,
        currency=currency,
        available_minor__gte=-available_delta,
        reserved_minor__gte=-reserved_delta,
        # …and never past what a 64-bit column holds, which would be a database error.
        available_minor__lte=MAX_MINOR - max(available_delta, 0),
        reserved_minor__lte=MAX_MINOR - max(reserved_delta, 0),
    ).update(
        available_minor=F("available_minor") + available_delta,
        reserved_minor=F("reserved_minor") + reserved_delta,
        # update() skips auto_now: without this "updated at" would never move.
        updated_at=timezone.now(),
    )
    if not moved:
        return None
    return LedgerEntry.objects.create(
        merchant_id=merchant_id,
        currency=currency,
        kind=kind,
        amount_minor=amount_minor,
        purchase_id=purchase_id,
        created_by=cast(Any, user) if user is not None and user.is_authenticated else None,
        memo=memo,
    )


def record_entry(
    merchant: Merchant,
    kind: str,
    amount: Decimal,
    currency: str,
    *,
    memo: str = "",
    user: User = None,
    actor: Any = None,
) -> LedgerEntry:
    """Record a deposit, withdrawal or adjustment made by an admin or a command.

    Deposits and withdrawals take a positive amount; an adjustment is signed. The audit
    entry names `actor` (default: `user`) and is written in the entry's transaction.
    """
    try:
        check_amount(abs(amount), currency)
    except AmountError as exc:
        raise InvalidInput(f"amount: {exc}") from None
    minor = to_minor(amount, currency)
    if kind == EntryKind.DEPOSIT:
        if minor <= 0:
            raise InvalidInput("A deposit must be positive.")
    elif kind == EntryKind.WITHDRAWAL:
        if minor <= 0:
            raise InvalidInput("Enter a withdrawal as a positive amount.")
        minor = -minor
    elif kind != EntryKind.ADJUSTMENT:
        raise InvalidInput(f"{kind} entries are made by the purchase path, not by hand.")
    with transaction.atomic():
        Balance.objects.get_or_create(merchant=merchant, currency=currency)
        entry = _move(merchant.pk, currency, kind, minor, user=user, memo=memo)
        if entry is None:
            balance = Balance.objects.get(merchant=merchant, currency=currency)
            if minor > 0:
                raise InvalidInput(
                    f"amount: the available balance is {balance.available} {currency}, and it "
                    f"can hold at most {format_minor(MAX_MINOR, currency)} {currency}."
                )
            raise InsufficientDeposit(
                f"Available balance is {balance.available} {currency}; it cannot go below zero."
            )
        flagged = Balance.objects.filter(
            merchant=merchant, currency=currency, runway_low=True
        ).first()
        if flagged is not None and not runway_is_low(flagged, timezone.now())[0]:
            # Money came in: the next drop under the threshold is a new crossing.
            Balance.objects.filter(pk=flagged.pk).update(runway_low=False)
        audit.record(
            actor if actor is not None else user,
            "record_entry",
            entry,
            {
                "merchant": [None, merchant.public_id],
                "kind": [None, entry.kind],
                "amount": [None, entry.amount],
                "currency": [None, entry.currency],
                "memo": [None, entry.memo],
            },
        )
    logger.info(
        "ledger entry recorded",
        extra={
            "merchant": merchant.public_id,
            "kind": kind,
            "amount": str(amount),
            "currency": currency,
        },
    )
    return entry


def reserve_or_downgrade(
    merchant: Merchant, currency: str, cost_minor: int, *, purchase_id: Any, refused: str
) -> bool:
    """Reserve a purchase's partner-funded cost, in the caller's transaction.

    Return True if reserved. If the deposit does not cover it, the merchant's deposit policy
    decides (the only place it does): `downgrade` returns False (send at 0 %), `reject`
    raises InsufficientDeposit with the message `refused`.
    """
    if cost_minor and _move(
        merchant.pk, currency, EntryKind.RESERVATION, -cost_minor, purchase_id=purchase_id
    ):
        return True
    if merchant.deposit_policy == DepositPolicy.REJECT:
        raise InsufficientDeposit(refused)
    return False


def capture(
    merchant_id: int, currency: str, cost_minor: int, *, purchase_id: Any, user: User = None
) -> None:
    """Pay out a purchase's reservation (the caller moved its hold to captured)."""
    _settle(EntryKind.CAPTURE, merchant_id, currency, -cost_minor, purchase_id, user)


def release(
    merchant_id: int, currency: str, cost_minor: int, *, purchase_id: Any, user: User = None
) -> None:
    """Give a purchase's reservation back to available (the caller moved its hold)."""
    _settle(EntryKind.RELEASE, merchant_id, currency, cost_minor, purchase_id, user)


def _settle(
    kind: str, merchant_id: int, currency: str, amount: int, purchase_id: Any, user: User
) -> None:
    if _move(merchant_id, currency, kind, amount, purchase_id=purchase_id, user=user) is None:
        raise DomainError(f"The purchase holds a reservation its {currency} balance does not show.")


# The window over which a merchant's daily partner-funded spending is averaged.
RUNWAY_WINDOW_DAYS = 7


def daily_spending_minor(balance: Balance, now: datetime) -> Fraction:
    """Return the average partner-funded reservations per day over the last 7 days.

    Reservations net of releases (a rejected purchase gave its reservation back), as the
    merchant admin's runway column counts them. In minor units, exactly.
    """
    total = LedgerEntry.objects.filter(
        merchant_id=balance.merchant_id,
        currency=balance.currency,
        kind__in=[EntryKind.RESERVATION, EntryKind.RELEASE],
        created_at__gte=now - timedelta(days=RUNWAY_WINDOW_DAYS),
    ).aggregate(total=Sum("amount_minor"))["total"]
    return Fraction(max(-(total or 0), 0), RUNWAY_WINDOW_DAYS)


def runway_days(balance: Balance, now: datetime) -> Fraction | None:
    """Return how many days `available` lasts at the recent daily spending (None: no spending)."""
    per_day = daily_spending_minor(balance, now)
    if not per_day:
        return None
    return balance.available_minor / per_day


def runway_is_low(balance: Balance, now: datetime) -> tuple[bool, Fraction | None]:
    """Return whether the balance's runway is under WEBHOOK_BALANCE_LOW_DAYS, and the runway."""
    days = runway_days(balance, now)
    threshold = Fraction(str(settings.WEBHOOK_BALANCE_LOW_DAYS))
    return (days is not None and days < threshold), days


def balances_of(merchant: Merchant) -> list[dict[str, object]]:
    """Return the merchant's balances per currency, as the API shows them."""
    return [
        {"currency": b.currency, "available": b.available, "reserved": b.reserved}
        for b in Balance.objects.filter(merchant=merchant).order_by("currency")
    ]


# --- Merchant settings and API keys (audited) ----------------------------------------------


def update_settings(
    merchant: Merchant, values: dict[str, Any], *, rotate_secret: bool, actor: Any
) -> tuple[Merchant, str | None]:
    """Change a merchant's own settings (`values`: field → value, already validated).

    A new webhook secret is made when asked, or when a webhook URL is set without one; it
    is returned (shown once) and logged only as "changed". One audit entry, same transaction.
    """
    with transaction.atomic():
        locked = Merchant.objects.select_for_update().get(pk=merchant.pk)
        before = audit.snapshot(locked)
        for name, value in values.items():
            setattr(locked, name, value)
        secret = None
        if locked.webhook_url and (rotate_secret or not locked.webhook_secret):
            secret = locked.rotate_webhook_secret()
        locked.updated_at = timezone.now()
        locked.save()
        changes = audit.diff(before, audit.snapshot(locked))
        if changes:
            audit.record(actor, "change", locked, changes)
    return locked, secret


def rotate_api_key(
    merchant: Merchant,
    *,
    name: str = "",
    expire_old_at: Any = None,
    revoke_old: bool = False,
    actor: Any = None,
) -> tuple[ApiKey, str, list[ApiKey]]:
    """Issue a new key for `merchant`; expire or revoke its other usable keys if asked.

    Return the new key, its raw value (shown only once) and the older usable keys as they
    are afterwards. Every key changed and the new one are audited in the same transaction.
    """
    now = timezone.now()
    with transaction.atomic():
        old = list(ApiKey.objects.select_for_update().filter(merchant=merchant).usable())
        if revoke_old:
            ApiKey.objects.filter(pk__in=[k.pk for k in old]).update(revoked_at=now)
        elif expire_old_at is not None:
            # Never lengthen a key's life: one that expires sooner keeps its own date.
            ApiKey.objects.filter(pk__in=[k.pk for k in old]).filter(
                Q(expires_at__isnull=True) | Q(expires_at__gt=expire_old_at)
            ).update(expires_at=expire_old_at)
        key, raw = ApiKey.issue(merchant, name=name or f"rotated {now:%Y-%m-%d %H:%M}")
        audit.record(actor, "issue_key", key, _key_changes(key))
        after = {k.pk: k for k in ApiKey.objects.filter(pk__in=[k.pk for k in old])}
        for before in old:
            changes = audit.diff(audit.snapshot(before), audit.snapshot(after[before.pk]))
            if changes:
                action = "revoke_key" if "revoked_at" in changes else "expire_key"
                audit.record(actor, action, after[before.pk], changes)
    return key, raw, sorted(after.values(), key=lambda k: k.created_at)
