"""The purchase resource: how the API, webhooks and the drop-in endpoint show a purchase.

It sits next to the model and imports nothing but it, so services (webhook payloads) and
views can both use it without importing each other.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rest_framework import serializers

from cashback.models import Purchase, Status
from gateway.money import Currency, format_plain


def _timestamp(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def purchase_resource(p: Purchase) -> dict[str, Any]:
    """Return the purchase resource as the API shows it (never the partner key)."""
    return {
        "id": str(p.id),
        "order_id": p.order_id,
        "customer": p.customer,
        "description": p.description,
        "address": p.address,
        "currency": p.sent_currency,
        "currency_amount": format(p.sent_amount, "f"),
        "settlement_currency": p.currency,
        "settlement_amount": format(p.currency_amount, "f"),
        "fx": (
            {
                "rate": p.fx_rate,
                "settlement_rate": p.fx_settlement_rate,
                "date": p.fx_rate_date.isoformat() if p.fx_rate_date else None,
                "source": p.fx_rate_source,
            }
            if p.is_converted
            else None
        ),
        "requested_partner_cashback_percentage": format_plain(p.requested_percentage),
        "partner_cashback_percentage": format_plain(p.percentage),
        "purchase_unit": p.purchase_unit,
        "status": p.status,
        "cashback_amount": p.cashback_amount,
        "unit": p.unit,
        "error": p.error,
        "attempts": p.attempts,
        "created_at": _timestamp(p.created_at),
        "updated_at": _timestamp(p.updated_at),
    }


class FxSerializer(serializers.Serializer):
    """The rates a converted purchase used (documentation of `purchase_resource`)."""

    rate = serializers.CharField(
        help_text="Units of `currency` per 1 EUR, the decimal text as published."
    )
    settlement_rate = serializers.CharField(
        allow_null=True,
        help_text="Units of the settlement currency per 1 EUR (USD settlement); null for EUR.",
    )
    date = serializers.DateField(help_text="The date of the reference rate (the older of two).")

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        # `source` would shadow Field.source as a class attribute.
        fields["source"] = serializers.ChoiceField(
            choices=["ECB", "override"], help_text="ECB, or override when an admin set a rate."
        )
        return fields


class PurchaseSerializer(serializers.Serializer):
    """The purchase resource (documentation of `purchase_resource`, which renders it)."""

    id = serializers.UUIDField(help_text="The gateway's id of the purchase.")
    order_id = serializers.CharField(help_text="The merchant's order id, as reported.")
    customer = serializers.CharField(help_text="The customer id, as reported.")
    description = serializers.CharField(allow_blank=True, help_text="Empty when none was given.")
    address = serializers.CharField(
        help_text="The Obyte address (without a QR prefix) or email address paid."
    )
    currency = serializers.CharField(help_text="The currency the merchant sent.")
    currency_amount = serializers.DecimalField(
        max_digits=27,
        decimal_places=9,
        coerce_to_string=True,
        help_text="The amount the merchant sent, in `currency`.",
    )
    settlement_currency = serializers.ChoiceField(
        choices=Currency.choices,
        help_text="The currency sent upstream: `currency` itself, or the merchant's settlement "
        "currency (USD or EUR) when the purchase was converted.",
    )
    settlement_amount = serializers.DecimalField(
        max_digits=27,
        decimal_places=9,
        coerce_to_string=True,
        help_text="The amount sent upstream and on which the partner share is reserved.",
    )
    fx = FxSerializer(
        allow_null=True, help_text="How the purchase was converted; null when it was not."
    )
    requested_partner_cashback_percentage = serializers.DecimalField(
        max_digits=5,
        decimal_places=2,
        help_text="The percentage asked for (the merchant's default when none was given).",
    )
    partner_cashback_percentage = serializers.DecimalField(
        max_digits=5,
        decimal_places=2,
        help_text="The percentage applied (0 when the deposit did not cover it).",
    )
    purchase_unit = serializers.CharField(
        allow_null=True, help_text="The customer's GBYTE payment unit, if reported."
    )
    status = serializers.ChoiceField(
        choices=Status.choices,
        help_text="sent, rejected and failed are final; queued, sending, pending and unknown "
        "are on their way (unknown waits for an admin to reconcile it).",
    )
    cashback_amount = serializers.IntegerField(
        allow_null=True, help_text="Cashback paid, in bytes."
    )
    unit = serializers.CharField(allow_null=True, help_text="The unit that paid the cashback.")
    error = serializers.CharField(
        allow_null=True, help_text="Upstream's message for a rejection, or why it is pending."
    )
    attempts = serializers.IntegerField(help_text="Upstream attempts so far.")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    def to_representation(self, instance: Purchase) -> dict[str, Any]:
        return purchase_resource(instance)
