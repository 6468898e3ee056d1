"""Merchant webhooks: signed POSTs when a purchase is final, and `balance.low`.

Signed as the Standard Webhooks specification says (the `standardwebhooks` package): headers
`webhook-id` (`msg_<delivery id>`, the same on every retry, so receivers can deduplicate),
`webhook-timestamp` and `webhook-signature`, with the merchant's `whsec_` secret. A merchant
whose secret predates that form (it does not decode as base64) also gets the old header
`X-Cashback-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "t.body">` until it rotates;
its Standard Webhooks signature uses the UTF-8 bytes of the old secret as the key.
Delivered at least once: retried on 5xx, 429, timeouts and connection errors, never on 4xx.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Q
from django.utils import timezone
from requests_hardened.ip_filter import InvalidIPAddress
from standardwebhooks import Webhook

from cashback.models import WebhookDelivery
from gateway import metrics
from gateway.db import locked
from gateway.http import webhook_post
from merchants.models import is_standard_webhook_secret
from merchants.webhooks import WebhookUrlError, check_webhook_syntax

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Cashback-Signature"
LEASE = timedelta(minutes=2)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """Return the signature header value for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(
    secret: str, header: str, body: bytes, *, tolerance: int = 300, now: float | None = None
) -> bool:
    """Return whether `header` signs `body` with `secret` within `tolerance` seconds."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((now or time.time()) - timestamp) > tolerance:
        return False
    return hmac.compare_digest(
        sign(secret, timestamp, body), f"t={timestamp},v1={parts.get('v1', '')}"
    )


def message_id(delivery_id: int) -> str:
    """Return the `webhook-id` of a delivery: stable across its retries."""
    return f"msg_{delivery_id}"


def signing_key(secret: str) -> Webhook:
    """Return the Standard Webhooks signer of a merchant's secret (old secrets: their bytes)."""
    if is_standard_webhook_secret(secret):
        return Webhook(secret)
    return Webhook(secret.encode())


def signature_headers(secret: str, delivery_id: int, timestamp: int, body: bytes) -> dict[str, str]:
    """Return the signature headers of one delivery attempt."""
    msg_id = message_id(delivery_id)
    when = datetime.fromtimestamp(timestamp, UTC)
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signing_key(secret).sign(msg_id, when, body.decode()),
    }
    if not is_standard_webhook_secret(secret):
        # Until the merchant rotates to a `whsec_` secret, its verifier may still be the old one.
        headers[SIGNATURE_HEADER] = sign(secret, timestamp, body)
    return headers


def event_body(delivery: WebhookDelivery) -> bytes:
    """Return the JSON body of a delivery, the same bytes on every attempt."""
    created = delivery.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return json.dumps(
        # `type`/`timestamp`/`data` as Standard Webhooks suggests; `event` as before.
        {
            "type": delivery.event,
            "timestamp": created,
            "event": delivery.event,
            "data": delivery.payload,
        },
        separators=(",", ":"),
    ).encode()


def claim_due(now: datetime, limit: int) -> list[WebhookDelivery]:
    """Claim due deliveries (and ones whose lease ran out) for this worker.

    At most `WEBHOOK_MERCHANT_CONCURRENCY` deliveries of one merchant are in flight across
    all workers, so one merchant's slow endpoint holds a few slots, never all of them.
    """
    cap = max(1, settings.WEBHOOK_MERCHANT_CONCURRENCY)
    lease_until = now + LEASE
    due = Q(state=WebhookDelivery.State.PENDING, next_attempt_at__lte=now) | Q(
        state=WebhookDelivery.State.DELIVERING, lease_until__lt=now
    )
    with transaction.atomic():
        in_flight = Counter(
            dict(
                WebhookDelivery.objects.filter(
                    state=WebhookDelivery.State.DELIVERING, lease_until__gte=now
                )
                .values_list("merchant_id")
                .annotate(n=Count("id"))
                .order_by()
            )
        )
        ids: list[int] = []
        # Each round leaves out the merchants at their cap; a round that skipped none, or
        # filled the limit, is the last. Rows this transaction locked are left out by id
        # (SKIP LOCKED does not skip our own locks).
        for _ in range(4):
            full = [merchant for merchant, n in in_flight.items() if n >= cap]
            rows = list(
                locked(
                    WebhookDelivery.objects.filter(due)
                    .exclude(merchant_id__in=full)
                    .exclude(pk__in=ids)
                    .order_by("next_attempt_at")
                ).values_list("pk", "merchant_id")[: limit - len(ids)]
            )
            skipped = False
            for pk, merchant in rows:
                if in_flight[merchant] >= cap:
                    skipped = True
                    continue
                in_flight[merchant] += 1
                ids.append(pk)
            if not skipped or len(ids) >= limit:
                break
        if not ids:
            return []
        WebhookDelivery.objects.filter(pk__in=ids).update(
            state=WebhookDelivery.State.DELIVERING,
            lease_until=lease_until,
            attempts=F("attempts") + 1,
        )
        return list(
            WebhookDelivery.objects.filter(pk__in=ids, lease_until=lease_until).select_related(
                "merchant"
            )
        )


def deliver_claimed(delivery: WebhookDelivery) -> None:
    """POST one claimed delivery and record the answer."""
    try:
        _deliver(delivery)
    except Exception:
        logger.exception("webhook delivery crashed", extra={"delivery": delivery.pk})


def _deliver(delivery: WebhookDelivery) -> None:
    merchant = delivery.merchant
    url = merchant.webhook_url
    if not url or not merchant.webhook_secret:
        _finish(delivery, WebhookDelivery.State.FAILED, None, "no webhook URL configured")
        return
    try:
        # The syntax here; the address on the connection itself (webhook_post), so a
        # name that resolves differently now than when it was set is still refused.
        check_webhook_syntax(url, allow_http=settings.WEBHOOK_ALLOW_PRIVATE)
    except WebhookUrlError as exc:
        _finish(delivery, WebhookDelivery.State.FAILED, None, str(exc))
        return
    body = event_body(delivery)
    headers = {
        "Content-Type": "application/json",
        "X-Cashback-Delivery": str(delivery.pk),
        **signature_headers(merchant.webhook_secret, delivery.pk, int(time.time()), body),
    }
    try:
        status = webhook_post(url, body, headers)
    except InvalidIPAddress as exc:
        host = urlsplit(url).hostname
        error = f"The host {host} resolves to {exc}, which is not a public address."
        _finish(delivery, WebhookDelivery.State.FAILED, None, error)
        return
    except requests.RequestException as exc:
        _retry_or_fail(delivery, None, f"{type(exc).__name__}")
        return
    if 200 <= status < 300:
        _finish(delivery, WebhookDelivery.State.DELIVERED, status, "")
    elif status >= 500 or status == 429:
        _retry_or_fail(delivery, status, f"HTTP {status}")
    else:
        _finish(delivery, WebhookDelivery.State.FAILED, status, f"HTTP {status}: not retried")


def _retry_or_fail(delivery: WebhookDelivery, status: int | None, error: str) -> None:
    schedule = settings.WEBHOOK_RETRY_SCHEDULE
    if delivery.attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
        _finish(delivery, WebhookDelivery.State.FAILED, status, f"{error}; attempts ran out")
        return
    delay = schedule[min(delivery.attempts, len(schedule)) - 1]
    metrics.WEBHOOK_DELIVERIES.labels(result="retry").inc()
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        state=WebhookDelivery.State.PENDING,
        next_attempt_at=timezone.now() + timedelta(seconds=delay),
        lease_until=None,
        last_status=status,
        last_error=error,
    )


def _finish(delivery: WebhookDelivery, state: str, status: int | None, error: str) -> None:
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        state=state,
        lease_until=None,
        last_status=status,
        last_error=error,
        delivered_at=timezone.now() if state == WebhookDelivery.State.DELIVERED else None,
    )
    metrics.WEBHOOK_DELIVERIES.labels(result=state).inc()
    logger.info("webhook %s", state, extra={"delivery": delivery.pk, "http_status": status})


def redeliver(delivery_id: int) -> None:
    """Queue a delivery again now (admin action)."""
    WebhookDelivery.objects.filter(pk=delivery_id).update(
        state=WebhookDelivery.State.PENDING, next_attempt_at=timezone.now(), lease_until=None
    )
