"""Admin for purchases (read-only, reconciled by actions), attempts, webhooks and alerts.

Purchases are never edited field by field: an admin retries, marks sent or marks rejected
through cashback.services, which records a PurchaseAction, and each action is also written
to the audit log with the same status change. The purchase page carries the actions as
buttons; the list keeps them as bulk actions.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Case, Count, IntegerField, QuerySet, Sum, Value, When
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from audit import services as audit
from audit.admin import object_history
from cashback import services
from cashback.alerts import resolve_alert
from cashback.forms import MarkRejectedForm, MarkSentForm
from cashback.models import (
    Alert,
    Attempt,
    Outcome,
    Purchase,
    PurchaseAction,
    Status,
    WebhookDelivery,
)
from cashback.webhooks import redeliver
from gateway import display
from gateway.exceptions import DomainError
from merchants.admin import merchant_link

# There is no public site: admin's "View site" would lead to a bare 404 at /.
admin.site.site_url = None
# The app list is on the index and in the breadcrumbs; the sidebar would take 300 px from
# every list at 1366 px.
admin.site.enable_nav_sidebar = False

RECONCILABLE = (Status.UNKNOWN, Status.PENDING)
RETRYABLE = (Status.UNKNOWN, Status.FAILED, Status.PENDING)


def purchase_link(purchase: Purchase | None) -> SafeString | str:
    """Return a link to a purchase's page, named by its order id."""
    if purchase is None:
        return display.EMPTY
    url = reverse("admin:cashback_purchase_change", args=[purchase.pk])
    return format_html('<a href="{}">{}</a>', url, purchase.order_id)


class PurchaseLinks:
    """List columns linking a row's purchase and that purchase's merchant."""

    @admin.display(description="purchase", ordering="purchase__order_id")
    def purchase_link(self, obj: Any) -> SafeString | str:
        return purchase_link(obj.purchase)

    @admin.display(description="merchant")
    def merchant_link(self, obj: Any) -> SafeString | str:
        return merchant_link(obj.purchase.merchant)


def answered_bytes(attempt: Attempt) -> int | None:
    """Return the cashback in bytes an attempt's answer gave (kept as text), if it is one."""
    text = getattr(attempt, "cashback_amount", None)
    if text is None or not str(text).strip().isdigit():
        return None
    return int(str(text).strip())


def ok_answer(purchase: Purchase) -> Attempt | None:
    """Return the latest attempt upstream answered `ok` with an amount and unit, if any."""
    for attempt in sorted(purchase.attempt_log.all(), key=lambda a: a.number, reverse=True):
        ok = attempt.outcome == Outcome.OK
        if ok and answered_bytes(attempt) is not None and getattr(attempt, "unit", None):
            return attempt
    return None


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
    fields = ["number", "started", "duration_ms", "http_status", "outcome", "answer", "worker"]
    verbose_name_plural = "upstream attempts"

    @admin.display(description="started")
    def started(self, obj: Attempt) -> str:
        return display.moment(obj.started_at)

    @admin.display(description="answer / error")
    def answer(self, obj: Attempt) -> SafeString:
        return attempt_answer(obj)


def attempt_answer(obj: Attempt) -> SafeString:
    """Return what upstream answered (excerpt, amount and unit) or the error, as HTML."""
    parts: list[SafeString] = []
    amount = answered_bytes(obj)
    if amount is not None:
        parts.append(
            format_html("{} → unit <code>{}</code>", display.byte_amount(amount), obj.unit or "–")
        )
    if obj.error:
        parts.append(format_html('<span class="errornote-inline">{}</span>', obj.error))
    excerpt = getattr(obj, "response_excerpt", "")
    if excerpt:
        parts.append(format_html('<pre class="excerpt">{}</pre>', excerpt))
    if not parts:
        return format_html("{}", display.EMPTY)
    return format_html("{}", SafeString("<br>".join(parts)))


class PurchaseActionInline(ReadOnlyInline):
    model = PurchaseAction
    fields = ["at", "user", "action", "status_before", "status_after", "note"]
    verbose_name_plural = "admin actions"

    @admin.display(description="at")
    def at(self, obj: PurchaseAction) -> str:
        return display.moment(obj.created_at)


class WebhookDeliveryInline(ReadOnlyInline):
    model = WebhookDelivery
    fields = ["delivery", "event", "state", "attempts", "last_status", "last_error", "delivered"]
    verbose_name_plural = "webhook deliveries"

    @admin.display(description="delivery")
    def delivery(self, obj: WebhookDelivery) -> SafeString:
        url = reverse("admin:cashback_webhookdelivery_change", args=[obj.pk])
        return format_html('<a href="{}">{}</a>', url, display.moment(obj.created_at))

    @admin.display(description="delivered at")
    def delivered(self, obj: WebhookDelivery) -> str:
        return display.moment(obj.delivered_at)


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

    def may_act(self, request: HttpRequest) -> bool:
        """Whether the user may run this admin's actions (the model's change permission)."""
        return super().has_change_permission(request)


@admin.register(Purchase)
class PurchaseAdmin(ViewOnlyAdmin):
    list_display = [
        "order_id",
        "merchant_id_link",
        "status",
        "amount",
        "partner_percent",
        "cashback_gbyte",
        "attempts",
        "created_at",
    ]
    list_display_links = ["order_id"]
    list_filter = ["status", "merchant", "currency", "created_at"]
    search_fields = [
        "order_id",
        "customer",
        "address",
        "unit",
        "description",
        "merchant__public_id",
    ]
    search_help_text = "Order id, customer, address, unit, description or merchant id."
    list_select_related = ["merchant"]
    list_per_page = 100
    date_hierarchy = "created_at"
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "id",
                    "merchant_link",
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
    change_list_template = "admin/cashback/purchase/change_list.html"

    def get_ordering(self, request: HttpRequest) -> list[Any]:
        # `unknown` purchases wait for a person: list them first, then newest first.
        attention = Case(
            When(status=Status.UNKNOWN, then=Value(0)),
            default=Value(1),
            output_field=IntegerField(),
        )
        return [attention.asc(), "-created_at"]

    def get_urls(self) -> list[Any]:
        def view(fn: Callable[..., HttpResponse], name: str) -> Any:
            return path(
                f"<path:object_id>/{name}/",
                self.admin_site.admin_view(fn),
                name=f"cashback_purchase_{name.replace('-', '_')}",
            )

        return [
            view(self.retry_view, "retry"),
            view(self.mark_sent_view, "mark-sent"),
            view(self.mark_rejected_view, "mark-rejected"),
            *super().get_urls(),
        ]

    # --- list and page ---------------------------------------------------------------------

    @admin.display(description="merchant", ordering="merchant__public_id")
    def merchant_id_link(self, obj: Purchase) -> SafeString | str:
        return merchant_link(obj.merchant)

    @admin.display(description="merchant")
    def merchant_link(self, obj: Purchase) -> SafeString | str:
        return format_html("{} ({})", merchant_link(obj.merchant), obj.merchant.name)

    @admin.display(description="amount", ordering="amount_minor")
    def amount(self, obj: Purchase) -> SafeString:
        sent = display.amount(obj.amount_minor, obj.currency, minor=True)
        if not obj.is_converted:
            return sent
        # Converted (docs/currencies.md): what went upstream, and what the merchant sent.
        rates = (
            obj.fx_rate
            if obj.fx_settlement_rate is None
            else (f"{obj.fx_rate} / {obj.fx_settlement_rate}")
        )
        return format_html(
            "{} <small>from {} at {} per EUR, {} ({})</small>",
            sent,
            display.amount(obj.sent_amount_minor, obj.sent_currency, minor=True),
            rates,
            obj.fx_rate_date,
            obj.fx_rate_source,
        )

    @admin.display(description="partner % requested / applied")
    def percentages(self, obj: Purchase) -> str:
        return f"{display.percent(obj.requested_percentage)} / {display.percent(obj.percentage)}"

    @admin.display(description="cashback", ordering="cashback_amount")
    def cashback(self, obj: Purchase) -> SafeString:
        return display.byte_amount(obj.cashback_amount)

    @admin.display(description="partner % req. / applied")
    def partner_percent(self, obj: Purchase) -> str:
        return f"{display.percent(obj.requested_percentage)} / {display.percent(obj.percentage)}"

    @admin.display(description="cashback", ordering="cashback_amount")
    def cashback_gbyte(self, obj: Purchase) -> SafeString:
        # The list shows GBYTE (narrow); the bytes are in the tooltip and on the page.
        return display.gbyte_amount(obj.cashback_amount)

    @admin.display(description="partner-funded reservation")
    def reserved(self, obj: Purchase) -> SafeString:
        return display.amount(obj.reserved_minor, obj.currency, minor=True)

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        context = getattr(response, "context_data", None)
        cl = context.get("cl") if context is not None else None
        if context is not None and cl is not None:
            # Totals of the current filter and search, per currency: one aggregate query.
            totals = (
                cl.queryset.order_by()
                .values("currency")
                .annotate(
                    n=Count("pk"), amount=Sum("amount_minor"), cashback=Sum("cashback_amount")
                )
                .order_by("currency")
            )
            context["purchase_totals"] = [
                {
                    "currency": t["currency"],
                    "count": t["n"],
                    "amount": display.amount(t["amount"] or 0, t["currency"], minor=True),
                    "cashback": display.byte_amount(t["cashback"] or 0),
                }
                for t in totals
            ]
        return response

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        purchase = self.get_object(request, unquote(object_id))
        context = dict(extra_context or {})
        if purchase is not None:
            context["reconcile"] = {
                "may_act": self.may_act(request),
                "retry": purchase.status in RETRYABLE,
                "resolve": purchase.status in RECONCILABLE,
            }
            context["title"] = f"Purchase {purchase.order_id} of {purchase.merchant.public_id}"
            context["subtitle"] = None
        return super().change_view(request, object_id, form_url, context)

    def history_view(
        self, request: HttpRequest, object_id: str, extra_context: Any = None
    ) -> HttpResponse:
        purchase = self.get_object(request, unquote(object_id))
        if purchase is None:
            raise Http404("No such purchase.")
        return object_history(self.admin_site, request, purchase, [purchase])

    # --- reconciliation: the buttons on the purchase page -----------------------------------

    def _reconcile_purchase(self, request: HttpRequest, object_id: str) -> Purchase:
        if not self.may_act(request):
            raise PermissionDenied("You may view purchases but not reconcile them.")
        try:
            purchase = (
                Purchase.objects.select_related("merchant")
                .prefetch_related("attempt_log")
                .filter(pk=unquote(object_id))
                .first()
            )
        except (ValidationError, ValueError):
            # Not a purchase id at all (ids are UUIDs): as missing as an unknown one.
            purchase = None
        if purchase is None:
            raise Http404("No such purchase.")
        return purchase

    def _page(self, purchase: Purchase) -> str:
        return reverse("admin:cashback_purchase_change", args=[purchase.pk])

    def retry_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Confirm, then retry one purchase: every attempt and its answer, and the risk."""
        purchase = self._reconcile_purchase(request, object_id)
        if request.method == "POST" and "confirm" in request.POST:
            self._act(request, purchase, "retry", lambda p: services.retry(p.pk, request.user), {})
            return HttpResponseRedirect(self._page(purchase))
        attempts = sorted(purchase.attempt_log.all(), key=lambda a: a.number)
        return self._reconcile_page(
            request,
            purchase,
            "admin/cashback/purchase/retry_confirm.html",
            f"Retry {purchase.order_id}?",
            {
                "attempts": [(a, attempt_answer(a)) for a in attempts],
                "paid": ok_answer(purchase),
                "retryable": purchase.status in RETRYABLE,
            },
        )

    def mark_sent_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Record that upstream paid: the amount and unit pre-filled from an `ok` answer."""
        purchase = self._reconcile_purchase(request, object_id)
        paid = ok_answer(purchase)
        if request.method == "POST":
            form = MarkSentForm(request.POST)
            if form.is_valid():
                self._mark_sent(request, purchase, form)
                return HttpResponseRedirect(self._page(purchase))
        else:
            initial: dict[str, Any] = {"action": "mark_sent"}
            if paid is not None:
                initial.update(cashback_amount=answered_bytes(paid), unit=paid.unit)
            form = MarkSentForm(initial=initial)
        return self._reconcile_page(
            request,
            purchase,
            "admin/cashback/purchase/reconcile_form.html",
            f"Mark {purchase.order_id} sent",
            {"form": form, "paid": paid, "submit": "Mark sent"},
        )

    def mark_rejected_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        purchase = self._reconcile_purchase(request, object_id)
        form = MarkRejectedForm(
            request.POST if request.method == "POST" else None,
            initial={"action": "mark_rejected", "error": purchase.error},
        )
        if form.is_bound and form.is_valid():
            self._mark_rejected(request, purchase, form)
            return HttpResponseRedirect(self._page(purchase))
        return self._reconcile_page(
            request,
            purchase,
            "admin/cashback/purchase/reconcile_form.html",
            f"Mark {purchase.order_id} rejected",
            {"form": form, "paid": ok_answer(purchase), "submit": "Mark rejected"},
        )

    def _reconcile_page(
        self,
        request: HttpRequest,
        purchase: Purchase,
        template: str,
        title: str,
        extra: dict[str, Any],
    ) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "opts": self.model._meta,
            "purchase": purchase,
            "purchase_amount": display.amount(purchase.amount_minor, purchase.currency, minor=True),
            "resolvable": purchase.status in RECONCILABLE,
            **extra,
        }
        return TemplateResponse(request, template, context)

    # --- the same actions on the list ------------------------------------------------------

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
            self._mark_sent(request, purchase, form)
            return None
        if not form.is_bound:
            paid = ok_answer(purchase)
            if paid is not None:
                form.initial = {
                    "cashback_amount": answered_bytes(paid),
                    "unit": paid.unit,
                }
        return self._action_page(request, "mark_sent", "Mark sent", form, [purchase])

    @admin.action(description="Mark rejected… (upstream did not pay)", permissions=["change"])
    def mark_rejected(self, request: HttpRequest, queryset: QuerySet[Purchase]) -> Any:
        purchases = list(queryset.select_related("merchant"))
        form = MarkRejectedForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            for purchase in purchases:
                self._mark_rejected(request, purchase, form)
            return None
        return self._action_page(request, "mark_rejected", "Mark rejected", form, purchases)

    def _mark_sent(self, request: HttpRequest, purchase: Purchase, form: MarkSentForm) -> None:
        amount, unit = form.cleaned_data["cashback_amount"], form.cleaned_data["unit"]
        self._act(
            request,
            purchase,
            "mark_sent",
            lambda p: services.mark_sent(
                p.pk, request.user, amount, unit, note=form.cleaned_data["note"]
            ),
            {"cashback_amount": [purchase.cashback_amount, amount], "unit": [purchase.unit, unit]},
        )

    def _mark_rejected(
        self, request: HttpRequest, purchase: Purchase, form: MarkRejectedForm
    ) -> None:
        error = form.cleaned_data["error"]
        self._act(
            request,
            purchase,
            "mark_rejected",
            lambda p: services.mark_rejected(
                p.pk, request.user, error, note=form.cleaned_data["note"]
            ),
            {"error": [purchase.error, error]},
        )

    def _act(
        self,
        request: HttpRequest,
        purchase: Purchase,
        action: str,
        run: Callable[[Purchase], Purchase],
        changes: audit.Changes,
    ) -> None:
        """Run one reconciliation service, audit it, and tell the admin how it went.

        The audit event and the message repeat the status change the action log recorded
        (a retry moves the purchase to `pending`); what the new attempt then brought is
        told separately, so the two records of one action never disagree.
        """
        before = purchase.status
        started = timezone.now()
        try:
            after = run(purchase)
        except DomainError as exc:
            self.message_user(request, f"{purchase.order_id}: {exc.detail}", messages.ERROR)
            return
        logged = (
            PurchaseAction.objects.filter(purchase=purchase, action=action, created_at__gte=started)
            .order_by("-created_at", "-id")
            .first()
        )
        moved = [logged.status_before, logged.status_after] if logged else [before, after.status]
        audit.record(request.user, action, after, {"status": moved, **changes})
        text = (
            f"{purchase.order_id}: {action.replace('_', ' ')} done; status {moved[0]} → {moved[1]}."
        )
        if after.status != moved[1]:
            text += f" The attempt that followed left it {after.status}."
        self.message_user(request, text, messages.SUCCESS)

    def _action_page(
        self,
        request: HttpRequest,
        action: str,
        title: str,
        form: Any,
        purchases: list[Purchase],
    ) -> HttpResponse:
        if not form.is_bound:
            form.initial = {**form.initial, "action": action, "select_across": "0"}
        context = {
            **self.admin_site.each_context(request),
            "title": f"{title}: {', '.join(p.order_id for p in purchases)}",
            "opts": self.model._meta,
            "form": form,
            "action": action,
            "purchases": [
                (p, display.amount(p.amount_minor, p.currency, minor=True)) for p in purchases
            ],
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/cashback/purchase/action_form.html", context)


@admin.register(Attempt)
class AttemptAdmin(PurchaseLinks, ViewOnlyAdmin):
    list_display = [
        "started_at",
        "purchase_link",
        "merchant_link",
        "number",
        "outcome",
        "http_status",
        "duration_ms",
    ]
    list_filter = ["outcome", "http_status", "started_at"]
    search_fields = ["purchase__order_id", "purchase__merchant__public_id"]
    list_select_related = ["purchase", "purchase__merchant"]
    date_hierarchy = "started_at"
    readonly_fields = [
        "purchase_link",
        "merchant_link",
        "number",
        "started_at",
        "duration_ms",
        "http_status",
        "outcome",
        "answer",
        "worker",
    ]
    fields = tuple(readonly_fields)

    @admin.display(description="answer / error")
    def answer(self, obj: Attempt) -> SafeString:
        return attempt_answer(obj)


@admin.register(PurchaseAction)
class PurchaseActionAdmin(PurchaseLinks, ViewOnlyAdmin):
    list_display = [
        "created_at",
        "purchase_link",
        "merchant_link",
        "user",
        "action",
        "status_before",
        "status_after",
    ]
    list_filter = ["action", "created_at"]
    search_fields = ["purchase__order_id", "user__username"]
    list_select_related = ["purchase", "purchase__merchant", "user"]
    date_hierarchy = "created_at"
    readonly_fields = [
        "purchase_link",
        "merchant_link",
        "user",
        "action",
        "status_before",
        "status_after",
        "note",
        "created_at",
    ]
    fields = tuple(readonly_fields)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ViewOnlyAdmin):
    list_display = [
        "created_at",
        "merchant_link",
        "purchase_link",
        "event",
        "state",
        "attempts",
        "last_status",
        "delivered_at",
    ]
    list_filter = ["state", "event", "merchant"]
    search_fields = ["purchase__order_id", "merchant__public_id"]
    list_select_related = ["merchant", "purchase"]
    date_hierarchy = "created_at"
    readonly_fields = [
        "purchase_link",
        "merchant_link",
        "target_url",
        "event",
        "formatted_payload",
        "state",
        "attempts",
        "next_attempt_at",
        "lease_until",
        "last_status",
        "last_error",
        "created_at",
        "delivered_at",
    ]
    fields = tuple(readonly_fields)
    actions = ["redeliver"]

    def get_urls(self) -> list[Any]:
        return [
            path(
                "<path:object_id>/redeliver/",
                self.admin_site.admin_view(self.redeliver_view),
                name="cashback_webhookdelivery_redeliver",
            ),
            *super().get_urls(),
        ]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        context = {**(extra_context or {}), "may_redeliver": self.may_act(request)}
        delivery = self.get_object(request, unquote(object_id))
        if delivery is not None:
            context["title"] = f"Webhook {delivery}"
            context["subtitle"] = None
        return super().change_view(request, object_id, form_url, context)

    @admin.display(description="purchase", ordering="purchase__order_id")
    def purchase_link(self, obj: WebhookDelivery) -> SafeString | str:
        return purchase_link(obj.purchase)

    @admin.display(description="merchant", ordering="merchant__public_id")
    def merchant_link(self, obj: WebhookDelivery) -> SafeString | str:
        return merchant_link(obj.merchant)

    @admin.display(description="target URL (the merchant's, now)")
    def target_url(self, obj: WebhookDelivery) -> str:
        return getattr(obj, "target_url", "") or obj.merchant.webhook_url or "– (no webhook URL)"

    @admin.display(description="payload")
    def formatted_payload(self, obj: WebhookDelivery) -> SafeString:
        text = json.dumps(obj.payload, indent=2, sort_keys=True, ensure_ascii=False)
        return format_html('<pre class="payload">{}</pre>', text)

    def redeliver_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if not self.may_act(request):
            raise PermissionDenied("You may view webhook deliveries but not redeliver them.")
        if request.method != "POST":
            return HttpResponseRedirect(
                reverse("admin:cashback_webhookdelivery_change", args=[object_id])
            )
        delivery = self.get_object(request, unquote(object_id))
        if delivery is None:
            raise Http404("No such delivery.")
        self._redeliver(request, delivery)
        self.message_user(request, "The delivery is queued to be sent again now.", messages.SUCCESS)
        return HttpResponseRedirect(
            reverse("admin:cashback_webhookdelivery_change", args=[delivery.pk])
        )

    def _redeliver(self, request: HttpRequest, delivery: WebhookDelivery) -> None:
        with transaction.atomic():
            redeliver(delivery.pk)
            audit.record(
                request.user, "redeliver", delivery, {"state": [delivery.state, "pending"]}
            )

    @admin.action(description="Redeliver now", permissions=["change"])
    def redeliver(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        for delivery in queryset:
            self._redeliver(request, delivery)
        self.message_user(
            request, f"{len(queryset)} deliveries queued for redelivery.", messages.SUCCESS
        )


@admin.register(Alert)
class AlertAdmin(ViewOnlyAdmin):
    list_display = [
        "kind",
        "subject",
        "message",
        "first_seen",
        "last_seen",
        "count",
        "resolved_at",
    ]
    list_filter = ["kind", "resolved_at"]
    readonly_fields = [
        "kind",
        "subject",
        "message",
        "first_seen",
        "last_seen",
        "count",
        "resolved_at",
    ]
    actions = ["resolve"]

    @admin.action(description="Resolve selected alerts", permissions=["change"])
    def resolve(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        now = timezone.now()
        resolved = sum(
            resolve_alert(pk, request.user, now)
            for pk in queryset.filter(resolved_at__isnull=True).values_list("pk", flat=True)
        )
        self.message_user(request, f"{resolved} alert(s) resolved.", messages.SUCCESS)


# Reference rates and overrides (currency conversion) have their own module.
from cashback import admin_rates  # noqa: E402, F401
