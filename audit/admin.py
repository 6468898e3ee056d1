"""The audit log in admin (read-only, exportable) and the mixin that writes it."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib import admin
from django.db import models
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from audit import services
from audit.models import AuditEvent
from gateway.spreadsheets import escape_text


class AuditedModelAdmin(admin.ModelAdmin):
    """Record every add, change and delete made through this admin in the audit log."""

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        before: dict[str, Any] = {}
        if change:
            # The form already changed `obj`; the database still holds the old values.
            stored = type(obj)._default_manager.filter(pk=obj.pk).first()
            before = services.snapshot(stored) if stored is not None else {}
        super().save_model(request, obj, form, change)
        changes = services.diff(before, services.snapshot(obj))
        if changes or not change:
            services.record(request.user, "change" if change else "add", obj, changes)

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        services.record(request.user, "delete", obj, _removed(obj))
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for obj in queryset:
            services.record(request.user, "delete", obj, _removed(obj))
        super().delete_queryset(request, queryset)


@dataclass(frozen=True)
class HistoryRow:
    """One line of an object's history page."""

    at: datetime
    who: str
    what: str
    details: str


def changes_text(changes: dict[str, Any]) -> str:
    """Return {field: [before, after]} as "field: before → after; …"."""
    return "; ".join(f"{name}: {pair[0]} → {pair[1]}" for name, pair in sorted(changes.items()))


def object_history(
    admin_site: admin.AdminSite,
    request: HttpRequest,
    obj: models.Model,
    related: Iterable[models.Model] = (),
    extra: Iterable[HistoryRow] = (),
) -> HttpResponse:
    """Show an object's history from the audit log (every admin action on it and on
    `related` objects), with `extra` rows (e.g. ledger entries made outside admin)."""
    wanted = Q(object_type=obj._meta.label_lower, object_id=str(obj.pk))
    for other in related:
        wanted |= Q(object_type=other._meta.label_lower, object_id=str(other.pk))
    rows = [
        HistoryRow(
            e.at, e.actor_name or "system", f"{e.action} {e.object_repr}", changes_text(e.changes)
        )
        for e in AuditEvent.objects.filter(wanted).order_by("-at", "-id")[:500]
    ]
    rows = sorted([*rows, *extra], key=lambda r: r.at, reverse=True)
    opts = obj._meta
    context = {
        **admin_site.each_context(request),
        "title": f"History: {obj}",
        "subtitle": None,
        "opts": opts,
        "object": obj,
        "rows": rows,
        "module_name": str(opts.verbose_name_plural).capitalize(),
    }
    return TemplateResponse(request, "admin/audit_history.html", context)


def _removed(obj: models.Model) -> services.Changes:
    return {name: [value, None] for name, value in services.snapshot(obj).items()}


class _Echo:
    """A file-like object whose write() returns the line, for streaming csv.writer output."""

    def write(self, value: str) -> str:
        return value


def _cell(value: Any) -> str:
    # Spreadsheets run cells starting with these as formulas; quote them as text.
    return escape_text("" if value is None else str(value))


def csv_rows(events: Iterable[AuditEvent]) -> Iterator[str]:
    """Yield the CSV lines of `events`, header first."""
    writer = csv.writer(_Echo())
    yield writer.writerow(
        ["at", "actor", "action", "object_type", "object_id", "object", "field", "before", "after"]
    )
    for event in events:
        items = sorted(event.changes.items()) or [("", [None, None])]
        for name, pair in items:
            before, after = [*pair, None, None][:2]
            yield writer.writerow(
                [
                    _cell(c)
                    for c in (
                        event.at.isoformat(),
                        event.actor_name,
                        event.action,
                        event.object_type,
                        event.object_id,
                        event.object_repr,
                        name,
                        before,
                        after,
                    )
                ]
            )


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["at", "actor_name", "action", "object_type", "object_repr", "summary"]
    list_filter = ["action", "object_type", "at"]
    search_fields = ["object_repr", "object_id", "actor_name"]
    date_hierarchy = "at"
    readonly_fields = [
        "at",
        "actor",
        "actor_name",
        "action",
        "object_type",
        "object_id",
        "object_repr",
        "changes",
    ]
    actions = ["export_csv"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="changes")
    def summary(self, obj: AuditEvent) -> str:
        return changes_text(obj.changes)

    @admin.action(description="Export selected events as CSV", permissions=["view"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet[AuditEvent]) -> Any:
        events = queryset.order_by("at", "id").iterator(chunk_size=2000)
        response = StreamingHttpResponse(csv_rows(events), content_type="text/csv; charset=utf-8")
        stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
        response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.csv"'
        return response
