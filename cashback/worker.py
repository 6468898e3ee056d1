"""The background worker: the purchase rows are its queue.

Each pass it (1) turns `sending` purchases whose lease ran out into `unknown`, (2) fails
`pending` ones past their retry window, (3) claims due `queued`/`pending` rows and sends them
on a thread pool, and (4) delivers due merchant webhooks. Rows are claimed with
`SELECT … FOR UPDATE SKIP LOCKED` on PostgreSQL and a conditional update everywhere, in a
short transaction; the upstream call happens after it commits. Any number of workers may
run on any hosts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections, transaction
from django.db.models import F
from django.utils import timezone

from cashback import services, webhooks
from cashback.models import Purchase, Status
from gateway.db import locked

logger = logging.getLogger(__name__)

BATCH = 50
LEASE_EXPIRED = "lease ran out: the sending process stopped before recording an answer"


def expire_leases(now: datetime) -> int:
    """Mark `sending` purchases whose lease ran out as `unknown` (never re-sent)."""
    count = Purchase.objects.filter(status=Status.SENDING, lease_until__lt=now).update(
        status=Status.UNKNOWN, error=LEASE_EXPIRED, lease_until=None, updated_at=now
    )
    if count:
        logger.warning("leases expired", extra={"count": count})
    return count


def fail_expired(now: datetime) -> int:
    """Fail `pending` purchases past their retry window and release their reservations."""
    failed = 0
    while True:
        with transaction.atomic():
            rows = list(
                locked(
                    Purchase.objects.filter(status=Status.PENDING, retry_deadline__lt=now)
                    .select_related("merchant")
                    .order_by("retry_deadline")
                )[:BATCH]
            )
            for purchase in rows:
                services.fail(purchase, now)
        failed += len(rows)
        if len(rows) < BATCH:
            return failed


def claim_due(now: datetime, limit: int) -> list[Purchase]:
    """Claim up to `limit` due purchases for this worker: `queued`/`pending` → `sending`."""
    lease_until = now + timedelta(seconds=services.lease_seconds())
    with transaction.atomic():
        candidates = list(
            locked(
                Purchase.objects.filter(
                    status__in=(Status.QUEUED, Status.PENDING), next_attempt_at__lte=now
                ).order_by("next_attempt_at")
            ).values_list("pk", flat=True)[:limit]
        )
        if not candidates:
            return []
        Purchase.objects.filter(
            pk__in=candidates, status__in=(Status.QUEUED, Status.PENDING)
        ).update(
            status=Status.SENDING,
            lease_until=lease_until,
            attempts=F("attempts") + 1,
            updated_at=now,
        )
        return list(
            Purchase.objects.filter(
                pk__in=candidates, status=Status.SENDING, lease_until=lease_until
            ).select_related("merchant")
        )


def _send(purchase: Purchase) -> None:
    try:
        services.send_claimed(purchase)
    except Exception:
        # The lease will run out and an admin will see it as unknown; nothing is lost.
        logger.exception("sending failed", extra={"order_id": purchase.order_id})


def run_once(pool: ThreadPoolExecutor | None = None, now: datetime | None = None) -> int:
    """Do one pass of every job; return how many purchases and webhooks it handled."""
    now = now or timezone.now()
    expire_leases(now)
    handled = fail_expired(now)
    threads = settings.CASHBACK_WORKER_THREADS
    claimed = claim_due(now, limit=threads * 2)
    _run_all(pool, _send, claimed)
    deliveries = webhooks.claim_due(now, limit=threads * 2)
    _run_all(pool, webhooks.deliver_claimed, deliveries)
    return handled + len(claimed) + len(deliveries)


def _run_all(
    pool: ThreadPoolExecutor | None, fn: Callable[[Any], None], items: Iterable[Any]
) -> None:
    if pool is None:
        for item in items:
            fn(item)
        return

    def in_thread(item: Any) -> None:
        try:
            fn(item)
        finally:
            # Hand the thread's database connection back (to the pool, or closed).
            close_old_connections()

    list(pool.map(in_thread, items))


def run_forever(stop: threading.Event) -> None:
    """Loop until `stop` is set, sleeping briefly whenever there is nothing to do."""
    with ThreadPoolExecutor(settings.CASHBACK_WORKER_THREADS, thread_name_prefix="send") as pool:
        while not stop.is_set():
            try:
                handled = run_once(pool)
            except Exception:
                logger.exception("worker pass failed; retrying")
                handled = 0
                close_old_connections()
            if not handled:
                stop.wait(settings.CASHBACK_WORKER_IDLE_SLEEP)
