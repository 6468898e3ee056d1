"""The upstream cashback API (`new_purchase`): one request, and what its outcome means.

No ORM here. The only decision this module makes is the classification of an outcome:
`NOT_SENT` only when the request surely did not take effect, `AMBIGUOUS` whenever it may
have reached upstream. The partner key is sent and never written anywhere else: messages
are built from our own words and upstream's text is passed through `redact`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, NewConnectionError

from cashback.models import Outcome
from gateway.logging import redact

logger = logging.getLogger(__name__)

AUTH_FAILED_MESSAGE = "authentication failed"
# Answers that say the server did not process the request: overload and maintenance.
RETRYABLE_STATUSES = {429, 503}


@dataclass(frozen=True)
class UpstreamResult:
    outcome: Outcome
    http_status: int | None = None
    cashback_amount: int | None = None
    unit: str | None = None
    error: str = ""
    duration_ms: int = 0


class CashbackClient:
    """Send purchases to `new_purchase` over a pooled, kept-alive HTTP session."""

    def __init__(
        self,
        url: str,
        partner: str,
        partner_key: str,
        *,
        timeout: float,
        connect_timeout: float,
        pool_size: int,
    ) -> None:
        self.url = url
        self._credentials = {"partner": partner, "partner_key": partner_key}
        self.timeout = (connect_timeout, timeout)
        self.session = requests.Session()
        # No automatic retries: a POST retried by the transport could be sent twice.
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = "cashback-gateway/1.0"
        # requests re-reads every environment variable for proxies on each call (7 % of a
        # purchase's CPU in the profile); read them once, for this URL, and stop.
        self.session.proxies.update(requests.utils.get_environ_proxies(url))
        self.session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or True
        self.session.trust_env = False

    def __repr__(self) -> str:
        return f"<CashbackClient {self.url}>"

    def new_purchase(self, fields: Mapping[str, str]) -> UpstreamResult:
        """POST one purchase (form-encoded, as every known client does) and classify the answer."""
        started = time.monotonic()
        try:
            response = self.session.post(
                self.url, data={**self._credentials, **fields}, timeout=self.timeout
            )
        except requests.RequestException as exc:
            return _classify_exception(exc, _ms_since(started), self.timeout[1])
        return classify_response(response.status_code, response.content, _ms_since(started))


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _classify_exception(exc: requests.RequestException, ms: int, timeout: float) -> UpstreamResult:
    """Decide whether a failed request may have reached upstream."""
    if isinstance(exc, requests.ConnectTimeout):
        return UpstreamResult(Outcome.NOT_SENT, error="connect timeout", duration_ms=ms)
    if isinstance(exc, requests.exceptions.SSLError):
        return UpstreamResult(Outcome.NOT_SENT, error="TLS handshake failed", duration_ms=ms)
    if isinstance(exc, requests.ReadTimeout):
        return UpstreamResult(
            Outcome.AMBIGUOUS,
            error=f"no answer within {timeout:g} s (read timeout)",
            duration_ms=ms,
        )
    if isinstance(exc, requests.ConnectionError):
        reason = exc.args[0] if exc.args else None
        if isinstance(reason, MaxRetryError):
            reason = reason.reason
        if isinstance(reason, NewConnectionError):
            # Refused, unreachable or DNS failure (NameResolutionError is a subclass):
            # no byte of the request left this host.
            return UpstreamResult(
                Outcome.NOT_SENT, error="could not connect to upstream", duration_ms=ms
            )
        return UpstreamResult(
            Outcome.AMBIGUOUS, error="connection lost after the request was sent", duration_ms=ms
        )
    return UpstreamResult(
        Outcome.AMBIGUOUS, error=f"request failed ({type(exc).__name__})", duration_ms=ms
    )


def classify_response(status: int, body: bytes, ms: int = 0) -> UpstreamResult:
    """Classify an HTTP answer of upstream, per the status table of SPEC.md."""
    if status in RETRYABLE_STATUSES:
        return UpstreamResult(
            Outcome.NOT_SENT, status, error=f"upstream busy (HTTP {status})", duration_ms=ms
        )
    if status >= 500:
        return UpstreamResult(
            Outcome.AMBIGUOUS, status, error=f"upstream error (HTTP {status})", duration_ms=ms
        )
    data = _json_object(body)
    result = data.get("result") if data is not None else None
    if result == "ok":
        amount, unit = data.get("cashback_amount"), data.get("unit")  # type: ignore[union-attr]
        if (
            isinstance(amount, int)
            and not isinstance(amount, bool)
            and amount >= 0
            and isinstance(unit, str)
        ):
            return UpstreamResult(
                Outcome.OK, status, cashback_amount=amount, unit=unit[:44], duration_ms=ms
            )
    elif result == "error":
        message = data.get("error")  # type: ignore[union-attr]
        message = (
            redact(message)[:1000] if isinstance(message, str) and message else "unspecified error"
        )
        if message == AUTH_FAILED_MESSAGE:
            return UpstreamResult(Outcome.AUTH_FAILED, status, error=message, duration_ms=ms)
        return UpstreamResult(Outcome.REJECTED, status, error=message, duration_ms=ms)
    return UpstreamResult(
        Outcome.AMBIGUOUS,
        status,
        error=f"unexpected answer (HTTP {status}, not the documented JSON)",
        duration_ms=ms,
    )


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


@functools.cache
def _client_for(
    url: str, partner: str, partner_key: str, timeout: float, connect_timeout: float, pool: int
) -> CashbackClient:
    return CashbackClient(
        url, partner, partner_key, timeout=timeout, connect_timeout=connect_timeout, pool_size=pool
    )


def get_client() -> CashbackClient:
    """Return this process's client for the configured upstream (one pool per process)."""
    return _client_for(
        settings.CASHBACK_API_URL,
        settings.CASHBACK_PARTNER,
        settings.CASHBACK_PARTNER_KEY,
        settings.CASHBACK_TIMEOUT,
        settings.CASHBACK_CONNECT_TIMEOUT,
        settings.CASHBACK_HTTP_POOL_SIZE,
    )
