"""Run the background worker until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from cashback.worker import run_forever

logger = logging.getLogger("cashback.worker")


class Command(BaseCommand):
    help = "Send queued and due purchases, expire leases, fail expired retries, deliver webhooks."
    # The system checks import every URLconf, the admin and the reports (openpyxl), none of
    # which the worker uses: they doubled its start, which a restart after a crash or a
    # deploy waits for. `manage.py check` (make lint, CI, deploy) runs them; gunicorn never
    # did.
    requires_system_checks: list[str] = []

    def handle(self, *args: Any, **options: Any) -> None:
        stop = threading.Event()

        def request_stop(signum: int, frame: Any) -> None:
            logger.info("stopping after the calls in flight", extra={"signal": signum})
            stop.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        if settings.CASHBACK_WORKER_NICE:
            # Below the web processes: on a busy host a merchant's request (a terminal waiting
            # on it) gets the CPU before a background send, which can wait a moment.
            os.nice(settings.CASHBACK_WORKER_NICE)
        mode = "sandbox" if settings.CASHBACK_SANDBOX else "live"
        logger.info(
            "worker started",
            extra={
                "threads": settings.CASHBACK_WORKER_THREADS,
                "webhook_threads": settings.WEBHOOK_WORKER_THREADS,
                "upstream": mode,
                "nice": os.nice(0),
            },
        )
        run_forever(stop)
        logger.info("worker stopped")
