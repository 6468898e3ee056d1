"""Template context shared by every admin page."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest


def gateway_mode(request: HttpRequest) -> dict[str, Any]:
    """Tell templates whether the gateway talks to the sandbox upstream."""
    return {"cashback_sandbox": settings.CASHBACK_SANDBOX}
