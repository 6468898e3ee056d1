"""Admin forms for merchants, their API keys and hand-made ledger entries."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings

from gateway.exceptions import DomainError
from gateway.money import Currency, format_percent
from merchants import services
from merchants.models import MANUAL_KINDS, ApiKey, LedgerEntry, Merchant
from merchants.webhooks import WebhookUrlError, check_webhook_url


class MerchantAdminForm(forms.ModelForm):
    """A merchant's settings; the webhook URL must be a public https URL."""

    # Webhooks must be https anyway: a bare host name is completed that way.
    webhook_url = forms.URLField(required=False, max_length=500, assume_scheme="https")

    class Meta:
        model = Merchant
        fields = [
            "name",
            "public_id",
            "is_active",
            "default_percentage",
            "max_percentage",
            "deposit_policy",
            "settlement_currency",
            "webhook_url",
        ]
        # The model's help text is written for developers (with `code`); this is for people.
        help_texts = {
            "public_id": "Sent upstream as the merchant field, and the partner of /new_purchase.",
            "max_percentage": "The most partner cashback a purchase may ask for (0 to 100).",
        }

    def clean(self) -> dict[str, Any]:
        """Check the percentages here, with messages for people, not the constraint's name."""
        data = super().clean() or {}
        default, maximum = data.get("default_percentage"), data.get("max_percentage")
        for name, value in (("default_percentage", default), ("max_percentage", maximum)):
            if value is not None and not 0 <= value <= 100:
                self.add_error(name, "Enter a percentage from 0 to 100.")
        if (
            default is not None
            and maximum is not None
            and 0 <= maximum <= 100
            and default > maximum
            and "default_percentage" not in self.errors
        ):
            self.add_error(
                "default_percentage",
                f"The default ({format_percent(default)} %) cannot be above the maximum "
                f"({format_percent(maximum)} %).",
            )
        return data

    def clean_webhook_url(self) -> str:
        url: str = self.cleaned_data["webhook_url"]
        if url:
            try:
                check_webhook_url(url, resolve=not settings.WEBHOOK_ALLOW_PRIVATE)
            except WebhookUrlError as exc:
                raise forms.ValidationError(str(exc)) from None
        return url


class ApiKeyRevokeForm(forms.ModelForm):
    """An existing key, shown read-only, with a box to revoke it."""

    revoke = forms.BooleanField(required=False, help_text="Revoke on save (cannot be undone).")

    class Meta:
        model = ApiKey
        fields: list[str] = []


class ApiKeyIssueForm(forms.ModelForm):
    """A new key: a name and an optional expiry; the key itself is generated and shown once."""

    class Meta:
        model = ApiKey
        fields = ["name", "expires_at"]

    def has_changed(self) -> bool:
        # An empty extra row still issues a key: the name is optional, so any row added on
        # purpose counts.
        return True


class LedgerEntryForm(forms.Form):
    """A deposit, withdrawal or adjustment recorded by an admin through services.record_entry."""

    merchant = forms.ModelChoiceField(queryset=Merchant.objects.all())
    kind = forms.ChoiceField(choices=[(k.value, k.label) for k in MANUAL_KINDS])
    amount = forms.DecimalField(
        max_digits=18,
        decimal_places=9,
        help_text="Deposits and withdrawals are positive; an adjustment is signed.",
    )
    currency = forms.ChoiceField(choices=Currency.choices)
    memo = forms.CharField(max_length=500, required=False)

    def __init__(self, *args: Any, merchant: Merchant | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fixed_merchant = merchant
        if merchant is not None:
            del self.fields["merchant"]

    def record(self, user: Any) -> LedgerEntry | None:
        """Record the entry; on a domain error add it to the form and return None."""
        data = self.cleaned_data
        merchant = self.fixed_merchant or data["merchant"]
        try:
            return services.record_entry(
                merchant,
                data["kind"],
                data["amount"],
                data["currency"],
                memo=data["memo"],
                user=user,
            )
        except DomainError as exc:
            self.add_error(None, exc.detail)
            return None
