"""Admin for purchases and their attempts."""

from __future__ import annotations

from django.contrib import admin

from cashback.models import Purchase


@admin.register(Purchase)
class PurchaseAdmin(admin.ModelAdmin):
    list_display = ["order_id", "merchant", "status", "currency", "amount_minor", "created_at"]
    list_filter = ["status", "currency"]
    search_fields = ["order_id", "customer"]
    list_select_related = ["merchant"]
