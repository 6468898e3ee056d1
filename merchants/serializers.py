"""Serializers of the merchant's own resources: settings, balances, ledger."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import serializers

from gateway.money import Currency, from_minor
from merchants.models import EntryKind, LedgerEntry, Merchant
from merchants.webhooks import WebhookUrlError, check_webhook_url


class MerchantSerializer(serializers.ModelSerializer):
    """The caller's own settings; only `webhook_url` can be changed."""

    merchant_id = serializers.CharField(
        source="public_id",
        read_only=True,
        help_text="Your public id: sent upstream as `merchant`; the `partner` of /new_purchase.",
    )
    default_partner_cashback_percentage = serializers.DecimalField(
        source="default_percentage", max_digits=5, decimal_places=2, read_only=True
    )
    max_partner_cashback_percentage = serializers.DecimalField(
        source="max_percentage", max_digits=5, decimal_places=2, read_only=True
    )
    rotate_webhook_secret = serializers.BooleanField(
        write_only=True,
        required=False,
        help_text="true: replace the webhook signing secret; the new one is in this answer only.",
    )
    webhook_secret = serializers.SerializerMethodField(
        help_text="Shown only in the answer that created or rotated it; null otherwise."
    )

    webhook_secret_legacy = serializers.BooleanField(
        source="has_legacy_webhook_secret",
        read_only=True,
        help_text="true: the secret predates Standard Webhooks; rotate it to get a `whsec_` "
        "secret (deliveries then stop carrying X-Cashback-Signature).",
    )

    class Meta:
        model = Merchant
        fields = [
            "merchant_id",
            "name",
            "default_partner_cashback_percentage",
            "max_partner_cashback_percentage",
            "deposit_policy",
            "settlement_currency",
            "webhook_url",
            "webhook_secret",
            "webhook_secret_legacy",
            "rotate_webhook_secret",
        ]
        read_only_fields = ["name", "deposit_policy", "settlement_currency"]

    def get_webhook_secret(self, obj: Merchant) -> str | None:
        return self.context.get("new_webhook_secret")

    def validate_webhook_url(self, value: str) -> str:
        if value:
            try:
                check_webhook_url(value, resolve=not settings.WEBHOOK_ALLOW_PRIVATE)
            except WebhookUrlError as exc:
                raise serializers.ValidationError(str(exc)) from None
        return value


class BalanceSerializer(serializers.Serializer):
    currency = serializers.ChoiceField(choices=Currency.choices)
    available = serializers.DecimalField(
        max_digits=27, decimal_places=9, help_text="Free to fund partner cashback."
    )
    reserved = serializers.DecimalField(
        max_digits=27,
        decimal_places=9,
        help_text="Held for purchases whose outcome is not final yet.",
    )

    def to_representation(self, instance: dict[str, Any]) -> dict[str, Any]:
        return {
            "currency": instance["currency"],
            "available": format(instance["available"], "f"),
            "reserved": format(instance["reserved"], "f"),
        }


class BalancesSerializer(serializers.Serializer):
    balances = BalanceSerializer(many=True)


class LedgerEntrySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=EntryKind.choices)
    currency = serializers.ChoiceField(choices=Currency.choices)
    amount = serializers.DecimalField(max_digits=27, decimal_places=9, help_text="Signed.")
    order_id = serializers.CharField(
        allow_null=True, help_text="The purchase the entry concerns; null for deposits."
    )
    memo = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()

    def to_representation(self, e: LedgerEntry) -> dict[str, Any]:
        return {
            "id": e.id,
            "kind": e.kind,
            "currency": e.currency,
            "amount": format(from_minor(e.amount_minor, e.currency), "f"),
            "order_id": e.purchase.order_id if e.purchase is not None else None,
            "memo": e.memo,
            "created_at": serializers.DateTimeField().to_representation(e.created_at),
        }
