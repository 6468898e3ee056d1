"""Forms of the admin actions that resolve a purchase by hand."""

from __future__ import annotations

from django import forms
from django.contrib.admin import helpers
from django.db.models import CharField, Model

from cashback.models import Purchase, PurchaseAction
from cashback.validators import is_valid_unit
from gateway.money import MAX_MINOR


def _length(model: type[Model], field: str) -> int:
    """Return the stored length of a text field: the form accepts no more than is kept."""
    column = model._meta.get_field(field)
    assert isinstance(column, CharField) and column.max_length is not None
    return column.max_length


class _ActionForm(forms.Form):
    """An intermediate admin action form; it carries the selected rows along."""

    action = forms.CharField(widget=forms.HiddenInput)
    select_across = forms.CharField(widget=forms.HiddenInput, required=False, initial="0")
    note = forms.CharField(
        max_length=_length(PurchaseAction, "note"),
        required=False,
        help_text="Why: what you checked, and where.",
    )

    selected_field = helpers.ACTION_CHECKBOX_NAME


class MarkSentForm(_ActionForm):
    """Upstream did pay the purchase: the amount in bytes and the unit it paid with."""

    # The note is optional: it comes after what the form is about.
    field_order = ["cashback_amount", "unit", "note"]

    # Stored as a signed 64-bit integer of bytes.
    cashback_amount = forms.IntegerField(
        min_value=0,
        max_value=MAX_MINOR,
        label="cashback amount (bytes)",
        help_text="As upstream answered it, in bytes (1 GBYTE = 1,000,000,000 bytes).",
    )
    unit = forms.CharField(
        max_length=_length(Purchase, "unit"),
        min_length=_length(Purchase, "unit"),
        label="unit",
        help_text="The 44-character id of the unit that paid it.",
    )

    def clean_unit(self) -> str:
        unit: str = self.cleaned_data["unit"].strip()
        if not is_valid_unit(unit):
            raise forms.ValidationError("Enter the 44-character base64 id of the unit.")
        return unit


class MarkRejectedForm(_ActionForm):
    """Upstream did not pay the purchase: the error it gave, or what the admin found."""

    field_order = ["error", "note"]

    error = forms.CharField(
        max_length=_length(Purchase, "error"),
        label="error",
        widget=forms.Textarea(attrs={"rows": 3}),
    )
