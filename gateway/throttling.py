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


class FailedAuthThrottle(SimpleRateThrottle):
    """Limit each client address to `API_IP_THROTTLE_RATE` failed API key checks.

    DRF checks throttles after authentication, so without this a wrong key would be
    refused (401) without ever being counted, and key guessing would cost the gateway a
    lookup and an HMAC per request without limit.
    """

    scope = "failed_auth"

    def get_rate(self) -> str | None:
        return _rate(settings.API_IP_THROTTLE_RATE)

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}

    def blocked(self, request: Any) -> bool:
        """Return whether this address used up its failures (and load its history)."""
        if self.rate is None:
            return False
        self.key = self.get_cache_key(request, None)
        self.history = self.cache.get(self.key, [])
        self.now = self.timer()
        while self.history and self.history[-1] <= self.now - self.duration:
            self.history.pop()
        return len(self.history) >= self.num_requests

    def record_failure(self) -> None:
        """Count one failure of the address `blocked` was last asked about."""
        if self.rate is None:
            return
        self.history.insert(0, self.now)
        self.cache.set(self.key, self.history, self.duration)
