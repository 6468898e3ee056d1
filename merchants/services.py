"""Writes to merchants and their deposit ledger.

Every balance change runs inside a transaction that locks the balance row it reads
(`select_for_update`), writes one ledger entry and updates the cached balance, so the
balance always equals the sums of its entries and `available` never goes below zero.
"""

from __future__ import annotations

import logging
import secrets
from decimal import Decimal
from typing import Any, Protocol, cast

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.db.models import F
from django.utils.text import slugify

from gateway.exceptions import DomainError, InsufficientDeposit, InvalidInput
from gateway.money import AmountError, check_amount, to_minor
from merchants.models import (
    ApiKey,
    Balance,
    DepositPolicy,
    EntryKind,
    LedgerEntry,
    Merchant,
)

logger = logging.getLogger(__name__)

User = AbstractBaseUser | AnonymousUser | None


class Reserving(Protocol):
    """What the ledger needs of a purchase: its id, merchant, currency and reserved cost."""

    @property
    def pk(self) -> Any: ...

    @property
    def merchant(self) -> Merchant: ...

    @property
    def currency(self) -> str: ...

    @property
    def reserved_minor(self) -> int: ...


def create_merchant(
    name: str,
    *,
    public_id: str | None = None,
    percentage: Decimal = Decimal(0),
    max_percentage: Decimal | None = None,
    policy: str = DepositPolicy.DOWNGRADE,
) -> tuple[Merchant, str]:
    """Create a merchant with one API key; return both, the raw key shown only once."""
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
        _, raw_key = ApiKey.issue(merchant, name="initial")
    return merchant, raw_key


def _unique_public_id(name: str) -> str:
    base = slugify(name)[:30] or "merchant"
    candidate = base
    while Merchant.objects.filter(public_id=candidate).exists():
        candidate = f"{base}-{secrets.token_hex(3)}"
    return candidate


def _locked_balance(merchant: Merchant, currency: str, *, create: bool) -> Balance | None:
    qs = Balance.objects.select_for_update(no_key=True)
    if create:
        balance, _ = qs.get_or_create(merchant=merchant, currency=currency)
        return balance
    return qs.filter(merchant=merchant, currency=currency).first()


def _apply(
    balance: Balance,
    kind: str,
    amount_minor: int,
    *,
    purchase: Reserving | None = None,
    user: User = None,
    memo: str = "",
) -> LedgerEntry:
    """Write one entry and move the locked balance by it (see LedgerEntry for the signs)."""
    available_delta = reserved_delta = 0
    if kind in (EntryKind.DEPOSIT, EntryKind.WITHDRAWAL, EntryKind.ADJUSTMENT):
        available_delta = amount_minor
    elif kind in (EntryKind.RESERVATION, EntryKind.RELEASE):
        available_delta, reserved_delta = amount_minor, -amount_minor
    elif kind == EntryKind.CAPTURE:
        reserved_delta = amount_minor
    Balance.objects.filter(pk=balance.pk).update(
        available_minor=F("available_minor") + available_delta,
        reserved_minor=F("reserved_minor") + reserved_delta,
    )
    balance.available_minor += available_delta
    balance.reserved_minor += reserved_delta
    return LedgerEntry.objects.create(
        merchant_id=balance.merchant_id,
        currency=balance.currency,
        kind=kind,
        amount_minor=amount_minor,
        purchase_id=purchase.pk if purchase is not None else None,
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
) -> LedgerEntry:
    """Record a deposit, withdrawal or adjustment made by an admin.

    Deposits and withdrawals take a positive amount; an adjustment is signed.
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
        balance = _locked_balance(merchant, currency, create=True)
        assert balance is not None
        if balance.available_minor + minor < 0:
            raise InsufficientDeposit(
                f"Available balance is {balance.available} {currency}; it cannot go below zero."
            )
        entry = _apply(balance, kind, minor, user=user, memo=memo)
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


def try_reserve(merchant: Merchant, currency: str, cost_minor: int) -> Balance | None:
    """Lock the balance and return it if it covers `cost_minor`, else None.

    Call inside the transaction that stores the purchase, then `reserve` once it exists.
    """
    balance = _locked_balance(merchant, currency, create=False)
    if balance is None or balance.available_minor < cost_minor:
        return None
    return balance


def reserve(balance: Balance, purchase: Reserving) -> None:
    """Move the purchase's cost from available to reserved (balance locked by try_reserve).

    The caller records on the purchase that it now holds a reservation.
    """
    _apply(balance, EntryKind.RESERVATION, -purchase.reserved_minor, purchase=purchase)


def settle(purchase: Reserving, kind: str, *, user: User = None) -> None:
    """Capture or release the purchase's held reservation (the caller checked that it holds)."""
    balance = _locked_balance(purchase.merchant, purchase.currency, create=False)
    if balance is None:
        raise DomainError("The purchase holds a reservation but its balance row is missing.")
    if kind == EntryKind.CAPTURE:
        _apply(balance, kind, -purchase.reserved_minor, purchase=purchase, user=user)
    elif kind == EntryKind.RELEASE:
        _apply(balance, kind, purchase.reserved_minor, purchase=purchase, user=user)
    else:
        raise ValueError(kind)


def balances_of(merchant: Merchant) -> list[dict[str, object]]:
    """Return the merchant's balances per currency, as the API shows them."""
    return [
        {"currency": b.currency, "available": b.available, "reserved": b.reserved}
        for b in Balance.objects.filter(merchant=merchant).order_by("currency")
    ]
