"""Request throttles, counted in the shared cache (`CACHE_URL`) so hosts agree.

Each throttle counts requests per identity in fixed windows with one atomic increment
(`cache.incr`: a lock in local memory, INCR in Redis). DRF's own throttles read a history,
append and write it back, so simultaneous requests on several hosts all passed a limit.

Rates are read from settings on each request (`API_THROTTLE_RATE`, `API_IP_THROTTLE_RATE`;
`off` disables). If the cache is down, requests are let through and the error is logged:
an outage of Redis must not become an outage of the gateway.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from django.conf import settings
from django.core.cache import cache
from rest_framework.throttling import BaseThrottle

from gateway import metrics

logger = logging.getLogger(__name__)

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(value: str) -> tuple[int, int] | None:
    """Return (requests, seconds) of a DRF rate such as "20/s" or "10/m"; None for off."""
    if value.strip().lower() in ("", "off", "none"):
        return None
    count, period = value.split("/")
    return int(count), _PERIODS[period.strip()[0]]


class CountingThrottle(BaseThrottle):
    """Allow `n` requests per identity in each window of the configured rate."""

    scope = ""

    def __init__(self) -> None:
        self.rate = parse_rate(self.get_rate())
        self.window_end = 0.0  # when the identity's window ends, once it is near its limit

    def get_rate(self) -> str:
        raise NotImplementedError

    def identity(self, request: Any) -> str | None:
        raise NotImplementedError

    def count(self, ident: str, *, add: int = 0) -> int:
        """Return the requests of `ident` in its current window, after adding `add`.

        A window starts with an identity's first request and lasts the rate's period, so
        there is no shared boundary where a burst could pass twice the limit.
        """
        assert self.rate is not None
        limit, duration = self.rate
        key = f"throttle:{self.scope}:{ident}"
        try:
            if add:
                if cache.add(key, 0, duration):
                    cache.set(f"{key}:end", time.time() + duration, duration)
                try:
                    n = int(cache.incr(key, add))
                except ValueError:  # the window ended between add and incr
                    cache.add(key, add, duration)
                    n = add
            else:
                n = int(cache.get(key, 0))
            if n >= limit:
                self.window_end = cache.get(f"{key}:end") or time.time() + duration
            return n
        except Exception:
            logger.warning("throttle cache unavailable; request allowed", exc_info=True)
            return 0

    def allow_request(self, request: Any, view: Any) -> bool:
        if self.rate is None:
            return True
        ident = self.identity(request)
        if ident is None or self.count(ident, add=1) <= self.rate[0]:
            return True
        metrics.THROTTLED.labels(scope=self.scope).inc()
        return False

    def wait(self) -> float | None:
        return max(1, math.ceil(self.window_end - time.time())) if self.window_end else None


class ApiKeyThrottle(CountingThrottle):
    """Limit each API key to `API_THROTTLE_RATE`."""

    scope = "api_key"

    def get_rate(self) -> str:
        return settings.API_THROTTLE_RATE

    def identity(self, request: Any) -> str | None:
        key = getattr(request, "auth", None)
        return str(key.pk) if key is not None and hasattr(key, "pk") else None


class ClientIpThrottle(CountingThrottle):
    """Limit each client address to `API_IP_THROTTLE_RATE`, authenticated or not."""

    scope = "client_ip"

    def get_rate(self) -> str:
        return settings.API_IP_THROTTLE_RATE

    def identity(self, request: Any) -> str | None:
        return self.get_ident(request)


class FailedAuthThrottle(ClientIpThrottle):
    """Limit each client address to `API_IP_THROTTLE_RATE` failed API key checks.

    DRF checks throttles after authentication, so without this a wrong key would be
    refused (401) without ever being counted, and key guessing would cost the gateway a
    lookup and an HMAC per request without limit.
    """

    scope = "failed_auth"

    def blocked(self, request: Any) -> bool:
        """Return whether this address used up its failures."""
        if self.rate is None:
            return False
        self.ident = self.identity(request) or "-"
        if self.count(self.ident) < self.rate[0]:
            return False
        metrics.THROTTLED.labels(scope=self.scope).inc()
        return True

    def record_failure(self) -> None:
        """Count one failure of the address `blocked` was last asked about."""
        if self.rate is not None:
            self.count(self.ident, add=1)
