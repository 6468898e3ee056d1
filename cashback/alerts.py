"""Back-office alerts about the gateway's state: deposit runway and silent workers; and
their resolution by an admin (audited).

A condition alert (`runway_low`, `worker_silent`) counts occurrences: it is raised once
when the condition starts, its `last_seen` follows while it lasts, and after an admin
resolved it, the next occurrence raises it again with the count one higher.
`upstream_paid_unrecorded` and `auth_failed` are raised by the purchase lifecycle.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from audit import services as audit
from cashback.lifecycle import raise_alert
from cashback.models import Alert
from merchants.models import Balance, EntryKind, LedgerEntry
from merchants.services import RUNWAY_WINDOW_DAYS
from monitoring.heartbeat import WorkerStatus

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runway:
    """A merchant's deposit in one currency against what it spent over the window."""

    merchant: str
    currency: str
    available_minor: int
    spent_minor: int  # reservations net of releases over RUNWAY_WINDOW_DAYS

    @property
    def days(self) -> float:
        """Days the deposit lasts at the window's average daily spend (as the admin counts)."""
        # An exact ratio of integers, reported in days (not money): a float for Prometheus.
        return float(Fraction(self.available_minor * RUNWAY_WINDOW_DAYS, self.spent_minor))


def runways(now: datetime | None = None) -> list[Runway]:
    """Return each merchant's deposit runway per currency: available / average daily spend.

    The spend is what purchases reserved (net of releases) over the last RUNWAY_WINDOW_DAYS,
    as merchants.services.runway_days counts it for one balance, here for all in two queries;
    a merchant and currency with no spend in that window has no runway (it never runs out).
    """
    now = now or timezone.now()
    spent = (
        LedgerEntry.objects.filter(
            created_at__gte=now - timedelta(days=RUNWAY_WINDOW_DAYS),
            kind__in=(EntryKind.RESERVATION, EntryKind.RELEASE),
        )
        .values_list("merchant_id", "currency")
        .annotate(net=Sum("amount_minor"))
        .order_by()
    )
    spend = {(m, c): -net for m, c, net in spent if net < 0}
    if not spend:
        return []
    balances = Balance.objects.filter(merchant_id__in={m for m, _ in spend}).values_list(
        "merchant_id", "merchant__public_id", "currency", "available_minor"
    )
    result = []
    for merchant_id, public_id, currency, available in balances:
        total = spend.get((merchant_id, currency))
        if total:
            result.append(Runway(public_id, currency, available, total))
    return sorted(result, key=lambda r: (r.merchant, r.currency))


def observe(kind: str, message: str, now: datetime, *, subject: str = "") -> None:
    """Note that a condition holds: raise its alert if it is not open, else refresh it."""
    ongoing = Alert.objects.filter(kind=kind, subject=subject, resolved_at__isnull=True).update(
        last_seen=now, message=message
    )
    if not ongoing:
        raise_alert(kind, message, now, subject=subject)


def check_runways(found: list[Runway], now: datetime | None = None) -> None:
    """Raise `runway_low` for each merchant and currency whose deposit lasts under a day."""
    now = now or timezone.now()
    for r in found:
        if r.days < settings.RUNWAY_ALERT_DAYS:
            observe(
                Alert.Kind.RUNWAY_LOW,
                f"{r.merchant}'s {r.currency} deposit lasts {r.days:.2f} days at its average "
                f"daily spend: record a deposit, or the purchases lose their partner cashback.",
                now,
                subject=f"{r.merchant}:{r.currency}"[:100],
            )


_next_check = 0.0


def periodic_checks(now: datetime) -> None:
    """Check the deposit runways, at most every ALERT_CHECK_INTERVAL in this process."""
    global _next_check
    if time.monotonic() < _next_check:
        return
    _next_check = time.monotonic() + settings.ALERT_CHECK_INTERVAL
    check_runways(runways(now), now)


def check_workers(status: WorkerStatus, now: datetime) -> None:
    """Raise `worker_silent` when workers ran before but none passed within the setting."""
    if status.known and status.silent(now, settings.WORKER_SILENT_AFTER):
        last = status.last_pass_at.isoformat() if status.last_pass_at else "its stop"
        observe(
            Alert.Kind.WORKER_SILENT,
            f"No cashback_worker completed a pass since {last}: start one (systemctl start "
            "cashback-worker); queued purchases, retries and webhooks wait meanwhile.",
            now,
        )


def resolve_alert(alert_id: Any, actor: Any, now: datetime | None = None) -> bool:
    """Resolve an open alert and audit it in the same transaction; False if it was not open."""
    now = now or timezone.now()
    with transaction.atomic():
        alert = Alert.objects.select_for_update().filter(pk=alert_id).first()
        if alert is None or alert.resolved_at is not None:
            return False
        alert.resolved_at = now
        alert.save(update_fields=["resolved_at"])
        audit.record(actor, "resolve_alert", alert, {"resolved_at": [None, now]})
    return True
