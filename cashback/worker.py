"""The background worker: the purchase rows are its queue.

One dispatcher thread claims due rows and hands them to two bounded slot pools, one for
upstream sends (`CASHBACK_WORKER_THREADS`) and one for merchant webhooks
(`WEBHOOK_WORKER_THREADS`, at most `WEBHOOK_MERCHANT_CONCURRENCY` in flight per merchant).
It claims only as many rows as there are free slots, so nothing claimed waits for a slot
while its lease runs, and it claims again as soon as a slot frees. Housekeeping (expiring
leases, failing `pending` purchases past their window) runs on its own cadence in the
dispatcher, never behind a call in flight. Rows are claimed with
`SELECT … FOR UPDATE SKIP LOCKED` on PostgreSQL and a conditional update everywhere, in a
short transaction; the call happens after it commits. Any number of workers may run on any
hosts. When idle the dispatcher sleeps until a slot frees, a PostgreSQL NOTIFY says a
purchase is due now (`cashback.wakeup`), or `CASHBACK_WORKER_IDLE_SLEEP` passes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from cashback import alerts, lifecycle, services, spool, webhooks
from cashback.models import Purchase
from cashback.wakeup import Listener
from monitoring.heartbeat import Heartbeat

logger = logging.getLogger(__name__)

# How long the dispatcher lets freed slots gather before claiming for them (bounded: it then
# claims for whatever is free, so a few stalled slots never hold up the others).
COALESCE_SECONDS = 0.005
# How often a busy dispatcher looks for due webhooks while only sends free slots.
WEBHOOK_CLAIM_SECONDS = 0.25

# The status changes are cashback.lifecycle's; this loop calls them by name.
LEASE_EXPIRED = lifecycle.LEASE_EXPIRED


def _send(purchase: Purchase) -> None:
    try:
        services.send_claimed(purchase)
    except Exception:
        # The lease will run out and an admin will see it as unknown; nothing is lost.
        logger.exception("sending failed", extra={"order_id": purchase.order_id})


def housekeeping(now: datetime) -> int:
    """Expire leases and fail what is past its window; return how many purchases failed.

    Runs on its own cadence, never behind a call in flight. A per-pass heartbeat belongs here.
    """
    spool.replay()  # answers this host kept while the database was away, first
    lifecycle.expire_leases(now)
    failed = lifecycle.fail_expired(now)
    alerts.periodic_checks(now)  # deposit runways (cashback.alerts), at its own interval
    return failed


def run_once(pool: ThreadPoolExecutor | None = None, now: datetime | None = None) -> int:
    """Do one whole pass of every job and wait for it; return how many rows it handled.

    For tests and one-off runs, where time is moved by passing `now`; `run_forever` is the
    worker itself and never waits for a pass.
    """
    now = now or timezone.now()
    handled = housekeeping(now)
    claimed = lifecycle.claim_due(now, limit=settings.CASHBACK_WORKER_THREADS * 2)
    _run_all(pool, _send, claimed)
    deliveries = webhooks.claim_due(now, limit=settings.WEBHOOK_WORKER_THREADS * 2)
    _run_all(pool, webhooks.deliver_claimed, deliveries)
    return handled + len(claimed) + len(deliveries)


def _run_all(
    pool: ThreadPoolExecutor | None, fn: Callable[[Any], None], items: Iterable[Any]
) -> None:
    if pool is None:
        for item in items:
            fn(item)
        return
    list(pool.map(_in_thread(fn), items))


def _in_thread(fn: Callable[[Any], None]) -> Callable[[Any], None]:
    def run(item: Any) -> None:
        try:
            fn(item)
        finally:
            # Hand the thread's database connection back (to the pool, or closed).
            close_old_connections()

    return run


class Slots:
    """A bounded pool of threads that counts its free slots and says when one frees."""

    def __init__(self, name: str, size: int, freed: threading.Event) -> None:
        self.size = size
        self.pool = ThreadPoolExecutor(size, thread_name_prefix=name)
        self._busy = 0
        self._lock = threading.Lock()
        self._freed = freed

    def free(self) -> int:
        with self._lock:
            return self.size - self._busy

    def filling(self) -> bool:
        """Return whether some slots are busy and fewer than half are free."""
        with self._lock:
            return 0 < self.size - self._busy < self.size / 2

    def submit(self, fn: Callable[[Any], None], item: Any) -> None:
        with self._lock:
            self._busy += 1
        self.pool.submit(self._run, _in_thread(fn), item)

    def _run(self, fn: Callable[[Any], None], item: Any) -> None:
        try:
            fn(item)
        finally:
            with self._lock:
                self._busy -= 1
            self._freed.set()

    def shutdown(self) -> None:
        """Wait for the calls in flight (each bounded by its timeout) and stop the threads."""
        self.pool.shutdown(wait=True)


class Dispatcher:
    """Claim due rows into free slots until `stop` is set; see the module docstring."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.wake = threading.Event()  # a slot freed, a NOTIFY arrived, or stop was asked
        self.sends = Slots("send", settings.CASHBACK_WORKER_THREADS, self.wake)
        self.hooks = Slots("webhook", settings.WEBHOOK_WORKER_THREADS, self.wake)
        self.listener = Listener(self.wake, stop)
        self.passes = 0  # dispatcher iterations, for tests and the heartbeat
        self._next_hook_claim = 0.0
        self._hooks_more = True
        self.heartbeat = Heartbeat()

    def run(self) -> None:
        self.listener.start()
        next_housekeeping = 0.0
        try:
            while not self.stop.is_set():
                if self.sends.filling() or self.hooks.filling():
                    # Under load slots free one by one: gather a few per claim, not one each.
                    time.sleep(COALESCE_SECONDS)
                # Cleared before looking at the slots, so a slot that frees meanwhile wakes us.
                self.wake.clear()
                more = False
                try:
                    if time.monotonic() >= next_housekeeping:
                        housekeeping(timezone.now())
                        next_housekeeping = (
                            time.monotonic() + settings.CASHBACK_WORKER_HOUSEKEEPING_INTERVAL
                        )
                    more = self.dispatch(timezone.now())
                    # A pass completed: say so (host, pid, version; monitoring.heartbeat).
                    self.heartbeat.beat()
                except Exception:
                    logger.exception("worker pass failed; retrying")
                    close_old_connections()
                self.passes += 1
                if more:
                    continue  # every free slot was filled: there may be more due already
                close_old_connections()  # idle: hand the connection back to the pool
                idle = min(
                    settings.CASHBACK_WORKER_IDLE_SLEEP, next_housekeeping - time.monotonic()
                )
                self._sleep(idle)
        finally:
            self.sends.shutdown()
            self.hooks.shutdown()
            self.listener.join()
            try:
                self.heartbeat.stop()
            except Exception:
                logger.warning("could not record that the worker stopped", exc_info=True)
            close_old_connections()

    def _sleep(self, seconds: float) -> None:
        """Sleep until woken, `stop` is set or `seconds` pass."""
        deadline = time.monotonic() + seconds
        while not self.stop.is_set():
            left = deadline - time.monotonic()
            # In slices, so a stop asked by a signal handler is seen within half a second.
            if left <= 0 or self.wake.wait(min(left, 0.5)):
                return

    def dispatch(self, now: datetime) -> bool:
        """Claim due rows for the free slots; return whether a pool may have more to do."""
        more = False
        free = self.sends.free()
        if free:
            claimed = lifecycle.claim_due(now, limit=free)
            for purchase in claimed:
                self.sends.submit(_send, purchase)
            more = len(claimed) == free
        free = self.hooks.free()
        # Not on every freed send slot: at most every WEBHOOK_CLAIM_SECONDS, unless a delivery
        # just finished or the last claim filled every free slot (there may be more due).
        if free and (self._hooks_more or time.monotonic() >= self._next_hook_claim):
            deliveries = webhooks.claim_due(now, limit=free)
            # Set before submitting, so a delivery that finishes at once still says so.
            self._hooks_more = len(deliveries) == free
            self._next_hook_claim = time.monotonic() + min(
                WEBHOOK_CLAIM_SECONDS, settings.CASHBACK_WORKER_IDLE_SLEEP
            )
            more = more or self._hooks_more
            for delivery in deliveries:
                self.hooks.submit(_delivered(self), delivery)
        return more


def _delivered(dispatcher: Dispatcher) -> Callable[[Any], None]:
    """Deliver one webhook, then let the dispatcher claim for the freed slot at once."""

    def deliver(delivery: Any) -> None:
        try:
            webhooks.deliver_claimed(delivery)
        finally:
            dispatcher._hooks_more = True

    return deliver


def run_forever(stop: threading.Event) -> None:
    """Work until `stop` is set, then finish the calls in flight."""
    Dispatcher(stop).run()
