"""Database helpers shared by the apps: row locking, and the reports' statement timeout."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import QuerySet


def hot_cursor(db: Any) -> Any:
    """Return a cursor of `db` for a hot hand-written statement.

    PostgreSQL: parameters bound on the server, and the statement prepared once per
    connection with DATABASE_PREPARE (gateway.postgresql.HotCursor). Elsewhere: `cursor()`.
    """
    make = getattr(db, "hot_cursor", None)
    return make() if make is not None else db.cursor()


def locked(qs: QuerySet) -> QuerySet:
    """Lock the rows of `qs`, skipping rows other workers hold (PostgreSQL)."""
    if connection.features.has_select_for_update_skip_locked:
        return qs.select_for_update(skip_locked=True, no_key=True, of=("self",))
    return qs  # SQLite: transactions are serialised; the conditional update decides.


@contextmanager
def report_timeout() -> Iterator[None]:
    """Run a report or an export in one transaction with DATABASE_REPORT_STATEMENT_TIMEOUT.

    A request's statements stay under DATABASE_STATEMENT_TIMEOUT; a command that scans every
    purchase of a month needs longer. `SET LOCAL` ends with the transaction, so nothing
    leaks to a pooled connection (or, behind PgBouncer, to another client's).
    """
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT set_config('statement_timeout', %s, true)",
                    [str(round(settings.DATABASE_REPORT_STATEMENT_TIMEOUT * 1000))],
                )
        yield
