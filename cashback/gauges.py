"""The gauges `/metrics` (cashback.metrics_endpoint) reads from the database, cached so scrapes stay cheap.

Each gauge comes from a query that an index answers (the partial indexes of open purchases
and due webhooks, the heartbeat table, the ledger's time index) and is computed at most every
METRICS_CACHE_SECONDS per process; the deposit runway, which sums a week of ledger entries,
at most every METRICS_RUNWAY_CACHE_SECONDS. A scrape between two refreshes costs nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db.models import Count, Min, Sum
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from cashback import alerts
from cashback.models import Alert, Purchase, Status, WebhookDelivery
from monitoring import heartbeat

logger = logging.getLogger(__name__)

GAUGE_STATUSES = (Status.QUEUED, Status.SENDING, Status.PENDING, Status.UNKNOWN, Status.FAILED)


class _Cached:
    """A value recomputed at most every `ttl()` seconds, shared by the threads of a process."""

    def __init__(self, compute: Callable[[], Any], ttl: Callable[[], float]) -> None:
        self.compute, self.ttl = compute, ttl
        self.value: Any = None
        self.expires = 0.0
        self.lock = threading.Lock()

    def get(self) -> Any:
        with self.lock:
            if time.monotonic() >= self.expires:
                self.value = self.compute()
                self.expires = time.monotonic() + self.ttl()
            return self.value

    def clear(self) -> None:
        with self.lock:
            self.expires = 0.0


def _state_gauges() -> list[GaugeMetricFamily]:
    now = timezone.now()
    statuses = GaugeMetricFamily(
        "cashback_purchases_in_status",
        "Purchases now in each status that needs the gateway or an admin.",
        labels=["status"],
    )
    for status in GAUGE_STATUSES:
        # One count per status: each is answered by a partial index on that status.
        statuses.add_metric([status], Purchase.objects.filter(status=status).count())

    oldest_unknown = Purchase.objects.filter(status=Status.UNKNOWN).aggregate(t=Min("created_at"))
    unknown_age = GaugeMetricFamily(
        "cashback_oldest_unknown_age_seconds",
        "Age of the oldest purchase in `unknown` (0: none).",
    )
    unknown_age.add_metric([], _age(now, oldest_unknown["t"]))

    due_age = GaugeMetricFamily(
        "cashback_oldest_due_age_seconds",
        "How long the longest-waiting due purchase has waited past its next attempt (0: none).",
        labels=["status"],
    )
    for status in (Status.QUEUED, Status.PENDING):
        oldest = Purchase.objects.filter(status=status, next_attempt_at__lte=now).aggregate(
            t=Min("next_attempt_at")
        )
        due_age.add_metric([status], _age(now, oldest["t"]))

    backlog = GaugeMetricFamily(
        "cashback_webhook_backlog",
        "Merchant webhooks not yet delivered, by state.",
        labels=["state"],
    )
    counts = dict(
        WebhookDelivery.objects.filter(
            state__in=(WebhookDelivery.State.PENDING, WebhookDelivery.State.DELIVERING)
        )
        .values_list("state")
        .annotate(n=Count("id"))
        .order_by()
    )
    for state in (WebhookDelivery.State.PENDING, WebhookDelivery.State.DELIVERING):
        backlog.add_metric([state], counts.get(state, 0))
    oldest_webhook = WebhookDelivery.objects.filter(
        state=WebhookDelivery.State.PENDING, next_attempt_at__lte=now
    ).aggregate(t=Min("next_attempt_at"))
    webhook_age = GaugeMetricFamily(
        "cashback_oldest_due_webhook_age_seconds",
        "How long the longest-waiting due webhook has waited past its next attempt (0: none).",
    )
    webhook_age.add_metric([], _age(now, oldest_webhook["t"]))

    workers = heartbeat.worker_status(now)
    alerts.check_workers(workers, now)
    beat_age = GaugeMetricFamily(
        "cashback_worker_heartbeat_age_seconds",
        "Seconds since a running cashback_worker last completed a pass (absent: none runs).",
    )
    age = workers.age(now)
    if age is not None:
        beat_age.add_metric([], max(age, 0.0))
    live = GaugeMetricFamily(
        "cashback_workers_live",
        "cashback_worker processes that completed a pass within WORKER_SILENT_AFTER.",
    )
    live.add_metric([], workers.live)

    open_gauge = GaugeMetricFamily(
        "cashback_alerts_open", "Unresolved back-office alerts, by kind.", labels=["kind"]
    )
    occurrences = GaugeMetricFamily(
        "cashback_alert_occurrences",
        "How often the unresolved alerts of each kind occurred since they were first seen.",
        labels=["kind"],
    )
    open_alerts = {
        kind: (n, total or 0)
        for kind, n, total in Alert.objects.filter(resolved_at__isnull=True)
        .values_list("kind")
        .annotate(n=Count("id"), total=Sum("count"))
        .values_list("kind", "n", "total")
        .order_by()
    }
    for kind in Alert.Kind.values:
        n, total = open_alerts.get(kind, (0, 0))
        open_gauge.add_metric([kind], n)
        occurrences.add_metric([kind], total)
    return [
        statuses,
        unknown_age,
        due_age,
        backlog,
        webhook_age,
        beat_age,
        live,
        open_gauge,
        occurrences,
    ]


def _runway_gauges() -> list[GaugeMetricFamily]:
    runway = GaugeMetricFamily(
        "cashback_deposit_runway_days",
        "Days until a merchant's deposit in a currency runs out at its average daily spend.",
        labels=["merchant", "currency"],
    )
    found = alerts.runways()
    for r in found:
        runway.add_metric([r.merchant, r.currency], r.days)
    alerts.check_runways(found)
    return [runway]


def _age(now: datetime, since: datetime | None) -> float:
    return max((now - since).total_seconds(), 0.0) if since is not None else 0.0


STATE = _Cached(_state_gauges, lambda: settings.METRICS_CACHE_SECONDS)
RUNWAY = _Cached(_runway_gauges, lambda: settings.METRICS_RUNWAY_CACHE_SECONDS)


class DatabaseCollector(Collector):
    """Yield the cached database gauges; a failed refresh is logged and skipped."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for cached in (STATE, RUNWAY):
            try:
                families: Iterable[GaugeMetricFamily] = cached.get()
            except Exception:
                logger.warning("metrics: database gauges unavailable", exc_info=True)
                continue
            yield from families
