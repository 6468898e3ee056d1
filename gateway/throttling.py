"""Request throttles, counted in the shared cache (`CACHE_URL`) so hosts agree.

Rates are read from settings on each request (`API_THROTTLE_RATE`, `API_IP_THROTTLE_RATE`;
`off` disables), so they can be changed without a restart of the code that imports them.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle


def _rate(value: str) -> str | None:
    return None if value.strip().lower() in ("", "off", "none") else value


class ApiKeyThrottle(SimpleRateThrottle):
    """Limit each API key to `API_THROTTLE_RATE`."""

    scope = "api_key"

    def get_rate(self) -> str | None:
        return _rate(settings.API_THROTTLE_RATE)

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        key = getattr(request, "auth", None)
        if key is None or not hasattr(key, "pk"):
            return None
        return self.cache_format % {"scope": self.scope, "ident": key.pk}


class ClientIpThrottle(SimpleRateThrottle):
    """Limit each client address to `API_IP_THROTTLE_RATE`, authenticated or not."""

    scope = "client_ip"

    def get_rate(self) -> str | None:
        return _rate(settings.API_IP_THROTTLE_RATE)

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
