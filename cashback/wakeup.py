"""Wake idle workers at once when a purchase becomes due now (PostgreSQL LISTEN/NOTIFY).

The storing INSERT sends `pg_notify(CHANNEL)` itself (`lifecycle.store(notify=CHANNEL)`),
and `notify_due()` does the same inside any other transaction: PostgreSQL delivers a NOTIFY
only when its transaction commits, so a rolled-back store wakes nobody. Each
worker holds one dedicated connection in LISTEN (`Listener`) and sets an event when a
notification arrives. On SQLite both are no-ops and the worker polls.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from django.db import connection

logger = logging.getLogger(__name__)

CHANNEL = "cashback_due"


def notify_due() -> None:
    """Tell the workers a purchase is due now, when the caller's transaction commits."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [CHANNEL])


class Listener:
    """A thread holding one connection in LISTEN; it sets `wake` on every notification."""

    # How often the thread looks at `stop`, and waits before reconnecting after an error.
    CHECK_SECONDS = 0.5
    RECONNECT_SECONDS = 5.0

    def __init__(self, wake: threading.Event, stop: threading.Event) -> None:
        self.wake = wake
        self.stop = stop
        self.listening = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        """Start listening if the database is PostgreSQL; otherwise do nothing."""
        if connection.vendor != "postgresql":
            return
        params: dict[str, Any] = dict(connection.get_connection_params())
        # Django's cursor class and adapters belong to its own connections.
        params.pop("cursor_factory", None)
        params.pop("context", None)
        self.thread = threading.Thread(target=self._run, args=(params,), name="listen", daemon=True)
        self.thread.start()

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join(self.CHECK_SECONDS * 4)

    def _run(self, params: dict[str, Any]) -> None:
        import psycopg

        while not self.stop.is_set():
            try:
                with psycopg.connect(**params, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    # Anything stored while we were not listening is due: look once.
                    self.wake.set()
                    self.listening.set()
                    while not self.stop.is_set():
                        for _ in conn.notifies(timeout=self.CHECK_SECONDS):
                            self.wake.set()
            except Exception:
                # The worker still polls every idle sleep; this only costs the quick wake-up.
                logger.warning("LISTEN connection lost; reconnecting", exc_info=True)
            finally:
                self.listening.clear()
            self.stop.wait(self.RECONNECT_SECONDS)
