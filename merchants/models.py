"""Merchants, their API keys, and the deposit ledger that funds partner cashback."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import operator
import re
import secrets
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from gateway.money import Currency, from_minor


class DepositPolicy(models.TextChoices):
    DOWNGRADE = "downgrade", "Send with 0 % partner cashback"
    REJECT = "reject", "Reject the purchase (402)"


class Merchant(models.Model):
    """A shop served by the processor, identified upstream by its public id."""

    public_id = models.SlugField(
        "public id",
        max_length=40,
        unique=True,
        help_text="Sent upstream in the `merchant` field; also the `partner` of /new_purchase.",
    )
    name = models.CharField(max_length=200)
    is_active = models.BooleanField("active", default=True)
    default_percentage = models.DecimalField(
        "default partner cashback %",
        max_digits=5,
        decimal_places=2,
        default=Decimal("0"),
        help_text="Applied when a purchase does not name a percentage.",
    )
    max_percentage = models.DecimalField(
        "maximum partner cashback %", max_digits=5, decimal_places=2, default=Decimal("10")
    )
    deposit_policy = models.CharField(
        max_length=10,
        choices=DepositPolicy.choices,
        default=DepositPolicy.DOWNGRADE,
        help_text="What to do when the deposit does not cover the partner percentage.",
    )
    settlement_currency = models.CharField(
        max_length=3,
        choices=[(Currency.EUR, "Euro"), (Currency.USD, "US dollar")],
        default=Currency.EUR,
        help_text="Purchases in a currency upstream does not take are converted into this one.",
    )
    webhook_url = models.URLField(blank=True, max_length=500)
    webhook_secret = models.CharField(max_length=80, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(default_percentage__gte=0)
                & Q(default_percentage__lte=models.F("max_percentage"))
                & Q(max_percentage__lte=100),
                name="merchant_percentages_in_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.public_id})"

    def rotate_webhook_secret(self) -> str:
        """Set a new Standard Webhooks secret (`whsec_` + base64 of 32 bytes); return it once."""
        self.webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        return self.webhook_secret

    @property
    def has_legacy_webhook_secret(self) -> bool:
        """Return whether the secret predates Standard Webhooks (and needs rotating)."""
        return bool(self.webhook_secret) and not is_standard_webhook_secret(self.webhook_secret)


# A Standard Webhooks secret as the gateway issues it: `whsec_` and the base64 of 32 bytes.
# Secrets issued before (`whsec_` + 43 URL-safe characters, no padding) never match.
STANDARD_SECRET_REGEX = r"^whsec_[A-Za-z0-9+/]{43}=$"


def is_standard_webhook_secret(secret: str) -> bool:
    """Return whether `secret` is in the `whsec_` base64 form of Standard Webhooks."""
    if not re.fullmatch(STANDARD_SECRET_REGEX, secret):
        return False
    try:
        return len(base64.b64decode(secret[6:], validate=True)) == 32
    except binascii.Error:
        return False


def hash_api_key(raw: str) -> str:
    """Return the keyed hash (HMAC-SHA256 with the server secret) that identifies a key."""
    secret = settings.API_KEY_HMAC_SECRET.encode()
    return hmac.new(secret, raw.encode(), hashlib.sha256).hexdigest()


API_KEY_PREFIX = "cbk_"
_PREFIX_LENGTH = 10


def parse_api_key(raw: str) -> str | None:
    """Return the lookup prefix of a well-formed key, or None."""
    if not raw.startswith(API_KEY_PREFIX) or len(raw) != len(API_KEY_PREFIX) + _PREFIX_LENGTH + 44:
        return None
    return raw[len(API_KEY_PREFIX) : len(API_KEY_PREFIX) + _PREFIX_LENGTH]


class ApiKeyQuerySet(models.QuerySet["ApiKey"]):
    def usable(self) -> ApiKeyQuerySet:
        now = timezone.now()
        return self.filter(revoked_at__isnull=True).filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=now)
        )


class ApiKey(models.Model):
    """A merchant's API key, stored only as a keyed hash behind a short lookup prefix."""

    merchant = models.ForeignKey(Merchant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True, default="")
    prefix = models.CharField(max_length=_PREFIX_LENGTH, unique=True, editable=False)
    hashed_key = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_ip = models.GenericIPAddressField(null=True, blank=True, editable=False)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{API_KEY_PREFIX}{self.prefix}…"

    @classmethod
    def issue(cls, merchant: Merchant, *, name: str = "", **fields: Any) -> tuple[ApiKey, str]:
        """Create a key for `merchant` and return it with the raw key, shown only once."""
        prefix = secrets.token_hex(_PREFIX_LENGTH // 2)
        raw = f"{API_KEY_PREFIX}{prefix}{secrets.token_urlsafe(33)}"
        key = cls.objects.create(
            merchant=merchant, name=name, prefix=prefix, hashed_key=hash_api_key(raw), **fields
        )
        return key, raw

    @property
    def is_usable(self) -> bool:
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > timezone.now()


class Balance(models.Model):
    """A merchant's cached balance in one currency, kept equal to the sums of its ledger.

    Locked (`select_for_update`) by every change, so concurrent purchases cannot overdraw.
    """

    merchant = models.ForeignKey(Merchant, on_delete=models.CASCADE, related_name="balances")
    currency = models.CharField(max_length=5, choices=Currency.choices)
    available_minor = models.BigIntegerField(default=0)
    reserved_minor = models.BigIntegerField(default=0)
    # Set when `balance.low` was sent, cleared when the runway is long again: once per crossing.
    runway_low = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["merchant", "currency"], name="balance_per_currency"),
            models.CheckConstraint(
                condition=Q(available_minor__gte=0) & Q(reserved_minor__gte=0),
                name="balance_never_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.available} {self.currency}"

    @property
    def available(self) -> Decimal:
        return from_minor(self.available_minor, self.currency)

    @property
    def reserved(self) -> Decimal:
        return from_minor(self.reserved_minor, self.currency)


class EntryKind(models.TextChoices):
    DEPOSIT = "deposit", "Deposit"
    WITHDRAWAL = "withdrawal", "Withdrawal"
    ADJUSTMENT = "adjustment", "Adjustment"
    RESERVATION = "reservation", "Reservation"
    RELEASE = "release", "Release"
    CAPTURE = "capture", "Capture"


# Kinds an admin records by hand; the others are written by the purchase path only.
MANUAL_KINDS = (EntryKind.DEPOSIT, EntryKind.WITHDRAWAL, EntryKind.ADJUSTMENT)


@dataclass(frozen=True)
class Effect:
    """How an entry of one kind moves its balance: by `amount × factor` on each side."""

    available: int
    reserved: int
    sign: int  # the sign `amount_minor` must have; 0: any sign, never zero


# The one table of what each kind does: used by the writes, check_ledger and the constraint.
ENTRY_EFFECTS: dict[str, Effect] = {
    EntryKind.DEPOSIT: Effect(available=1, reserved=0, sign=1),
    EntryKind.WITHDRAWAL: Effect(available=1, reserved=0, sign=-1),
    EntryKind.ADJUSTMENT: Effect(available=1, reserved=0, sign=0),
    EntryKind.RESERVATION: Effect(available=1, reserved=-1, sign=-1),
    EntryKind.RELEASE: Effect(available=1, reserved=-1, sign=1),
    EntryKind.CAPTURE: Effect(available=0, reserved=1, sign=-1),
}


def _sign_matches_kind() -> Q:
    def rule(kind: str, effect: Effect) -> Q:
        if effect.sign > 0:
            return Q(kind=kind, amount_minor__gt=0)
        if effect.sign < 0:
            return Q(kind=kind, amount_minor__lt=0)
        return Q(kind=kind) & ~Q(amount_minor=0)

    return functools.reduce(operator.or_, (rule(k, e) for k, e in ENTRY_EFFECTS.items()))


class AppendOnlyQuerySet(models.QuerySet["LedgerEntry"]):
    def update(self, **kwargs: Any) -> int:
        raise TypeError("Ledger entries are append-only; record a correcting entry instead.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise TypeError("Ledger entries are append-only; record a correcting entry instead.")


class LedgerEntry(models.Model):
    """One append-only movement of a merchant's deposit in one currency.

    `amount_minor` is signed, in minor units of `currency`; ENTRY_EFFECTS says how each kind
    moves `available` and `reserved` (a reservation is negative and moves the amount from
    available to reserved; a capture is negative and pays the reserved amount out).
    """

    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="ledger")
    currency = models.CharField(max_length=5, choices=Currency.choices)
    kind = models.CharField(max_length=12, choices=EntryKind.choices)
    amount_minor = models.BigIntegerField()
    purchase = models.ForeignKey(
        "cashback.Purchase",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="ledger_entries",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Empty when the system made the entry.",
    )
    memo = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "ledger entries"
        indexes = [
            models.Index(fields=["merchant", "-created_at", "-id"], name="ledger_by_merchant")
        ]
        constraints = [
            models.CheckConstraint(
                condition=_sign_matches_kind(),
                name="ledger_amount_sign_matches_kind",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.amount} {self.currency}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise TypeError("Ledger entries are append-only; record a correcting entry instead.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise TypeError("Ledger entries are append-only; record a correcting entry instead.")

    @property
    def amount(self) -> Decimal:
        return from_minor(self.amount_minor, self.currency)
