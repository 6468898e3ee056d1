"""Forms of the admin actions that resolve a purchase by hand."""

from __future__ import annotations

from django import forms
from django.contrib.admin import helpers

from cashback.validators import is_valid_unit


class _ActionForm(forms.Form):
    """An intermediate admin action form; it carries the selected rows along."""

    action = forms.CharField(widget=forms.HiddenInput)
    select_across = forms.CharField(widget=forms.HiddenInput, required=False, initial="0")
    note = forms.CharField(
        max_length=500, required=False, help_text="Why: what you checked, and where."
    )

    selected_field = helpers.ACTION_CHECKBOX_NAME


class MarkSentForm(_ActionForm):
    """Upstream did pay the purchase: the amount in bytes and the unit it paid with."""

    cashback_amount = forms.IntegerField(min_value=0, label="cashback amount (bytes)")
    unit = forms.CharField(max_length=44, min_length=44, label="unit")

    def clean_unit(self) -> str:
        unit: str = self.cleaned_data["unit"].strip()
        if not is_valid_unit(unit):
            raise forms.ValidationError("Enter the 44-character base64 id of the unit.")
        return unit


class MarkRejectedForm(_ActionForm):
    """Upstream did not pay the purchase: the error it gave, or what the admin found."""

    error = forms.CharField(max_length=1000, label="error", widget=forms.Textarea)
