"""Admin for purchases (read-only, reconciled by actions), attempts, webhooks and alerts.

Purchases are never edited field by field: an admin retries, marks sent or marks rejected
through cashback.services, which records a PurchaseAction, and each action is also written
to the audit log.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db import transaction
from django.db.models import Case, IntegerField, QuerySet, Value, When
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from audit import services as audit
from cashback import services
from cashback.forms import MarkRejectedForm, MarkSentForm
from cashback.models import Alert, Attempt, Purchase, PurchaseAction, Status, WebhookDelivery
from cashback.webhooks import redeliver
from gateway.exceptions import DomainError
from gateway.money import bytes_to_gbyte, format_plain


class ReadOnlyInline(admin.TabularInline):
    """An inline that lists rows and never adds, changes or deletes them."""

    extra = 0
    can_delete = False
    show_change_link = False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [str(name) for name in self.fields or []]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class AttemptInline(ReadOnlyInline):
    model = Attempt
    fields = ["number", "started_at", "duration_ms", "http_status", "outcome", "error", "worker"]
    verbose_name_plural = "upstream attempts"


class PurchaseActionInline(ReadOnlyInline):
    model = PurchaseAction
    fields = ["created_at", "user", "action", "status_before", "status_after", "note"]
    verbose_name_plural = "admin actions"


class WebhookDeliveryInline(ReadOnlyInline):
    model = WebhookDelivery
    fields = [
        "created_at",
        "event",
        "state",
        "attempts",
        "last_status",
        "last_error",
        "delivered_at",
    ]
    verbose_name_plural = "webhook deliveries"


class ViewOnlyAdmin(admin.ModelAdmin):
    """No add, no delete, and a change page that only shows the row.

    `change` permission still matters on the list: the actions require it.
    """

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None:
            return False
        return super().has_change_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Purchase)
class PurchaseAdmin(ViewOnlyAdmin):
    list_display = [
        "order_id",
        "merchant",
        "status",
        "amount",
        "percentages",
        "cashback",
        "attempts",
        "created_at",
    ]
    list_filter = ["status", "merchant", "currency", "created_at"]
    search_fields = ["order_id", "customer"]
    list_select_related = ["merchant"]
    list_per_page = 100
    date_hierarchy = "created_at"
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "id",
                    "merchant",
                    "order_id",
                    "customer",
                    "description",
                    "address",
                    "amount",
                    "purchase_unit",
                ]
            },
        ),
        (
            "Cashback",
            {
                "fields": [
                    "status",
                    "percentages",
                    "cashback",
                    "unit",
                    "error",
                    "attempts",
                    "reserved",
                    "hold",
                ]
            },
        ),
        (
            "Delivery",
            {
                "fields": [
                    "lease_until",
                    "next_attempt_at",
                    "retry_deadline",
                    "created_at",
                    "updated_at",
                    "sent_at",
                ]
            },
        ),
    ]
    # Every field shown is read-only: purchases change only through the actions below.
    readonly_fields = [str(name) for _, options in fieldsets for name in options["fields"]]
    inlines = [AttemptInline, PurchaseActionInline, WebhookDeliveryInline]
    actions = ["retry_now", "mark_sent", "mark_rejected"]

    def get_ordering(self, request: HttpRequest) -> list[Any]:
        # `unknown` purchases wait for a person: list them first, then newest first.
        attention = Case(
            When(status=Status.UNKNOWN, then=Value(0)),
            default=Value(1),
            output_field=IntegerField(),
        )
        return [attention.asc(), "-created_at"]

    @admin.display(description="amount", ordering="amount_minor")
    def amount(self, obj: Purchase) -> str:
        return f"{obj.currency_amount} {obj.currency}"

    @admin.display(description="partner % requested / applied")
    def percentages(self, obj: Purchase) -> str:
        return f"{format_plain(obj.requested_percentage)} / {format_plain(obj.percentage)}"

    @admin.display(description="cashback", ordering="cashback_amount")
    def cashback(self, obj: Purchase) -> str:
        if obj.cashback_amount is None:
            return "–"
        return f"{obj.cashback_amount} bytes ({bytes_to_gbyte(obj.cashback_amount)} GBYTE)"

    @admin.display(description="partner-funded reservation")
    def reserved(self, obj: Purchase) -> str:
        return f"{obj.reserved_amount} {obj.currency}"

    @admin.action(
        description="Retry now (sends again: you accept the risk)", permissions=["change"]
    )
    def retry_now(self, request: HttpRequest, queryset: QuerySet[Purchase]) -> None:
        for purchase in queryset.select_related("merchant"):
            self._act(
                request,
                purchase,
                "retry",
                lambda p: services.retry(p.pk, request.user),
                {},
            )

    @admin.action(description="Mark sent… (upstream did pay)", permissions=["change"])
    def mark_sent(self, request: HttpRequest, queryset: QuerySet[Purchase]) -> Any:
        purchases = list(queryset.select_related("merchant")[:2])
        if len(purchases) != 1:
            self.message_user(
                request, "Mark sent applies to one purchase at a time.", messages.ERROR
            )
            return None
        purchase = purchases[0]
        form = MarkSentForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            amount, unit = form.cleaned_data["cashback_amount"], form.cleaned_data["unit"]
            self._act(
                request,
                purchase,
                "mark_sent",
                lambda p: services.mark_sent(
                    p.pk, request.user, amount, unit, note=form.cleaned_data["note"]
                ),
                {
                    "cashback_amount": [purchase.cashback_amount, amount],
                    "unit": [purchase.unit, unit],
                },
            )
            return None
        return self._action_page(request, "mark_sent", "Mark sent", form, [purchase])

    @admin.action(description="Mark rejected… (upstream did not pay)", permissions=["change"])
    def mark_rejected(self, request: HttpRequest, queryset: QuerySet[Purchase]) -> Any:
        purchases = list(queryset.select_related("merchant"))
        form = MarkRejectedForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            error = form.cleaned_data["error"]
            for purchase in purchases:
                self._act(
                    request,
                    purchase,
                    "mark_rejected",
                    lambda p: services.mark_rejected(
                        p.pk, request.user, error, note=form.cleaned_data["note"]
                    ),
                    {"error": [purchase.error, error]},
                )
            return None
        return self._action_page(request, "mark_rejected", "Mark rejected", form, purchases)

    def _act(
        self,
        request: HttpRequest,
        purchase: Purchase,
        action: str,
        run: Callable[[Purchase], Purchase],
        changes: audit.Changes,
    ) -> None:
        """Run one reconciliation service, audit it, and tell the admin how it went."""
        before = purchase.status
        try:
            after = run(purchase)
        except DomainError as exc:
            self.message_user(request, f"{purchase.order_id}: {exc.detail}", messages.ERROR)
            return
        audit.record(request.user, action, after, {"status": [before, after.status], **changes})
        self.message_user(
            request,
            f"{purchase.order_id}: {action.replace('_', ' ')} done; status {before} → {after.status}.",
            messages.SUCCESS,
        )

    def _action_page(
        self,
        request: HttpRequest,
        action: str,
        title: str,
        form: Any,
        purchases: list[Purchase],
    ) -> HttpResponse:
        if not form.is_bound:
            form.initial = {"action": action, "select_across": "0"}
        context = {
            **self.admin_site.each_context(request),
            "title": f"{title}: {', '.join(p.order_id for p in purchases)}",
            "opts": self.model._meta,
            "form": form,
            "action": action,
            "purchases": purchases,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/cashback/purchase/action_form.html", context)


@admin.register(Attempt)
class AttemptAdmin(ViewOnlyAdmin):
    list_display = ["started_at", "purchase", "number", "outcome", "http_status", "duration_ms"]
    list_filter = ["outcome", "http_status", "started_at"]
    search_fields = ["purchase__order_id"]
    list_select_related = ["purchase"]
    readonly_fields = [
        "purchase",
        "number",
        "started_at",
        "duration_ms",
        "http_status",
        "outcome",
        "error",
        "worker",
    ]


@admin.register(PurchaseAction)
class PurchaseActionAdmin(ViewOnlyAdmin):
    list_display = ["created_at", "purchase", "user", "action", "status_before", "status_after"]
    list_filter = ["action", "created_at"]
    search_fields = ["purchase__order_id", "user__username"]
    list_select_related = ["purchase", "user"]
    readonly_fields = [
        "purchase",
        "user",
        "action",
        "status_before",
        "status_after",
        "note",
        "created_at",
    ]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ViewOnlyAdmin):
    list_display = [
        "created_at",
        "merchant",
        "order_id",
        "event",
        "state",
        "attempts",
        "last_status",
        "last_error",
        "delivered_at",
    ]
    list_filter = ["state", "event", "merchant"]
    search_fields = ["purchase__order_id", "merchant__public_id"]
    list_select_related = ["merchant", "purchase"]
    readonly_fields = [
        "purchase",
        "merchant",
        "event",
        "payload",
        "state",
        "attempts",
        "next_attempt_at",
        "lease_until",
        "last_status",
        "last_error",
        "created_at",
        "delivered_at",
    ]
    actions = ["redeliver"]

    @admin.display(description="order id", ordering="purchase__order_id")
    def order_id(self, obj: WebhookDelivery) -> str:
        return obj.purchase.order_id

    @admin.action(description="Redeliver now", permissions=["change"])
    def redeliver(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        for delivery in queryset:
            with transaction.atomic():
                redeliver(delivery.pk)
                audit.record(
                    request.user, "redeliver", delivery, {"state": [delivery.state, "pending"]}
                )
        self.message_user(
            request, f"{len(queryset)} deliveries queued for redelivery.", messages.SUCCESS
        )


@admin.register(Alert)
class AlertAdmin(ViewOnlyAdmin):
    list_display = ["kind", "message", "first_seen", "last_seen", "count", "resolved_at"]
    list_filter = ["kind", "resolved_at"]
    readonly_fields = ["kind", "message", "first_seen", "last_seen", "count", "resolved_at"]
    actions = ["resolve"]

    @admin.action(description="Resolve selected alerts", permissions=["change"])
    def resolve(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        now = timezone.now()
        resolved = 0
        for alert in queryset.filter(resolved_at__isnull=True):
            with transaction.atomic():
                Alert.objects.filter(pk=alert.pk).update(resolved_at=now)
                audit.record(request.user, "resolve_alert", alert, {"resolved_at": [None, now]})
            resolved += 1
        self.message_user(request, f"{resolved} alert(s) resolved.", messages.SUCCESS)
