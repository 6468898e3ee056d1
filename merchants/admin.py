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
from django.db.models import OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from audit import services as audit
from audit.admin import AuditedModelAdmin, HistoryRow, object_history
from gateway import display
from gateway.money import format_money
from merchants.forms import ApiKeyIssueForm, ApiKeyRevokeForm, LedgerEntryForm, MerchantAdminForm
from merchants.models import (
    MANUAL_KINDS,
    STANDARD_SECRET_REGEX,
    ApiKey,
    Balance,
    EntryKind,
    LedgerEntry,
    Merchant,
)

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


class WebhookSecretFilter(admin.SimpleListFilter):
    """Who still signs with a secret from before Standard Webhooks (and should rotate)."""

    title = "webhook secret"
    parameter_name = "webhook_secret"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("legacy", "old form: not rotated"), ("standard", "whsec_ (rotated)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Merchant]) -> QuerySet[Merchant]:
        standard = Q(webhook_secret__regex=STANDARD_SECRET_REGEX)
        if self.value() == "legacy":
            return queryset.exclude(webhook_secret="").exclude(standard)
        if self.value() == "standard":
            return queryset.filter(standard)
        return queryset


class MerchantChangeList(ChangeList):
    """Attach each merchant's daily spending rates to the page, in one query."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        merchants = list(self.result_list)
        rates = daily_rates([m.pk for m in merchants])
        for merchant in merchants:
            merchant.daily_rates = rates.get(merchant.pk, {})


class ApiKeyStateFilter(admin.SimpleListFilter):
    """Keys by what they can do now: active, revoked, or expired."""

    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("active", "Active"), ("revoked", "Revoked"), ("expired", "Expired")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> QuerySet[ApiKey]:
        now = timezone.now()
        not_expired = Q(expires_at__isnull=True) | Q(expires_at__gt=now)
        if self.value() == "active":
            return queryset.filter(not_expired, revoked_at__isnull=True)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        if self.value() == "expired":
            return queryset.filter(revoked_at__isnull=True, expires_at__lte=now)
        return queryset


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
        "merchant_label",
        "is_active",
        "percentages",
        "deposit_policy",
        "balances",
        "runway",
        "webhook_secret_state",
    ]
    search_fields = ["name", "public_id"]
    list_filter = ["is_active", "deposit_policy", "settlement_currency", WebhookSecretFilter]
    readonly_fields = ["webhook_secret_state", "balances", "created_at", "updated_at"]
    fieldsets = [
        (
            None,
            {"fields": ["name", "public_id", "is_active"]},
        ),
        (
            "Partner cashback",
            {
                "fields": [
                    "default_percentage",
                    "max_percentage",
                    "deposit_policy",
                    "settlement_currency",
                    "balances",
                ]
            },
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

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A merchant's purchases, balances and ledger protect it: deleting always fails.
        # Clear "active" instead (the API then refuses its keys).
        return False

    @admin.display(description="merchant (public id)", ordering="name")
    def merchant_label(self, obj: Merchant) -> str:
        return format_html('{}<br><span class="cur">{}</span>', obj.name, obj.public_id)

    @admin.display(description="partner % default / max")
    def percentages(self, obj: Merchant) -> str:
        return f"{display.percent(obj.default_percentage)} / {display.percent(obj.max_percentage)}"

    @admin.display(description="balances now (available / reserved)")
    def balances(self, obj: Merchant) -> str:
        if obj.pk is None:
            return "–"
        rows = sorted(obj.balances.all(), key=lambda b: b.currency)
        if not rows:
            return "–"
        return format_html_join(
            mark_safe("<br>"),
            '<span class="amount">{} / {}\u00a0<span class="cur">{}</span></span>',
            (
                (
                    format_money(b.available_minor, b.currency, minor=True),
                    format_money(b.reserved_minor, b.currency, minor=True),
                    b.currency,
                )
                for b in rows
            ),
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
            ", ".join(
                f"{c} (uses {format_money(rates[c], c, minor=True)}/day)" for c in sorted(short)
            ),
        )

    @admin.display(description="webhook secret")
    def webhook_secret_state(self, obj: Merchant) -> str:
        # Never the secret itself: it is shown once, when it is made.
        if not obj.webhook_secret:
            return "not set"
        if obj.has_legacy_webhook_secret:
            return "old form: rotate (still sends X-Cashback-Signature)"
        return "set (Standard Webhooks)"

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
                format_html(
                    "New API key “{}” for {}: {} — copy it now; it is stored only as a hash "
                    "and will not be shown again.",
                    key.name or key,
                    merchant.public_id,
                    one_time_secret(raw),
                ),
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

    def history_view(
        self, request: HttpRequest, object_id: str, extra_context: Any = None
    ) -> HttpResponse:
        merchant = self.get_object(request, object_id)
        if merchant is None:
            raise Http404("No such merchant.")
        keys = list(ApiKey.objects.filter(merchant=merchant))
        # Deposits, withdrawals and adjustments, whoever made them (admin or a command).
        entries = list(
            LedgerEntry.objects.filter(merchant=merchant, kind__in=MANUAL_KINDS)
            .select_related("created_by")
            .order_by("-created_at")[:500]
        )
        extra = [
            HistoryRow(
                e.created_at,
                e.created_by.get_username() if e.created_by else "system",
                f"ledger: {e.get_kind_display().lower()}",
                f"{format_money(e.amount_minor, e.currency, minor=True)} {e.currency}"
                + (f" — {e.memo}" if e.memo else ""),
            )
            for e in entries
        ]
        return object_history(self.admin_site, request, merchant, keys, extra)

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


def one_time_secret(secret: str) -> str:
    """Return a secret shown once as HTML: backoffice.js puts a copy button beside it."""
    return format_html('<code class="one-time-secret">{}</code>', secret)


def _show_secret(request: HttpRequest, merchant: Merchant, secret: str) -> None:
    messages.warning(
        request,
        format_html(
            "New webhook signing secret for {}: {} — copy it now; it will not be shown again.",
            merchant.public_id,
            one_time_secret(secret),
        ),
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
    confirm = None
    if request.method == "POST" and form.is_valid():
        if "confirm" not in request.POST:
            # Entries are permanent: repeat what will be recorded and ask once more.
            data = form.cleaned_data
            target = merchant or data["merchant"]
            kind = EntryKind(data["kind"])
            confirm = {
                "merchant": target,
                "kind": kind.label,
                "amount": display.amount(data["amount"], data["currency"]),
                "currency": data["currency"],
                "memo": data["memo"],
            }
        else:
            entry = form.record(request.user)
            if entry is not None:
                return _recorded(request, merchant, entry)
    balances = list(Balance.objects.filter(merchant=merchant)) if merchant else []
    context = {
        **admin_site.each_context(request),
        "title": f"Record a ledger entry for {merchant}" if merchant else "Record a ledger entry",
        "form": form,
        "confirm": confirm,
        "balance_rows": [
            display.amount(b.available_minor, b.currency, minor=True)
            + format_html(
                " available ({} reserved)", display.amount(b.reserved_minor, b.currency, minor=True)
            )
            for b in balances
        ],
        "merchant": merchant,
        "balances": balances,
        "opts": LedgerEntry._meta,
        "merchant_opts": Merchant._meta,
    }
    return TemplateResponse(request, "admin/merchants/record_entry.html", context)


def _recorded(request: HttpRequest, merchant: Merchant | None, entry: LedgerEntry) -> HttpResponse:
    """Say that the entry is recorded (services.record_entry audited it) and go back."""
    messages.success(
        request,
        f"Recorded {entry.get_kind_display().lower()} of "
        f"{format_money(entry.amount_minor, entry.currency, minor=True)} "
        f"{entry.currency} for {entry.merchant.public_id}.",
    )
    target = (
        reverse("admin:merchants_merchant_change", args=[merchant.pk])
        if merchant is not None
        else reverse("admin:merchants_ledgerentry_changelist")
    )
    return HttpResponseRedirect(target)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """All keys, read-only; issue keys on the merchant's page, revoke here or there."""

    list_display = [
        "__str__",
        "merchant_id_link",
        "name",
        "state",
        "created_at",
        "expires_at",
        "last_used",
    ]
    list_filter = [ApiKeyStateFilter, "created_at", "expires_at"]
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

    @admin.display(description="merchant", ordering="merchant__public_id")
    def merchant_id_link(self, obj: ApiKey) -> str:
        return merchant_link(obj.merchant)

    @admin.display(description="state")
    def state(self, obj: ApiKey) -> str:
        if obj.revoked_at is not None:
            return f"revoked {display.moment(obj.revoked_at)}"
        if obj.expires_at is not None and obj.expires_at <= timezone.now():
            return "expired"
        return "active"

    @admin.display(description="last used", ordering="last_used_at")
    def last_used(self, obj: ApiKey) -> str:
        if obj.last_used_at is None:
            return "never"
        return f"{display.moment(obj.last_used_at)} from {obj.last_used_ip or '?'}"

    @admin.action(description="Revoke selected API keys", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for key in queryset.filter(revoked_at__isnull=True):
            revoke_key(request, key)


@admin.register(Balance)
class BalanceAdmin(admin.ModelAdmin):
    list_display = ["merchant", "currency", "available_now", "reserved_now", "updated_at"]
    list_filter = ["currency", "merchant"]
    search_fields = ["merchant__name", "merchant__public_id"]
    list_select_related = ["merchant"]
    readonly_fields = ("merchant", "currency", "available_now", "reserved_now", "updated_at")
    fields = readonly_fields

    @admin.display(description="available now", ordering="available_minor")
    def available_now(self, obj: Balance) -> str:
        return display.amount(obj.available_minor, obj.currency, minor=True)

    @admin.display(description="reserved now", ordering="reserved_minor")
    def reserved_now(self, obj: Balance) -> str:
        return display.amount(obj.reserved_minor, obj.currency, minor=True)

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
        "merchant_id_link",
        "kind",
        "signed_amount",
        "running_balance",
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
        "order_id",
        "created_by",
        "memo",
        "created_at",
    )
    fields = readonly_fields
    change_list_template = "admin/merchants/ledgerentry/change_list.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[LedgerEntry]:
        # `available` just after each entry: the balance now less what later entries of the
        # same merchant and currency did. Whatever the list's filter, and cheap on the first
        # pages (newest first), where few entries are later.
        same = {"merchant_id": OuterRef("merchant_id"), "currency": OuterRef("currency")}
        later = (
            LedgerEntry.objects.filter(**same)
            .filter(
                Q(created_at__gt=OuterRef("created_at"))
                | Q(created_at=OuterRef("created_at"), id__gt=OuterRef("id"))
            )
            .order_by()
            .values("merchant_id")
            .annotate(s=Sum(available_effect()))
            .values("s")
        )
        now = Balance.objects.filter(**same).values("available_minor")
        running = Coalesce(Subquery(now), 0) - Coalesce(Subquery(later), 0)
        return super().get_queryset(request).annotate(running_available=running)

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        context = getattr(response, "context_data", None)
        cl = context.get("cl") if context is not None else None
        if context is not None and cl is not None:
            totals = (
                LedgerEntry.objects.filter(pk__in=cl.queryset.values("pk"))
                .values("currency", "kind")
                .annotate(total=Sum("amount_minor"))
                .order_by("currency", "kind")
            )
            context["ledger_totals"] = [
                {
                    "currency": t["currency"],
                    "kind": EntryKind(t["kind"]).label,
                    "total": display.amount(t["total"] or 0, t["currency"], minor=True),
                }
                for t in totals
            ]
        return response

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

    @admin.display(description="merchant", ordering="merchant__public_id")
    def merchant_id_link(self, obj: LedgerEntry) -> str:
        return merchant_link(obj.merchant)

    @admin.display(description="amount", ordering="amount_minor")
    def signed_amount(self, obj: LedgerEntry) -> str:
        return display.amount(obj.amount_minor, obj.currency, minor=True)

    @admin.display(description="available after")
    def running_balance(self, obj: LedgerEntry) -> str:
        value = getattr(obj, "running_available", None)
        return display.amount(value, obj.currency, minor=True) if value is not None else "–"

    @admin.display(description="purchase", ordering="purchase__order_id")
    def order_id(self, obj: LedgerEntry) -> str:
        if obj.purchase is None:
            return "–"
        url = reverse("admin:cashback_purchase_change", args=[obj.purchase.pk])
        return format_html('<a href="{}">{}</a>', url, obj.purchase.order_id)


def merchant_link(merchant: Merchant | None) -> str:
    """Return a link to a merchant's page, named by its public id (the name in the tooltip)."""
    if merchant is None:
        return display.EMPTY
    url = reverse("admin:merchants_merchant_change", args=[merchant.pk])
    return format_html('<a href="{}" title="{}">{}</a>', url, merchant.name, merchant.public_id)


def available_effect() -> Any:
    """Return the SQL expression of what an entry does to `available` (see services._apply)."""
    from django.db.models import Case, IntegerField, Value, When

    return Case(
        When(kind=EntryKind.CAPTURE, then=Value(0)),
        default="amount_minor",
        output_field=IntegerField(),
    )
