"""The workers' heartbeats in admin, read-only: which worker ran where, and when last."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from monitoring.models import WorkerHeartbeat


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    list_display = ["worker", "version", "started_at", "last_pass_at", "stopped_at"]
    list_filter = ["host", "version"]
    readonly_fields = [
        "worker",
        "host",
        "pid",
        "version",
        "started_at",
        "last_pass_at",
        "stopped_at",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
