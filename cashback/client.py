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
import re
import time
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus, urlencode

import certifi
from django.conf import settings

from cashback.models import Outcome
from cashback.validators import is_valid_unit
from gateway.http import DEADLINE_SLACK, Exchange, UpstreamPool
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
    # The answer as received (bounded, redacted, storable in any text column); "" if none.
    response_excerpt: str = ""


class CashbackClient:
    """Send purchases to `new_purchase` over a pooled, kept-alive connection.

    Contract: `new_purchase()` returns within `timeout` + `DEADLINE_SLACK` (0.25 s) seconds,
    whatever upstream and the network do (name lookup, connect, TLS, sending and the whole
    answer share one deadline; `connect_timeout` caps the connect phase inside it). A
    sending purchase's lease is therefore `CASHBACK_TIMEOUT` + `CASHBACK_LEASE_MARGIN`.
    Redirects are never followed, and answers are read to `MAX_ANSWER_BYTES`.
    """

    def __init__(
        self,
        url: str,
        partner: str,
        partner_key: str,
        *,
        timeout: float,
        connect_timeout: float,
        pool_size: int,
        ca_certs: str | None = None,
    ) -> None:
        self.url = url
        # Encoded once: the first fields of every request body.
        self._credentials = urlencode({"partner": partner, "partner_key": partner_key})
        self.timeout = timeout
        self.connect_timeout = min(connect_timeout, timeout)
        self.pool = UpstreamPool(
            url,
            pool_size=pool_size,
            ca_certs=ca_certs or os.environ.get("REQUESTS_CA_BUNDLE") or certifi.where(),
        )

    def __repr__(self) -> str:
        return f"<CashbackClient {self.url}>"

    def new_purchase(self, fields: Mapping[str, str]) -> UpstreamResult:
        """POST one purchase (form-encoded, as every known client does) and classify the answer."""
        started = time.monotonic()
        exchange = self.pool.post(
            f"{self._credentials}&{form_encode(fields)}".encode(),
            FORM_HEADERS,
            timeout=self.timeout,
            connect_timeout=self.connect_timeout,
        )
        ms = _ms_since(started)
        if exchange.status is not None and exchange.failure in ("too-large", "encoding"):
            return _unreadable_answer(exchange, ms)
        if exchange.status is not None and not exchange.failure:
            location = exchange.headers.get("Location")
            return classify_response(exchange.status, exchange.body, ms, location=location)
        return _classify_failure(exchange, ms, self.timeout)


# What quote_plus leaves as it is: a value made only of these is its own form encoding.
_FORM_SAFE = re.compile(r"[A-Za-z0-9_.~-]*")


def form_encode(fields: Mapping[str, str]) -> str:
    """Return `fields` form-encoded, exactly as `urlencode` would (faster for plain values)."""
    return "&".join(
        f"{quote_plus(name)}={value if _FORM_SAFE.fullmatch(value) else quote_plus(value)}"
        for name, value in fields.items()
    )


FORM_HEADERS = {
    "Content-Type": "application/x-www-form-urlencoded",
    "Accept": "application/json",
}
# The lease of a sending purchase must cover a call: CASHBACK_TIMEOUT plus this.
CALL_SLACK = DEADLINE_SLACK


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _unreadable_answer(exchange: Exchange, ms: int) -> UpstreamResult:
    """An answer over the size bound or in a coding we cannot read: it may have been ok."""
    return UpstreamResult(
        Outcome.AMBIGUOUS,
        exchange.status,
        error=f"unreadable answer (HTTP {exchange.status}, {exchange.detail})",
        duration_ms=ms,
        response_excerpt=make_excerpt(exchange.body[:4096].decode("utf-8", "backslashreplace")),
    )


def _classify_failure(exchange: Exchange, ms: int, timeout: float) -> UpstreamResult:
    """Decide from what the transport did whether a failed call may have reached upstream.

    `NOT_SENT` only when no byte of the request was written (the transport records it);
    anything that failed after sending began is `AMBIGUOUS`, TLS errors included.
    """
    if not exchange.request_started:
        messages = {
            "dns": "could not connect to upstream (its name does not resolve)",
            "connect-timeout": "connect timeout",
            "tls": "TLS handshake failed",
        }
        error = messages.get(exchange.failure, "could not connect to upstream")
        return UpstreamResult(Outcome.NOT_SENT, error=error, duration_ms=ms)
    status = exchange.status
    if exchange.failure == "timeout":
        if exchange.phase == "answered" and status is not None:
            error = f"answer not complete within {timeout:g} s (HTTP {status})"
        else:
            error = f"no answer within {timeout:g} s (read timeout)"
    elif exchange.detail == "TLS stream broken":
        error = "connection lost after the request was sent (TLS stream broken)"
    else:
        error = "connection lost after the request was sent"
    excerpt = make_excerpt(exchange.body.decode("utf-8", "backslashreplace"))
    return UpstreamResult(
        Outcome.AMBIGUOUS, status, error=error, duration_ms=ms, response_excerpt=excerpt
    )


def classify_response(
    status: int, body: bytes, ms: int = 0, *, location: str | None = None
) -> UpstreamResult:
    """Classify an HTTP answer of upstream, per the status table of SPEC.md.

    Anything outside the documented shape is `AMBIGUOUS`, with the answer kept as evidence
    in `response_excerpt`; `cashback_amount` and `unit` are only set when they are valid.
    """
    text = body.decode("utf-8", "backslashreplace")
    data, problem = _parse_json_object(body)
    excerpt = make_excerpt(text, data)

    def result(outcome: str, error: str, **kwargs: Any) -> UpstreamResult:
        return UpstreamResult(
            Outcome(outcome),
            status,
            error=error,
            duration_ms=ms,
            response_excerpt=excerpt,
            **kwargs,
        )

    if status in RETRYABLE_STATUSES:
        return result(Outcome.NOT_SENT, f"upstream busy (HTTP {status})")
    if 300 <= status < 400:
        target = f" to {storable(redact(location))[:500]}" if location else ""
        return result(
            Outcome.AMBIGUOUS, f"upstream answered a redirect (HTTP {status}{target}), not followed"
        )
    if status >= 500:
        return result(Outcome.AMBIGUOUS, f"upstream error (HTTP {status})")
    unexpected = f"unexpected answer (HTTP {status}, not the documented JSON)"
    if data is None:
        return result(
            Outcome.AMBIGUOUS, f"{unexpected[:-1]}: {problem})" if problem else unexpected
        )
    outcome = data.get("result")
    if outcome == "ok" and 200 <= status < 300:
        amount, unit = data.get("cashback_amount"), data.get("unit")
        if not _is_amount(amount):
            return result(Outcome.AMBIGUOUS, f"{unexpected[:-1]}: cashback_amount is not valid)")
        if not (isinstance(unit, str) and is_valid_unit(unit)):
            return result(Outcome.AMBIGUOUS, f"{unexpected[:-1]}: unit is not valid)")
        return result(Outcome.OK, "", cashback_amount=amount, unit=unit)
    if outcome == "error":
        message = data.get("error")
        if not isinstance(message, str):
            return result(Outcome.AMBIGUOUS, f"{unexpected[:-1]}: error is not a text)")
        if any(_is_control(c) for c in message if not c.isspace()):
            return result(Outcome.AMBIGUOUS, f"{unexpected[:-1]}: error holds control characters)")
        if is_auth_failed(message):
            return result(Outcome.AUTH_FAILED, AUTH_FAILED_MESSAGE)
        message = storable(redact(" ".join(message.split())))[:1000] or "unspecified error"
        return result(Outcome.REJECTED, message)
    return result(Outcome.AMBIGUOUS, unexpected)


# The documented `cashback_amount` is an amount in bytes; it must fit a signed 64-bit column.
MAX_AMOUNT = 2**63 - 1
EXCERPT_CHARS = 2000


def _is_amount(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_AMOUNT


def _is_control(char: str) -> bool:
    return unicodedata.category(char) in ("Cc", "Cs")


# Escaped in evidence: control characters, lone surrogates, and the invisible ones that
# could make an admin misread it (bidi overrides, zero-width, line separators).
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cs", "Cf", "Zl", "Zp"})


def storable(text: str) -> str:
    """Return `text` with NUL, lone surrogates and other control characters escaped.

    The result fits any database text column (PostgreSQL refuses NUL and surrogates) and
    shows an admin exactly which characters were there. Newlines and tabs stay.
    """
    if text.isprintable():
        return text
    out = []
    for char in text:
        if char in "\n\t" or unicodedata.category(char) not in _ESCAPED_CATEGORIES:
            out.append(char)
        elif ord(char) < 0x100:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(f"\\u{ord(char):04x}")
    return "".join(out)


def make_excerpt(text: str, data: dict[str, Any] | None = None) -> str:
    """Return the answer as evidence: redacted, storable, bounded.

    When the answer is longer than the bound and holds an amount or a unit, their exact
    text is added, so an admin reconciling the purchase always sees them.
    """
    clean = storable(redact(text))
    if len(clean) <= EXCERPT_CHARS:
        return clean
    tail = ""
    if data is not None:
        found = [
            f"{name}={storable(redact(json.dumps(data[name])))[:200]}"
            for name in ("cashback_amount", "unit")
            if name in data
        ]
        if found:
            tail = " … " + ", ".join(found)
    return clean[: EXCERPT_CHARS - len(tail) - 2] + " …" + tail


def is_auth_failed(message: str) -> bool:
    """Return whether upstream's error says "authentication failed", as a person reads it.

    Case, surrounding whitespace, trailing punctuation and runs of inner whitespace do not
    change the meaning, so they do not change the match.
    """
    words = " ".join(message.split()).rstrip(".!?;, ").casefold()
    return words == AUTH_FAILED_MESSAGE


class _DuplicateKeyError(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) != len(pairs):
        raise _DuplicateKeyError
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_json_object(body: bytes) -> tuple[dict[str, Any] | None, str]:
    """Return (the answer's JSON object, "") or (None, why it is not one, or "")."""
    try:
        data = json.loads(
            body.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant
        )
    except _DuplicateKeyError:
        return None, "a key appears twice"
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None, ""
    return (data, "") if isinstance(data, dict) else (None, "")


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
