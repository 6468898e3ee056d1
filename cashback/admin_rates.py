"""Admin for reference rates: see what conversions use, and record an override with a reason.

Imported by cashback/admin.py. Rates are never edited: an override is a new row, written
(and audited) by `fx.record_override`.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.utils import timezone

from cashback import fx
from cashback.models import Rate
from gateway.exceptions import DomainError


class RateOverrideForm(forms.ModelForm):
    """An admin's rate for one currency and day; the reason is required."""

    reason = forms.CharField(max_length=500, widget=forms.Textarea(attrs={"rows": 3}))

    class Meta:
        model = Rate
        fields = ["currency", "date", "rate", "reason"]
        help_texts = {
            "rate": "Units of the currency per 1 EUR, as the ECB quotes it (e.g. 0.8338 for GBP).",
            "date": "Used for purchases on this day, and after it until a newer rate is published.",
        }

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.errors:
            return data
        # Validate with the service's rules, so the form and the service never disagree.
        try:
            fx.check_override(data["currency"], data["rate"], data["reason"])
        except DomainError as exc:
            field, _, message = exc.detail.partition(": ")
            raise ValidationError({field: message}) from None
        return data


@admin.register(Rate)
class RateAdmin(admin.ModelAdmin):
    list_display = ["currency", "date", "rate", "source", "reason", "created_by", "created_at"]
    list_filter = ["source", "currency"]
    search_fields = ["currency"]
    date_hierarchy = "date"
    form = RateOverrideForm

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        return {"date": timezone.now().date()}

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return []
        return ["currency", "date", "rate", "source", "reason", "created_by", "created_at"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ["currency", "date", "rate", "reason"]
        return self.get_readonly_fields(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Rate, form: Any, change: bool) -> None:
        data = form.cleaned_data
        row = fx.record_override(
            data["currency"], data["date"], data["rate"], data["reason"], request.user
        )
        obj.pk = row.pk
        obj.source, obj.created_by, obj.created_at = row.source, row.created_by, row.created_at
