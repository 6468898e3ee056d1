"""Template context for admin pages that comes from the purchase side."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils import timezone
from django.utils.functional import SimpleLazyObject

from cashback import alerts
from cashback.models import Alert
from monitoring.heartbeat import WorkerBanner, worker_banner


def admin_alerts(request: HttpRequest) -> dict[str, Any]:
    """Give admin pages the unresolved alerts, queried once and only if a page shows them."""
    if not request.path.startswith("/admin/"):
        return {}
    user = getattr(request, "user", None)
    if user is None or not user.is_active or not user.is_staff:
        return {}
    return {
        "cashback_alerts": SimpleLazyObject(
            lambda: list(Alert.objects.filter(resolved_at__isnull=True).order_by("first_seen"))
        ),
        "cashback_worker": SimpleLazyObject(_worker_banner),
    }


def _worker_banner() -> WorkerBanner:
    banner = worker_banner()
    if banner.silent:
        alerts.check_workers(banner.status, timezone.now())
    return banner
