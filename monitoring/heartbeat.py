"""The worker's heartbeat, and what the web side reads from it (readiness, banner, metrics)."""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Max, Q
from django.utils import timezone

from gateway import metrics
from monitoring.models import WorkerHeartbeat

logger = logging.getLogger(__name__)

# Rows of workers silent this long are deleted when a worker starts.
FORGET_AFTER = timedelta(days=7)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Heartbeat:
    """This process's heartbeat row, written at most every WORKER_HEARTBEAT_INTERVAL."""

    def __init__(self) -> None:
        self.id = worker_id()
        self.started_at = timezone.now()
        self._last_write = 0.0

    def start(self) -> None:
        """Forget long-gone workers and register this one."""
        now = timezone.now()
        WorkerHeartbeat.objects.filter(last_pass_at__lt=now - FORGET_AFTER).delete()
        WorkerHeartbeat.objects.update_or_create(
            worker=self.id,
            defaults={
                "host": socket.gethostname()[:100],
                "pid": os.getpid(),
                "version": settings.GATEWAY_VERSION[:40],
                "started_at": self.started_at,
                "last_pass_at": now,
                "stopped_at": None,
            },
        )
        self._last_write = time.monotonic()

    def beat(self, *, force: bool = False) -> None:
        """Record that a pass completed (one UPDATE, skipped if the last one is recent)."""
        metrics.WORKER_PASSES.inc()
        if not force and time.monotonic() - self._last_write < settings.WORKER_HEARTBEAT_INTERVAL:
            return
        if not WorkerHeartbeat.objects.filter(worker=self.id).update(
            last_pass_at=timezone.now(), stopped_at=None
        ):
            self.start()
        self._last_write = time.monotonic()

    def stop(self) -> None:
        """Say that this worker stopped on purpose, so nobody waits for its next beat."""
        WorkerHeartbeat.objects.filter(worker=self.id).update(stopped_at=timezone.now())


@dataclass(frozen=True)
class WorkerStatus:
    """What the heartbeats say: the freshest pass of a running worker, and how many run."""

    last_pass_at: datetime | None
    live: int
    known: int

    def age(self, now: datetime) -> float | None:
        """Seconds since the freshest pass of a running worker (None: no running worker)."""
        return None if self.last_pass_at is None else (now - self.last_pass_at).total_seconds()

    def silent(self, now: datetime, after: float) -> bool:
        """Whether no running worker completed a pass in the last `after` seconds."""
        age = self.age(now)
        return age is None or age > after


def worker_status(now: datetime | None = None) -> WorkerStatus:
    """Read the heartbeats in one query."""
    now = now or timezone.now()
    live_since = now - timedelta(seconds=settings.WORKER_SILENT_AFTER)
    row = WorkerHeartbeat.objects.aggregate(
        last=Max("last_pass_at", filter=Q(stopped_at__isnull=True)),
        live=Count("id", filter=Q(stopped_at__isnull=True, last_pass_at__gte=live_since)),
        known=Count("id"),
    )
    return WorkerStatus(row["last"], row["live"], row["known"])


@dataclass(frozen=True)
class WorkerBanner:
    """What the admin banner says about the workers; false while one runs."""

    silent: bool
    last_pass_at: datetime | None
    silent_after: float
    status: WorkerStatus

    def __bool__(self) -> bool:
        return self.silent


def worker_banner() -> WorkerBanner:
    """Return the banner of admin pages: silent when no worker passed within the setting."""
    now = timezone.now()
    after = settings.WORKER_SILENT_AFTER
    status = worker_status(now)
    return WorkerBanner(status.silent(now, after), status.last_pass_at, after, status)
