"""Admin for merchants, API keys, balances and the deposit ledger.

Writes go through the same code as the rest of the gateway (ApiKey.issue,
services.record_entry), and every change is written to the audit log.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import QuerySet, Sum
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from audit import services as audit
from audit.admin import AuditedModelAdmin
from gateway.money import from_minor
from merchants.forms import ApiKeyIssueForm, ApiKeyRevokeForm, LedgerEntryForm, MerchantAdminForm
from merchants.models import ApiKey, Balance, EntryKind, LedgerEntry, Merchant

# The window over which a merchant's spending rate is measured for the runway flag.
RATE_WINDOW = timedelta(days=7)


def daily_rates(merchant_ids: list[int], now: Any = None) -> dict[int, dict[str, int]]:
    """Return {merchant id: {currency: minor units reserved per day}} over the last 7 days.

    Reservations net of releases: what actually left `available` for purchases. (Captures
    only move money out of `reserved`, so counting them too would count a purchase twice.)
    One aggregate query for all the merchants of a page.
    """
    since = (now or timezone.now()) - RATE_WINDOW
    rows = (
        LedgerEntry.objects.filter(
            merchant_id__in=merchant_ids,
            kind__in=[EntryKind.RESERVATION, EntryKind.RELEASE],
            created_at__gte=since,
        )
        .values("merchant_id", "currency")
        .annotate(total=Sum("amount_minor"))
        .order_by()
    )
    rates: dict[int, dict[str, int]] = {}
    for row in rows:
        spent = -row["total"]
        if spent > 0:
            # Rounded up: never report a longer runway than the merchant has.
            rates.setdefault(row["merchant_id"], {})[row["currency"]] = -(-spent // 7)
    return rates


class MerchantChangeList(ChangeList):
    """Attach each merchant's daily spending rates to the page, in one query."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        merchants = list(self.result_list)
        rates = daily_rates([m.pk for m in merchants])
        for merchant in merchants:
            merchant.daily_rates = rates.get(merchant.pk, {})


class ApiKeyInline(admin.TabularInline):
    """The merchant's keys, read-only except for a box that revokes one."""

    model = ApiKey
    form = ApiKeyRevokeForm
    fields = [
        "label",
        "name",
        "created_at",
        "expires_at",
        "revoked_at",
        "last_used_at",
        "last_used_ip",
        "revoke",
    ]
    readonly_fields = [
        "label",
        "name",
        "created_at",
        "expires_at",
        "revoked_at",
        "last_used_at",
        "last_used_ip",
    ]
    extra = 0
    can_delete = False
    verbose_name = "API key"
    verbose_name_plural = "API keys"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="key")
    def label(self, obj: ApiKey) -> str:
        return str(obj)


class NewApiKeyInline(admin.TabularInline):
    """Rows that issue new keys; each raw key is shown once, in a message."""

    model = ApiKey
    form = ApiKeyIssueForm
    fields = ["name", "expires_at"]
    extra = 0
    can_delete = False
    verbose_name = "new API key"
    verbose_name_plural = "issue new API keys"

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiKey]:
        return super().get_queryset(request).none()

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_add_permission(request, obj)


@admin.register(Merchant)
class MerchantAdmin(AuditedModelAdmin):
    form = MerchantAdminForm
    list_display = [
        "name",
        "public_id",
        "is_active",
        "default_percentage",
        "max_percentage",
        "deposit_policy",
        "balances",
        "runway",
    ]
    search_fields = ["name", "public_id"]
    list_filter = ["is_active", "deposit_policy"]
    readonly_fields = ["webhook_secret_state", "balances", "created_at", "updated_at"]
    fieldsets = [
        (
            None,
            {"fields": ["name", "public_id", "is_active"]},
        ),
        (
            "Partner cashback",
            {"fields": ["default_percentage", "max_percentage", "deposit_policy", "balances"]},
        ),
        ("Webhooks", {"fields": ["webhook_url", "webhook_secret_state"]}),
        (None, {"fields": ["created_at", "updated_at"]}),
    ]
    inlines = [ApiKeyInline, NewApiKeyInline]
    actions = ["rotate_webhook_secret"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Merchant]:
        return super().get_queryset(request).prefetch_related("balances")

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return MerchantChangeList

    def get_urls(self) -> list[Any]:
        return [
            path(
                "<path:object_id>/record-entry/",
                self.admin_site.admin_view(self.record_entry_view),
                name="merchants_merchant_record_entry",
            ),
            *super().get_urls(),
        ]

    @admin.display(description="balances (available / reserved)")
    def balances(self, obj: Merchant) -> str:
        if obj.pk is None:
            return "–"
        rows = sorted(obj.balances.all(), key=lambda b: b.currency)
        if not rows:
            return "–"
        return format_html_join(
            ", ", "{} {} / {}", ((b.available, b.currency, b.reserved) for b in rows)
        )

    @admin.display(description="runs out within a day")
    def runway(self, obj: Merchant) -> str:
        rates: dict[str, int] = getattr(obj, "daily_rates", {})
        short = [
            b.currency for b in obj.balances.all() if rates.get(b.currency, 0) > b.available_minor
        ]
        if not short:
            return ""
        return format_html(
            '<strong style="color:#ba2121">⚠ {}</strong>',
            ", ".join(f"{c} (uses {from_minor(rates[c], c)}/day)" for c in sorted(short)),
        )

    @admin.display(description="webhook secret")
    def webhook_secret_state(self, obj: Merchant) -> str:
        # Never the secret itself: it is shown once, when it is made.
        return "set" if obj.webhook_secret else "not set"

    def save_model(self, request: HttpRequest, obj: Merchant, form: Any, change: bool) -> None:
        new_secret = None
        if obj.webhook_url and not obj.webhook_secret:
            new_secret = obj.rotate_webhook_secret()
        super().save_model(request, obj, form, change)
        if new_secret:
            _show_secret(request, obj, new_secret)

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        if issubclass(formset.form, ApiKeyIssueForm):
            self._issue_keys(request, form.instance, formset)
        elif issubclass(formset.form, ApiKeyRevokeForm):
            self._revoke_keys(request, formset)
        else:
            super().save_formset(request, form, formset, change)

    def _issue_keys(self, request: HttpRequest, merchant: Merchant, formset: Any) -> None:
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        for key_form in formset.forms:
            data = key_form.cleaned_data
            key, raw = ApiKey.issue(
                merchant,
                name=data.get("name", ""),
                expires_at=data.get("expires_at"),
                created_by=request.user,
            )
            formset.new_objects.append(key)
            audit.record(
                request.user,
                "issue_key",
                key,
                {
                    "merchant": [None, merchant.public_id],
                    "name": [None, key.name],
                    "expires_at": [None, key.expires_at],
                },
            )
            messages.warning(
                request,
                f"New API key “{key.name or key}” for {merchant.public_id}: {raw} — "
                "copy it now; it is stored only as a hash and will not be shown again.",
            )

    def _revoke_keys(self, request: HttpRequest, formset: Any) -> None:
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        for key_form in formset.forms:
            if key_form.cleaned_data.get("revoke"):
                key = key_form.instance
                if revoke_key(request, key):
                    formset.changed_objects.append((key, ["revoked_at"]))

    @admin.action(description="Rotate webhook secret (shows the new secret once)")
    def rotate_webhook_secret(self, request: HttpRequest, queryset: QuerySet[Merchant]) -> None:
        for merchant in queryset:
            with transaction.atomic():
                secret = merchant.rotate_webhook_secret()
                merchant.save(update_fields=["webhook_secret", "updated_at"])
                audit.record(
                    request.user,
                    "rotate_webhook_secret",
                    merchant,
                    {"webhook_secret": ["", ""]},
                )
            _show_secret(request, merchant, secret)

    def record_entry_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Record a deposit, withdrawal or adjustment for one merchant."""
        merchant = self.get_object(request, object_id)
        if merchant is None:
            raise Http404("No such merchant.")
        return record_entry_page(self.admin_site, request, merchant)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        extra_context = {
            **(extra_context or {}),
            "can_record_entry": request.user.has_perm("merchants.add_ledgerentry"),
        }
        return super().change_view(request, object_id, form_url, extra_context)


def _show_secret(request: HttpRequest, merchant: Merchant, secret: str) -> None:
    messages.warning(
        request,
        f"New webhook signing secret for {merchant.public_id}: {secret} — copy it now; "
        "it will not be shown again.",
    )


def revoke_key(request: HttpRequest, key: ApiKey) -> bool:
    """Revoke a usable key and record who did it; return whether it was revoked now."""
    now = timezone.now()
    with transaction.atomic():
        revoked = ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=now)
        if revoked:
            key.revoked_at = now
            audit.record(request.user, "revoke_key", key, {"revoked_at": [None, now]})
    if revoked:
        messages.success(request, f"API key {key} was revoked.")
    return bool(revoked)


def record_entry_page(
    admin_site: admin.AdminSite, request: HttpRequest, merchant: Merchant | None
) -> HttpResponse:
    """Show and handle the form that records a ledger entry through services.record_entry."""
    if not request.user.has_perm("merchants.add_ledgerentry"):
        raise PermissionDenied
    form = LedgerEntryForm(request.POST or None, merchant=merchant)
    if request.method == "POST" and form.is_valid():
        entry = form.record(request.user)
        if entry is not None:
            audit.record(
                request.user,
                "record_entry",
                entry,
                {
                    "merchant": [None, entry.merchant.public_id],
                    "kind": [None, entry.kind],
                    "amount": [None, entry.amount],
                    "currency": [None, entry.currency],
                    "memo": [None, entry.memo],
                },
            )
            messages.success(
                request,
                f"Recorded {entry.get_kind_display().lower()} of {entry.amount} "
                f"{entry.currency} for {entry.merchant.public_id}.",
            )
            target = (
                reverse("admin:merchants_merchant_change", args=[merchant.pk])
                if merchant is not None
                else reverse("admin:merchants_ledgerentry_changelist")
            )
            return HttpResponseRedirect(target)
    balances = list(Balance.objects.filter(merchant=merchant)) if merchant else []
    context = {
        **admin_site.each_context(request),
        "title": f"Record a ledger entry for {merchant}" if merchant else "Record a ledger entry",
        "form": form,
        "merchant": merchant,
        "balances": balances,
        "opts": LedgerEntry._meta,
        "merchant_opts": Merchant._meta,
    }
    return TemplateResponse(request, "admin/merchants/record_entry.html", context)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """All keys, read-only; issue keys on the merchant's page, revoke here or there."""

    list_display = [
        "__str__",
        "merchant",
        "name",
        "created_at",
        "expires_at",
        "revoked_at",
        "last_used_at",
        "last_used_ip",
    ]
    list_filter = ["revoked_at", "created_at"]
    search_fields = ["merchant__name", "merchant__public_id", "name", "prefix"]
    list_select_related = ["merchant"]
    readonly_fields = (
        "merchant",
        "name",
        "prefix",
        "created_at",
        "created_by",
        "expires_at",
        "revoked_at",
        "last_used_at",
        "last_used_ip",
    )
    fields = readonly_fields
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Keys are revoked, never deleted, so the audit trail keeps pointing at them.
        return False

    @admin.action(description="Revoke selected API keys", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for key in queryset.filter(revoked_at__isnull=True):
            revoke_key(request, key)


@admin.register(Balance)
class BalanceAdmin(admin.ModelAdmin):
    list_display = ["merchant", "currency", "available", "reserved", "updated_at"]
    list_filter = ["currency"]
    search_fields = ["merchant__name", "merchant__public_id"]
    list_select_related = ["merchant"]
    readonly_fields = ("merchant", "currency", "available", "reserved", "updated_at")
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Balances move only through ledger entries.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(LedgerEntry)
class LedgerEntryAdmin(admin.ModelAdmin):
    """Append-only: entries are listed and added, never changed or deleted."""

    list_display = [
        "created_at",
        "merchant",
        "kind",
        "signed_amount",
        "currency",
        "order_id",
        "created_by",
        "memo",
    ]
    list_filter = ["kind", "currency", "merchant", "created_at"]
    search_fields = ["merchant__name", "merchant__public_id", "purchase__order_id", "memo"]
    list_select_related = ["merchant", "purchase", "created_by"]
    date_hierarchy = "created_at"
    readonly_fields = (
        "merchant",
        "kind",
        "signed_amount",
        "currency",
        "purchase",
        "created_by",
        "memo",
        "created_at",
    )
    fields = readonly_fields

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        # Only deposits, withdrawals and adjustments, and only through services.record_entry.
        if not self.has_add_permission(request):
            raise PermissionDenied
        return record_entry_page(self.admin_site, request, None)

    @admin.display(description="amount", ordering="amount_minor")
    def signed_amount(self, obj: LedgerEntry) -> str:
        return str(obj.amount)

    @admin.display(description="order id", ordering="purchase__order_id")
    def order_id(self, obj: LedgerEntry) -> str:
        return obj.purchase.order_id if obj.purchase else ""
