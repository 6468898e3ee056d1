"""Readiness for the load balancer: the database, and (if required) a live worker."""

from __future__ import annotations

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from monitoring.heartbeat import worker_status


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """Answer 200 only while the database answers (readiness, for the load balancer), and,
    with READYZ_REQUIRE_WORKER, while a worker completed a pass within WORKER_SILENT_AFTER."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:
        return JsonResponse({"status": "unavailable", "database": "unreachable"}, status=503)
    if not settings.READYZ_REQUIRE_WORKER:
        return JsonResponse({"status": "ok", "database": "ok"})
    try:
        live = worker_status().live
    except Exception:
        return JsonResponse({"status": "unavailable", "database": "unreachable"}, status=503)
    if not live:
        return JsonResponse(
            {"status": "unavailable", "database": "ok", "worker": "silent"}, status=503
        )
    return JsonResponse({"status": "ok", "database": "ok", "worker": "ok"})
