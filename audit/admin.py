"""The audit log in admin (read-only, exportable) and the mixin that writes it."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from typing import Any

from django.contrib import admin
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.utils import timezone

from audit import services
from audit.models import AuditEvent


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


def _removed(obj: models.Model) -> services.Changes:
    return {name: [value, None] for name, value in services.snapshot(obj).items()}


class _Echo:
    """A file-like object whose write() returns the line, for streaming csv.writer output."""

    def write(self, value: str) -> str:
        return value


def _cell(value: Any) -> str:
    # Spreadsheets run cells starting with these as formulas; quote them as text.
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


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
        return "; ".join(
            f"{name}: {pair[0]} → {pair[1]}" for name, pair in sorted(obj.changes.items())
        )

    @admin.action(description="Export selected events as CSV", permissions=["view"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet[AuditEvent]) -> Any:
        events = queryset.order_by("at", "id").iterator(chunk_size=2000)
        response = StreamingHttpResponse(csv_rows(events), content_type="text/csv; charset=utf-8")
        stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
        response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.csv"'
        return response
