"""Admin for merchants, API keys and the deposit ledger."""

from __future__ import annotations

from django.contrib import admin

from merchants.models import ApiKey, Balance, LedgerEntry, Merchant


@admin.register(Merchant)
class MerchantAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "public_id",
        "is_active",
        "default_percentage",
        "max_percentage",
        "deposit_policy",
    ]
    search_fields = ["name", "public_id"]
    list_filter = ["is_active", "deposit_policy"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["__str__", "merchant", "name", "created_at", "revoked_at", "last_used_at"]
    readonly_fields = ["prefix", "last_used_at", "last_used_ip"]


@admin.register(LedgerEntry)
class LedgerEntryAdmin(admin.ModelAdmin):
    list_display = ["created_at", "merchant", "kind", "amount", "currency", "memo"]
    list_filter = ["kind", "currency"]

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


admin.site.register(Balance)
