"""Template context shared by every admin page."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest


def gateway_mode(request: HttpRequest) -> dict[str, Any]:
    """Tell templates whether the gateway talks to the sandbox upstream."""
    return {"cashback_sandbox": settings.CASHBACK_SANDBOX}


def admin_alerts(request: HttpRequest) -> dict[str, Any]:
    """Give admin pages the unresolved alerts, queried once and only if a page shows them."""
    if not request.path.startswith("/admin/"):
        return {}
    user = getattr(request, "user", None)
    if user is None or not user.is_active or not user.is_staff:
        return {}
    from django.utils.functional import SimpleLazyObject

    from cashback.models import Alert

    return {
        "cashback_alerts": SimpleLazyObject(
            lambda: list(Alert.objects.filter(resolved_at__isnull=True).order_by("first_seen"))
        )
    }
