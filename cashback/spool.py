"""Upstream answers the database could not take, kept on local disk until it can.

Upstream has no idempotency key, so an answer it gave (above all an `ok`: it paid) must not
be lost because the database was unreachable when it arrived. `record` tries the lifecycle's
`record_outcome`, reconnects once, and if the database still refuses, writes the answer to
`CASHBACK_SPOOL_DIR` (one JSON file per answer: written to a temporary name, fsynced, renamed,
the directory fsynced). The worker on the same host replays the directory on every
housekeeping pass and deletes a file only once its answer is committed. Meanwhile the
purchase stays `sending` until its lease runs out, then `unknown`; neither is ever re-sent
by itself, and `record_outcome` applies an answer to an `unknown` purchase whose attempt it is.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection

from cashback import lifecycle
from cashback.client import UpstreamResult
from cashback.models import Attempt, Hold, Outcome, Purchase
from merchants.models import Merchant

logger = logging.getLogger(__name__)

UNREACHABLE = (OperationalError, InterfaceError)
SUFFIX = ".json"


def spool_dir() -> Path:
    return Path(settings.CASHBACK_SPOOL_DIR)


def record(
    purchase: Purchase,
    attempt: int,
    result: UpstreamResult,
    *,
    started_at: datetime,
    merchant: Merchant | None = None,
) -> Purchase:
    """Record upstream's answer, or keep it on disk if the database cannot take it.

    Return the purchase as recorded, or, when the answer was spooled, as the caller knew it
    (still `sending`): the caller answers it as in progress.
    """
    for last_try in (False, True):
        try:
            return lifecycle.record_outcome(
                purchase.pk,
                attempt,
                result,
                started_at=started_at,
                merchant=merchant,
                held=purchase.hold != Hold.NONE,
            )
        except UNREACHABLE:
            if last_try or connection.in_atomic_block:
                break
            # A reset connection: drop it, so the next try takes a fresh one from the pool.
            connection.close()
    path = keep(purchase.pk, attempt, result, started_at)
    logger.error(
        "database unreachable: upstream's answer spooled",
        extra={
            "order_id": purchase.order_id,
            "attempt": attempt,
            "outcome": result.outcome,
            "spool": str(path),
        },
    )
    return purchase


def keep(purchase_id: Any, attempt: int, result: UpstreamResult, started_at: datetime) -> Path:
    """Write one answer durably to the spool directory; return its path."""
    directory = spool_dir()
    directory.mkdir(parents=True, exist_ok=True)
    body = json.dumps(
        {
            "purchase_id": str(purchase_id),
            "attempt": attempt,
            "started_at": started_at.isoformat(),
            "result": {**dataclasses.asdict(result), "outcome": str(result.outcome)},
        }
    ).encode()
    name = f"{purchase_id}-{attempt}-{uuid.uuid4().hex[:8]}"
    tmp = directory / f".{name}.tmp"
    final = directory / f"{name}{SUFFIX}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, body)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, final)
    _fsync_dir(directory)
    return final


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pending() -> list[Path]:
    """Return the spooled answers not yet recorded, oldest name first."""
    directory = spool_dir()
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.endswith(SUFFIX))


def replay() -> int:
    """Record every spooled answer the database now takes; return how many were recorded.

    Stops at the first sign that the database is still unreachable. Safe to run from several
    processes of one host at once: each file is locked while it is replayed.
    """
    recorded = 0
    for path in pending():
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # another process recorded it just now
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            if os.fstat(fd).st_nlink == 0:
                continue  # recorded and deleted while we waited for the lock
            try:
                _replay_one(path, fd)
            except UNREACHABLE:
                close_old_connections()
                return recorded
            except Exception:
                # Not the database being away (say, the purchase is gone): set it aside for an
                # operator rather than fail every pass on it.
                logger.exception("spooled answer cannot be recorded", extra={"spool": str(path)})
                path.rename(path.with_name(path.name + ".unrecordable"))
                continue
            recorded += 1
        finally:
            os.close(fd)
    return recorded


def _replay_one(path: Path, fd: int) -> None:
    with os.fdopen(os.dup(fd), "rb") as f:
        data = json.loads(f.read())
    fields = data["result"]
    result = UpstreamResult(**{**fields, "outcome": Outcome(fields["outcome"])})
    started_at = datetime.fromisoformat(data["started_at"])
    attempt = int(data["attempt"])
    purchase_id = data["purchase_id"]
    # The commit may have landed with only its acknowledgement lost: record once.
    done = Attempt.objects.filter(
        purchase_id=purchase_id, number=attempt, started_at=started_at
    ).exists()
    if not done:
        lifecycle.record_outcome(purchase_id, attempt, result, started_at=started_at)
    path.unlink()
    _fsync_dir(path.parent)
    logger.warning(
        "spooled answer recorded",
        extra={"purchase": purchase_id, "attempt": attempt, "outcome": result.outcome},
    )
