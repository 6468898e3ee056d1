"""Purchases reported by merchants, every upstream attempt, and merchant webhook deliveries.

The purchase row is the queue: its status, lease and next attempt time are the whole state
of its delivery upstream, so any number of workers can share it.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from gateway.money import Currency, from_minor
from merchants.models import Merchant


class Status(models.TextChoices):
    QUEUED = "queued", "Queued"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    REJECTED = "rejected", "Rejected"
    PENDING = "pending", "Pending retry"
    UNKNOWN = "unknown", "Unknown: reconcile"
    FAILED = "failed", "Failed"


FINAL_STATUSES = (Status.SENT, Status.REJECTED, Status.FAILED)
OPEN_STATUSES = (Status.QUEUED, Status.SENDING, Status.PENDING, Status.UNKNOWN)
# What the worker claims when `next_attempt_at` comes (cashback.lifecycle's table says so too).
DUE_STATUSES = (Status.QUEUED, Status.PENDING)


class Hold(models.TextChoices):
    """Where the purchase's partner-funded reservation stands in the ledger."""

    NONE = "none", "Nothing reserved"
    HELD = "held", "Held"
    CAPTURED = "captured", "Captured"
    RELEASED = "released", "Released"


class Purchase(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No index of its own: every index that starts with merchant_id (the unique order ids,
    # purchase_by_merchant) serves its look-ups, and each index costs every write of a row.
    merchant = models.ForeignKey(
        Merchant, on_delete=models.PROTECT, related_name="purchases", db_index=False
    )
    order_id = models.CharField(max_length=128)
    customer = models.CharField(max_length=255)
    description = models.CharField(max_length=1000, blank=True, default="")
    address = models.CharField(max_length=254)
    # What upstream receives: the currency as sent, or the merchant's settlement currency
    # when the purchase was converted (then `original_*` and `fx_*` say from what and how).
    currency = models.CharField(max_length=5, choices=Currency.choices)
    amount_minor = models.BigIntegerField(help_text="The amount sent upstream, in minor units")
    requested_percentage = models.DecimalField(max_digits=5, decimal_places=2)
    percentage = models.DecimalField(
        max_digits=5, decimal_places=2, help_text="The partner percentage sent upstream."
    )
    purchase_unit = models.CharField(max_length=44, null=True, blank=True)

    # A converted purchase (docs/currencies.md): what the merchant sent, and the rates used.
    # All empty when upstream took the currency as it was.
    original_currency = models.CharField(max_length=5, null=True, blank=True)
    original_amount_minor = models.BigIntegerField(
        null=True, blank=True, help_text="The amount the merchant sent, in its minor units"
    )
    fx_rate = models.CharField(
        max_length=20, null=True, blank=True, help_text="original currency per 1 EUR"
    )
    fx_settlement_rate = models.CharField(
        max_length=20, null=True, blank=True, help_text="settlement currency per 1 EUR"
    )
    fx_rate_date = models.DateField(null=True, blank=True)
    fx_rate_source = models.CharField(max_length=8, null=True, blank=True)

    status = models.CharField(max_length=8, choices=Status.choices, default=Status.QUEUED)
    cashback_amount = models.BigIntegerField(null=True, blank=True, help_text="bytes")
    unit = models.CharField(max_length=44, null=True, blank=True)
    error = models.CharField(max_length=1000, null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)

    # The partner-funded cost, in minor units of `currency`, and where its hold stands.
    reserved_minor = models.BigIntegerField(default=0)
    hold = models.CharField(max_length=8, choices=Hold.choices, default=Hold.NONE)

    lease_until = models.DateTimeField(null=True, blank=True)
    # When the worker may take it: `queued` after a grace period, `pending` after a backoff.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # Past this, a `pending` purchase is `failed` (24 h from creation or from an admin retry).
    retry_deadline = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["merchant", "order_id"], name="purchase_order_id_unique"
            ),
            models.UniqueConstraint(
                fields=["merchant", "purchase_unit"],
                condition=Q(purchase_unit__isnull=False),
                name="purchase_unit_unique",
            ),
            models.CheckConstraint(
                condition=Q(amount_minor__gt=0), name="purchase_amount_positive"
            ),
            models.CheckConstraint(
                condition=Q(reserved_minor__gte=0), name="purchase_reserved_not_negative"
            ),
        ]
        indexes = [
            # The merchant's list, newest first, and its status filter.
            models.Index(fields=["merchant", "-created_at", "-id"], name="purchase_by_merchant"),
            # The worker's due rows in the order it claims them, so a claim reads the few it
            # takes however long the queue (status in the key would make it read them all).
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status__in=DUE_STATUSES),
                name="purchase_due",
            ),
            # The lease sweep's `sending` purchases.
            models.Index(
                fields=["lease_until"], condition=Q(status=Status.SENDING), name="purchase_sending"
            ),
            models.Index(
                fields=["status", "created_at"],
                condition=Q(status__in=["unknown", "pending"]),
                name="purchase_needs_attention",
            ),
            # The `failed` gauge of /metrics counts these without reading the table.
            models.Index(
                fields=["status", "updated_at"],
                condition=Q(status="failed"),
                name="purchase_failed",
            ),
        ]
        permissions = [("export_payouts", "Can export payout reports and see the dashboard")]

    def __str__(self) -> str:
        # Names people know, never the internal id (the merchant is fetched if not loaded).
        return f"{self.order_id} of {self.merchant.public_id}"

    @property
    def currency_amount(self) -> Decimal:
        return from_minor(self.amount_minor, self.currency)

    @property
    def is_converted(self) -> bool:
        return self.original_currency is not None

    @property
    def sent_currency(self) -> str:
        """Return the currency the merchant sent (before any conversion)."""
        return self.original_currency or self.currency

    @property
    def sent_amount_minor(self) -> int:
        """Return the amount the merchant sent, in minor units of `sent_currency`."""
        if self.original_amount_minor is None:
            return self.amount_minor
        return self.original_amount_minor

    @property
    def sent_amount(self) -> Decimal:
        return from_minor(self.sent_amount_minor, self.sent_currency)

    @property
    def reserved_amount(self) -> Decimal:
        return from_minor(self.reserved_minor, self.currency)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


class Outcome(models.TextChoices):
    """How one upstream attempt ended, as the client classified it."""

    OK = "ok", "ok"
    REJECTED = "rejected", "rejected by upstream"
    NOT_SENT = "not_sent", "surely not taken effect"
    AUTH_FAILED = "auth_failed", "authentication failed"
    AMBIGUOUS = "ambiguous", "may have taken effect"


class Attempt(models.Model):
    """One upstream call for a purchase. Never holds the partner key."""

    purchase = models.ForeignKey(Purchase, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField()
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    outcome = models.CharField(max_length=12, choices=Outcome.choices)
    error = models.CharField(max_length=1000, blank=True, default="")
    worker = models.CharField(max_length=100, blank=True, default="")
    # The answer as received (bounded and redacted by the client), and the exact amount and
    # unit of an `ok` answer, kept even when the purchase could not take them.
    response_excerpt = models.TextField(blank=True, default="")
    # Decimal digits as text: exact at any size on both databases (SQLite's numeric is not).
    cashback_amount = models.TextField(null=True, blank=True, help_text="bytes, as answered")
    unit = models.TextField(null=True, blank=True)
    # Whether this attempt's outcome became the purchase's status; False for an answer that
    # arrived after the purchase moved on (an admin's decision, a later attempt).
    applied = models.BooleanField(default=True)

    class Meta:
        ordering = ["purchase", "number"]

    def __str__(self) -> str:
        return f"attempt {self.number}: {self.outcome}"


class PurchaseAction(models.Model):
    """An admin's action on a purchase: who, when, what, and the status before and after."""

    purchase = models.ForeignKey(Purchase, on_delete=models.CASCADE, related_name="actions")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+"
    )
    action = models.CharField(max_length=20)
    status_before = models.CharField(max_length=8, choices=Status.choices)
    status_after = models.CharField(max_length=8, choices=Status.choices)
    note = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.action} by {self.user}"


class Alert(models.Model):
    """A condition an admin must see, such as upstream refusing the partner credentials."""

    class Kind(models.TextChoices):
        AUTH_FAILED = "auth_failed", "Upstream refused the partner credentials"
        UPSTREAM_PAID_UNRECORDED = (
            "upstream_paid_unrecorded",
            "Upstream paid a purchase recorded otherwise",
        )
        RUNWAY_LOW = "runway_low", "A merchant's deposit runs out soon"
        WORKER_SILENT = "worker_silent", "No worker has reported in"

    kind = models.CharField(max_length=40, choices=Kind.choices)
    # What the alert is about: a purchase id, a merchant's public id; blank when global.
    subject = models.CharField(max_length=100, blank=True, default="")
    message = models.CharField(max_length=500)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    count = models.PositiveIntegerField(default=1)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["kind", "subject"], name="alert_kind_subject_unique")
        ]

    def __str__(self) -> str:
        label = self.get_kind_display()
        return f"{label}: {self.subject}" if self.subject else label


class WebhookDelivery(models.Model):
    """A merchant webhook to deliver: written with the status change, sent by the worker."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERING = "delivering", "Delivering"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    # Empty for events about the merchant itself (balance.low).
    purchase = models.ForeignKey(
        Purchase, null=True, blank=True, on_delete=models.CASCADE, related_name="webhooks"
    )
    merchant = models.ForeignKey(Merchant, on_delete=models.CASCADE, related_name="webhooks")
    event = models.CharField(max_length=40)
    payload = models.JSONField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    lease_until = models.DateTimeField(null=True, blank=True)
    last_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "webhook deliveries"
        indexes = [
            models.Index(
                fields=["state", "next_attempt_at"],
                condition=Q(state__in=["pending", "delivering"]),
                name="webhook_due",
            ),
        ]

    def __str__(self) -> str:
        if self.purchase is None:
            return f"{self.event} for merchant {self.merchant_id}"
        return f"{self.event} for {self.purchase.order_id}"


class Rate(models.Model):
    """A reference rate: units of `currency` per 1 EUR on `date`, as the ECB published it.

    `rate` is the published decimal text itself ("0.8338"), read with `Decimal(text)`, never
    through float. An admin's override is another row (source `override`) with a reason; on
    its date it wins over the ECB's rate. Rows are never edited.
    """

    class Source(models.TextChoices):
        ECB = "ECB", "ECB reference rate"
        OVERRIDE = "override", "Override by an admin"

    currency = models.CharField(max_length=3)
    date = models.DateField()
    rate = models.CharField(max_length=20, help_text="units of the currency per 1 EUR")
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.ECB)
    reason = models.CharField(max_length=500, blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["currency", "-date", "-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["currency", "date"],
                condition=Q(source="ECB"),
                name="rate_ecb_once_per_day",
            ),
        ]
        indexes = [models.Index(fields=["currency", "-date"], name="rate_lookup")]

    def __str__(self) -> str:
        return f"{self.currency} {self.rate} per EUR on {self.date} ({self.source})"

    @property
    def value(self) -> Decimal:
        return Decimal(self.rate)
