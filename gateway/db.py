"""Database helpers shared by the apps: row locking that two workers can share."""

from __future__ import annotations

from django.db import connection
from django.db.models import QuerySet


def locked(qs: QuerySet) -> QuerySet:
    """Lock the rows of `qs`, skipping rows other workers hold (PostgreSQL)."""
    if connection.features.has_select_for_update_skip_locked:
        return qs.select_for_update(skip_locked=True, no_key=True, of=("self",))
    return qs  # SQLite: transactions are serialised; the conditional update decides.
