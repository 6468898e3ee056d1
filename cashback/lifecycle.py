"""The one place that changes a purchase's status.

TRANSITIONS is the table of every allowed change (from, to, actor). Each function below is
one kind of change, and its conditional UPDATE (`… WHERE status IN (…) AND attempts = …`)
is the ownership check: whoever's update matched owns the purchase, nobody else does.
Nothing else in the code base writes `Purchase.status`.

Lock order everywhere: purchase row, then balance row. No transaction here is ever held
open across the upstream call: the caller sends between `claim` and `record_outcome`.

The few hot statements are hand-written SQL (storing a purchase, recording an outcome);
everything else is the ORM.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import random
import socket
import uuid
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from django.conf import settings
from django.db import (
    DEFAULT_DB_ALIAS,
    DatabaseError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    connection,
    connections,
    transaction,
)
from django.db.models import F
from django.db.models.fields import Field
from django.utils import timezone

from cashback.client import UpstreamResult
from cashback.models import (
    FINAL_STATUSES,
    Alert,
    Attempt,
    Hold,
    Outcome,
    Purchase,
    PurchaseAction,
    Status,
    WebhookDelivery,
)
from cashback.resources import PurchaseSerializer
from gateway import metrics
from gateway.db import hot_cursor, locked
from gateway.exceptions import DomainError
from merchants import services as ledger
from merchants.models import Merchant

logger = logging.getLogger(__name__)


class Actor:
    """Who makes a change: the merchant's request, the background worker, or an admin."""

    REQUEST = "request"
    WORKER = "worker"
    ADMIN = "admin"
    ALL = (REQUEST, WORKER, ADMIN)


Q_, SE, SN, RJ, PE, UN, FA = (
    Status.QUEUED,
    Status.SENDING,
    Status.SENT,
    Status.REJECTED,
    Status.PENDING,
    Status.UNKNOWN,
    Status.FAILED,
)
# Statuses whose sending process may still record its answer: `sending`, and `unknown`
# when its lease ran out (the real answer wins over "the sending process stopped").
RECORDABLE = (SE, UN)
# Where an upstream answer takes a purchase (the sender records it, whoever it was).
OUTCOME_TARGETS = (SN, RJ, PE, FA, UN)


def _rows(
    froms: Iterable[str], tos: Iterable[str], actors: Iterable[str]
) -> set[tuple[str, str, str]]:
    return {(f, t, a) for f in froms for t in tos for a in actors}


TRANSITIONS: frozenset[tuple[str, str, str]] = frozenset(
    # Claim: the request sends a fresh purchase at once; the worker takes due ones; an
    # admin's retry sends the purchase it just made `pending`.
    _rows([Q_], [SE], [Actor.REQUEST, Actor.WORKER])
    | _rows([PE], [SE], [Actor.WORKER, Actor.ADMIN])
    # The sender records upstream's answer.
    | _rows(RECORDABLE, OUTCOME_TARGETS, Actor.ALL)
    # An `ok` for the last call of a purchase an admin made `pending` again, not re-sent yet.
    | _rows([PE], [SN], Actor.ALL)
    # The worker: a lease that ran out is `unknown` (never re-sent); a retry window that
    # ran out is `failed`.
    | _rows([SE], [UN], [Actor.WORKER])
    | _rows([PE], [FA], [Actor.WORKER])
    # Admins: retry, or record what upstream did after checking with it.
    | _rows([UN, FA, PE], [PE], [Actor.ADMIN])
    | _rows([UN, PE], [SN, RJ], [Actor.ADMIN])
)

LEASE_EXPIRED = "lease ran out: the sending process stopped before recording an answer"
BATCH = 50
_MAX_BIGINT = 2**63 - 1


def allowed(from_status: str, to_status: str, actor: str) -> bool:
    """Return whether `actor` may move a purchase from `from_status` to `to_status`."""
    return (from_status, to_status, actor) in TRANSITIONS


@functools.cache
def sources(to_status: str, actor: str) -> tuple[str, ...]:
    """Return the statuses `actor` may move a purchase from into `to_status`."""
    return tuple(s for s in Status.values if allowed(s, to_status, actor))


def _check(froms: Iterable[str], to_status: str, actor: str) -> None:
    refused = [f for f in froms if not allowed(f, to_status, actor)]
    if refused:
        raise RuntimeError(f"{actor} may not move a purchase from {refused} to {to_status}")


def lease_seconds() -> float:
    """Return a claim's lease: the call's total deadline plus a margin.

    CASHBACK_TIMEOUT bounds the whole upstream call (connect, send and the whole answer),
    so no call outlives the lease of the claim it runs under.
    """
    return settings.CASHBACK_TIMEOUT + settings.CASHBACK_LEASE_MARGIN


def backoff(attempt: int) -> float:
    """Return seconds before retry number `attempt` (1-based), with ±20 % jitter."""
    schedule = settings.CASHBACK_RETRY_SCHEDULE
    base = schedule[min(attempt, len(schedule)) - 1]
    return base * random.uniform(0.8, 1.2)


def lock_purchase(purchase_id: Any) -> Purchase:
    """Return the purchase with its row locked until the transaction ends.

    Only the purchase row is locked (not its merchant, which every insert of a purchase
    references), and FOR NO KEY UPDATE lets ledger and attempt rows reference it meanwhile.
    """
    return (
        Purchase.objects.select_for_update(no_key=True, of=("self",))
        .select_related("merchant")
        .get(pk=purchase_id)
    )


# --- Storing ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Plan:
    """The hot statements' SQL for one database vendor, and how to read a purchase row.

    Built once per vendor from the models' metadata: a purchase POST otherwise spent more
    CPU quoting the same thirty column names than the database spent running the statement.
    """

    fields: tuple[Field[Any, Any], ...]
    # Per field, the Python types psycopg sends as the column's own (PostgreSQL): a value of
    # exactly such a type needs no `get_db_prep_save`; anything else goes through it.
    exact_types: tuple[tuple[type, ...], ...]
    attnames: list[str]
    # (index, column, converters) of the columns that need converting when read.
    converters: tuple[tuple[int, Any, tuple[Any, ...]], ...]
    insert: str
    insert_notify: str
    claim: str
    returning: str


# What each internal type of field takes as is on PostgreSQL. Not datetimes (a naive one is
# made aware, with a warning, by the field), and nothing on other databases.
_EXACT_ON_POSTGRESQL: dict[str, tuple[type, ...]] = {
    "CharField": (str,),
    "TextField": (str,),
    "BigIntegerField": (int,),
    "PositiveIntegerField": (int,),
    "IntegerField": (int,),
    "ForeignKey": (int,),
    "UUIDField": (uuid.UUID,),
    "DecimalField": (Decimal,),
    "DateField": (date,),
}


def _exact_types(field: Field[Any, Any], vendor: str) -> tuple[type, ...]:
    if vendor != "postgresql":
        return ()
    return _EXACT_ON_POSTGRESQL.get(field.get_internal_type(), ())


@functools.cache
def _plan(vendor: str) -> _Plan:
    q = connection.ops.quote_name
    fields = tuple(Purchase._meta.concrete_fields)
    table = Purchase._meta.db_table
    converters = []
    for index, field in enumerate(fields):
        column = field.get_col(table)
        found = connection.ops.get_db_converters(column) + cast(Any, field).get_db_converters(
            connection
        )
        if found:
            converters.append((index, column, tuple(found)))
    columns = ", ".join(q(f.column) for f in fields)
    marks = ", ".join(["%s"] * len(fields))
    # Identifiers come from the model's _meta; every value is a parameter.
    insert = (
        f"INSERT INTO {table} ({columns}) VALUES ({marks}) "  # noqa: S608
        f"ON CONFLICT DO NOTHING RETURNING {q('id')}"
    )
    return _Plan(
        fields=fields,
        exact_types=tuple(_exact_types(f, vendor) for f in fields),
        attnames=[f.attname for f in fields],
        converters=tuple(converters),
        insert=insert,
        insert_notify=f"WITH stored AS ({insert}) SELECT id, pg_notify(%s, '') FROM stored",  # noqa: S608
        claim=(
            f"UPDATE {table} SET status = %s, lease_until = %s, "  # noqa: S608
            "attempts = attempts + 1, updated_at = %s WHERE id = %s AND status IN "
        ),
        returning=columns,
    )


def _insert(purchase: Purchase, notify: str | None = None) -> bool:
    """INSERT the purchase unless the merchant has the order id (or unit); return if it did.

    One statement, no transaction of its own: `ON CONFLICT DO NOTHING` (any unique
    conflict) answers "already there" without an error and without a SELECT first.
    `notify` (PostgreSQL): the same statement sends NOTIFY on that channel if it inserted,
    delivered when its transaction commits.
    """
    db = connections[DEFAULT_DB_ALIAS]
    plan = _plan(db.vendor)
    values = []
    for field, exact in zip(plan.fields, plan.exact_types, strict=True):
        value = getattr(purchase, field.attname)
        if value is not None and type(value) not in exact:
            value = field.get_db_prep_save(value, db)
        values.append(value)
    sql = plan.insert
    if notify and db.vendor == "postgresql":
        sql = plan.insert_notify
        values.append(notify)
    with hot_cursor(db) as cursor:
        cursor.execute(sql, values)
        return cursor.fetchone() is not None


def store(purchase: Purchase, *, refused: str, notify: str | None = None) -> bool:
    """Store a new `queued` purchase, reserving its partner-funded cost; return if stored.

    False: the merchant already has this order id or purchase unit (nothing written).
    Nothing reserved: one INSERT. Otherwise the INSERT and the reservation share one
    transaction; a deposit that does not cover it downgrades to 0 % or, under the reject
    policy, raises InsufficientDeposit (`refused`) and stores nothing. `notify`: see
    `_insert` (a rolled-back store notifies nobody).
    """
    purchase.status, purchase.attempts = Q_, 0
    if not purchase.reserved_minor:
        purchase.hold = Hold.NONE
        return _insert(purchase, notify)
    with transaction.atomic():
        purchase.hold = Hold.HELD
        if not _insert(purchase, notify):
            return False
        if not ledger.reserve_or_downgrade(
            purchase.merchant,
            purchase.currency,
            purchase.reserved_minor,
            purchase_id=purchase.pk,
            refused=refused,
        ):
            _downgrade(purchase)
    return True


def _downgrade(purchase: Purchase) -> None:
    """Send at 0 % partner cashback: the deposit does not cover it."""
    purchase.percentage, purchase.reserved_minor, purchase.hold = Decimal(0), 0, Hold.NONE
    Purchase.objects.filter(pk=purchase.pk).update(
        percentage=purchase.percentage, reserved_minor=0, hold=Hold.NONE
    )


# --- Claiming and the worker's sweeps --------------------------------------------------------


def claim(purchase: Purchase, actor: str, now: datetime | None = None) -> bool:
    """Move the purchase to `sending` for `actor` if it is still claimable; return if it did.

    One hand-written UPDATE (the request path runs it for every purchase): the row moves
    only from a status `actor` may claim, and whoever's update matched owns the purchase.
    """
    now = now or timezone.now()
    froms = sources(SE, actor)
    lease_until = now + timedelta(seconds=lease_seconds())
    db = connections[DEFAULT_DB_ALIAS]
    sql = _plan(db.vendor).claim + "(" + ", ".join(["%s"] * len(froms)) + ")"
    stamp = db.ops.adapt_datetimefield_value
    pk = Purchase._meta.pk.get_db_prep_value(purchase.pk, db)  # type: ignore[union-attr]
    with hot_cursor(db) as cursor:
        cursor.execute(sql, [SE, stamp(lease_until), stamp(now), pk, *froms])
        claimed = cursor.rowcount == 1
    if claimed:
        purchase.status, purchase.lease_until, purchase.updated_at = SE, lease_until, now
        purchase.attempts += 1
    return claimed


def claim_due(now: datetime, limit: int) -> list[Purchase]:
    """Claim up to `limit` due purchases for the worker: `queued`/`pending` → `sending`.

    Returned with their merchants. PostgreSQL: one statement (the due rows locked with
    SKIP LOCKED, moved, and read back with their merchants), its own transaction.
    """
    froms = sources(SE, Actor.WORKER)
    lease_until = now + timedelta(seconds=lease_seconds())
    db = connections[DEFAULT_DB_ALIAS]
    if db.vendor == "postgresql" and not db.in_atomic_block:
        return _claim_due_sql(db, froms, now, lease_until, limit)
    with transaction.atomic():
        candidates = list(
            locked(
                Purchase.objects.filter(status__in=froms, next_attempt_at__lte=now).order_by(
                    "next_attempt_at"
                )
            ).values_list("pk", flat=True)[:limit]
        )
        if not candidates:
            return []
        Purchase.objects.filter(pk__in=candidates, status__in=froms).update(
            status=SE,
            lease_until=lease_until,
            attempts=F("attempts") + 1,
            updated_at=now,
        )
        return list(
            Purchase.objects.filter(
                pk__in=candidates, status=SE, lease_until=lease_until
            ).select_related("merchant")
        )


@functools.cache
def _claim_due_plan(froms: tuple[str, ...]) -> tuple[str, list[str], int]:
    """Return the worker's claiming statement (from `froms`), and the merchant columns.

    The statuses are written into the SQL, not bound: PostgreSQL can use the partial index
    `purchase_due` (due rows in claim order) for a prepared statement's generic plan only
    when the statement itself names the statuses the index holds. The UPDATE needs no status
    test of its own: `due` locked each row after checking its newest version, and no one
    else can move a row this statement holds locked. (With one, the planner may read the
    whole queue through that index to join it.)
    """
    assert set(froms) <= set(Status.values)  # literals from the model, never from input
    q = connection.ops.quote_name
    table, merchants = Purchase._meta.db_table, Merchant._meta.db_table
    statuses = ", ".join(f"'{s}'" for s in froms)
    merchant_fields = [f.attname for f in Merchant._meta.concrete_fields]
    merchant_columns = ", ".join(f"m.{q(f.column)}" for f in Merchant._meta.concrete_fields)
    returning = ", ".join(f"p.{q(f.column)}" for f in Purchase._meta.concrete_fields)
    claimed = ", ".join(f"c.{q(f.column)}" for f in Purchase._meta.concrete_fields)
    # Identifiers come from the models' _meta, statuses from Status; every value is a parameter.
    sql = (
        f"WITH due AS (SELECT id FROM {table} WHERE status IN ({statuses}) "  # noqa: S608
        f"AND next_attempt_at <= %s ORDER BY next_attempt_at LIMIT %s "
        f"FOR NO KEY UPDATE SKIP LOCKED), "
        f"c AS (UPDATE {table} p SET status = %s, lease_until = %s, "
        f"attempts = p.attempts + 1, updated_at = %s FROM due "
        f"WHERE p.id = due.id RETURNING {returning}) "
        f"SELECT {claimed}, {merchant_columns} FROM c JOIN {merchants} m ON m.id = c.merchant_id"
    )
    return sql, merchant_fields, len(Purchase._meta.concrete_fields)


def _claim_due_sql(
    db: Any, froms: tuple[str, ...], now: datetime, lease_until: datetime, limit: int
) -> list[Purchase]:
    sql, merchant_fields, split = _claim_due_plan(froms)
    stamp = db.ops.adapt_datetimefield_value
    with hot_cursor(db) as cursor:
        cursor.execute(sql, [stamp(now), limit, SE, stamp(lease_until), stamp(now)])
        rows = cursor.fetchall()
    merchants: dict[Any, Merchant] = {}
    purchases = []
    for row in rows:
        purchase = _purchase_from_row(row[:split], db)
        merchant = merchants.get(purchase.merchant_id)
        if merchant is None:
            merchant = Merchant.from_db(db.alias, merchant_fields, list(row[split:]))
            merchants[purchase.merchant_id] = merchant
        purchase.merchant = merchant
        purchases.append(purchase)
    return purchases


def expire_leases(now: datetime) -> int:
    """Mark `sending` purchases whose lease ran out as `unknown` (never re-sent)."""
    _check([SE], UN, Actor.WORKER)
    count = Purchase.objects.filter(status=SE, lease_until__lt=now).update(
        status=UN, error=LEASE_EXPIRED, lease_until=None, updated_at=now
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
                    Purchase.objects.filter(status=PE, retry_deadline__lt=now)
                    .select_related("merchant")
                    .order_by("retry_deadline")
                )[:BATCH]
            )
            for purchase in rows:
                error = f"retries ran out: {purchase.error or 'upstream unreachable'}"
                if _finish(purchase, FA, Actor.WORKER, now, error=error, retry_deadline__lt=now):
                    _count(FA)
                    logger.warning("purchase failed", extra={"order_id": purchase.order_id})
        failed += len(rows)
        if len(rows) < BATCH:
            return failed


def _finish(
    purchase: Purchase,
    to_status: str,
    actor: str,
    now: datetime,
    *,
    user: Any = None,
    attempts: int | None = None,
    **fields: Any,
) -> bool:
    """Move a locked purchase from its current status to `to_status`, settling its hold.

    The conditional update is the ownership check (status as read, and `attempts` when
    given); extra `…__lt` style keys in `fields` are conditions, the others are values.
    Call inside a transaction; writes the ledger entry and the webhook in it.
    """
    before = purchase.status
    _check([before], to_status, actor)
    conditions = {k: fields.pop(k) for k in list(fields) if "__" in k}
    if attempts is not None:
        conditions["attempts"] = attempts
    hold = purchase.hold
    if hold == Hold.HELD and to_status == SN:
        hold = Hold.CAPTURED
    elif hold == Hold.HELD and to_status in (RJ, FA):
        hold = Hold.RELEASED
    values: dict[str, Any] = {"status": to_status, "lease_until": None, "updated_at": now}
    if to_status in FINAL_STATUSES:
        values["next_attempt_at"] = None
    values.update(fields, hold=hold)
    moved = Purchase.objects.filter(pk=purchase.pk, status=before, **conditions).update(**values)
    if not moved:
        return False
    previous_hold = purchase.hold
    for name, value in values.items():
        setattr(purchase, name, value)
    _settle(purchase, previous_hold, user=user)
    if to_status in FINAL_STATUSES:
        enqueue_webhook(purchase)
    return True


def _settle(purchase: Purchase, previous_hold: str, *, user: Any = None) -> None:
    """Write the ledger side of a hold that just changed (purchase row locked)."""
    if previous_hold != Hold.HELD or purchase.hold == Hold.HELD:
        return
    settle = ledger.capture if purchase.hold == Hold.CAPTURED else ledger.release
    settle(
        purchase.merchant_id,
        purchase.currency,
        purchase.reserved_minor,
        purchase_id=purchase.pk,
        user=user,
    )


# --- Recording an outcome --------------------------------------------------------------------


def _storable(text: str | None, limit: int | None = None) -> str | None:
    """Return `text` as both databases can store it: NUL and lone surrogates escaped."""
    if text is None:
        return None
    text = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return text if limit is None else text[:limit]


def _documented_shape(result: UpstreamResult) -> UpstreamResult:
    """Return `result`, or `ambiguous` when an `ok` answer cannot be stored as documented.

    The evidence (the amount and unit as answered) stays on the attempt.
    """
    if result.outcome != Outcome.OK:
        return result
    amount, unit = result.cashback_amount, result.unit
    why = ""
    if not isinstance(amount, int) or not 0 <= amount <= _MAX_BIGINT:
        why = "cashback_amount out of range"
    elif (
        not isinstance(unit, str)
        or not 0 < len(unit) <= 44
        or _storable(unit) != unit
        or any(ord(c) < 32 or ord(c) == 127 for c in unit)
    ):
        why = "unit is not a unit"
    if not why:
        return result
    return dataclasses.replace(
        result,
        outcome=Outcome.AMBIGUOUS,
        error=f"answer outside the documented shape ({why}); upstream may have paid it",
    )


def _attempt_values(
    purchase_id: Any,
    attempt: int,
    raw: UpstreamResult,
    result: UpstreamResult,
    started_at: datetime,
) -> dict[str, Any]:
    return {
        "purchase_id": purchase_id,
        "number": attempt,
        "started_at": started_at,
        "duration_ms": max(0, raw.duration_ms),
        "http_status": raw.http_status,
        "outcome": result.outcome,
        "error": _storable(result.error, 1000) or "",
        "worker": f"{socket.gethostname()}:{os.getpid()}"[:100],
        "response_excerpt": _storable(getattr(raw, "response_excerpt", "") or "") or "",
        "cashback_amount": None if raw.cashback_amount is None else str(raw.cashback_amount),
        "unit": _storable(raw.unit),
    }


def _outcome_sql(
    result: UpstreamResult, attempt: int, now: datetime, db: Any
) -> tuple[str, list[Any]]:
    """Return the SET clause (and its parameters) that applies `result` to the purchase."""
    held, captured, released = Hold.HELD, Hold.CAPTURED, Hold.RELEASED
    dt = db.ops.adapt_datetimefield_value
    error = _storable(result.error, 1000)
    common = "lease_until = NULL, updated_at = %s"
    if result.outcome == Outcome.OK:
        return (
            f"status = %s, cashback_amount = %s, unit = %s, error = NULL, sent_at = %s, "
            f"next_attempt_at = NULL, hold = CASE WHEN hold = '{held}' THEN '{captured}' "
            f"ELSE hold END, {common}",
            [SN, result.cashback_amount, result.unit, dt(now), dt(now)],
        )
    if result.outcome == Outcome.REJECTED:
        return (
            f"status = %s, error = %s, next_attempt_at = NULL, hold = CASE WHEN hold = "
            f"'{held}' THEN '{released}' ELSE hold END, {common}",
            [RJ, error, dt(now)],
        )
    if result.outcome in (Outcome.NOT_SENT, Outcome.AUTH_FAILED):
        retry_at = dt(now + timedelta(seconds=backoff(attempt)))
        ran_out = "(retry_deadline IS NOT NULL AND retry_deadline < %s)"
        return (
            f"status = CASE WHEN {ran_out} THEN %s ELSE %s END, "
            f"error = CASE WHEN {ran_out} THEN %s ELSE %s END, "
            f"next_attempt_at = CASE WHEN {ran_out} THEN NULL ELSE %s END, "
            f"hold = CASE WHEN {ran_out} AND hold = '{held}' THEN '{released}' ELSE hold END, "
            f"{common}",
            [
                retry_at,
                FA,
                PE,
                retry_at,
                f"retries ran out: {error or 'upstream unreachable'}",
                error,
                retry_at,
                retry_at,
                retry_at,
                dt(now),
            ],
        )
    return (
        f"status = %s, error = %s, next_attempt_at = NULL, {common}",
        [UN, error, dt(now)],
    )


def _purchase_from_row(row: Iterable[Any], db: Any) -> Purchase:
    plan = _plan(db.vendor)
    values = list(row)
    for index, column, converters in plan.converters:
        for convert in converters:
            values[index] = convert(values[index], column, db)
    return Purchase.from_db(db.alias, plan.attnames, values)


# The attempt columns the recording statement writes, in `_attempt_values` order.
_ATTEMPT_COLUMNS = (
    "purchase_id",
    "number",
    "started_at",
    "duration_ms",
    "http_status",
    "outcome",
    "error",
    "worker",
    "response_excerpt",
    "cashback_amount",
    "unit",
)


@functools.cache
def _record_plan(
    vendor: str, outcome: str, lone: bool = False
) -> tuple[str, tuple[Field[Any, Any], ...]]:
    """Return the recording statement of an outcome (minus its SET clause) and attempt fields.

    The statement has `{sets}` where the outcome's SET clause goes (`_outcome_sql`).
    `lone` (PostgreSQL): the statement is the whole recording, run in its own transaction.
    It matches only a purchase that holds nothing, and writes the attempt only if it
    matched; anything else writes nothing and is recorded the general way.
    """
    q = connection.ops.quote_name
    table, attempts_table = Purchase._meta.db_table, Attempt._meta.db_table
    where = f"id = %s AND attempts = %s AND status IN ({', '.join(['%s'] * len(RECORDABLE))})"
    if outcome != Outcome.OK:
        # Not over an earlier `ok`; and a refusal not over an earlier attempt that may
        # have been paid (a re-send's "already registered" says it was).
        earlier = f"outcome = '{Outcome.OK}'"
        if outcome == Outcome.REJECTED:
            earlier = f"outcome IN ('{Outcome.OK}', '{Outcome.AMBIGUOUS}')"
        where += (
            f" AND NOT EXISTS (SELECT 1 FROM {attempts_table} WHERE purchase_id = %s "  # noqa: S608
            f"AND number < %s AND {earlier})"
        )
    if lone:
        where += f" AND hold <> '{Hold.HELD}'"
    columns = _plan(vendor).returning
    # Identifiers come from the models' _meta and constants; every value is a parameter.
    update = f"UPDATE {table} SET {{sets}} WHERE {where} RETURNING {columns}"  # noqa: S608
    fields = tuple(cast("Field[Any, Any]", Attempt._meta.get_field(n)) for n in _ATTEMPT_COLUMNS)
    if vendor != "postgresql":
        return update, fields
    names = ", ".join(q(f.column) for f in fields)
    marks = ", ".join(["%s"] * len(fields))
    # A parameter in a SELECT list has no type to take from a column (bound on the
    # server, a NULL would be text): each says its column's.
    typed = ", ".join(
        "%s"
        if f.get_internal_type() in ("CharField", "TextField")
        else f"%s::{f.db_type(connection)}"
        for f in fields
    )
    attempt_row = (
        f"SELECT {typed}, true FROM p"  # noqa: S608
        if lone
        else f"VALUES ({marks}, EXISTS (SELECT 1 FROM p))"  # noqa: S608
    )
    statement = (
        f"WITH p AS ({update}), a AS (INSERT INTO {attempts_table} ({names}, applied) "  # noqa: S608
        f"{attempt_row}) SELECT {columns} FROM p"
    )
    return statement, fields


def _apply_sql(
    purchase_id: Any,
    attempt: int,
    raw: UpstreamResult,
    result: UpstreamResult,
    started_at: datetime,
    now: datetime,
    *,
    lone: bool = False,
) -> Purchase | None:
    """Apply the outcome with one conditional UPDATE and write the attempt; return the row.

    PostgreSQL: one statement (the UPDATE and the attempt INSERT in one CTE). SQLite has
    RETURNING but no data-modifying CTE: two statements, in the caller's transaction.
    A refusal or a lost answer never overwrites an earlier `ok`: those fall to the slow path.
    `lone`: see `_record_plan` (PostgreSQL only).
    """
    db = connections[DEFAULT_DB_ALIAS]
    statement, attempt_fields = _record_plan(db.vendor, result.outcome, lone)
    sets, set_params = _outcome_sql(result, attempt, now, db)
    pk = Purchase._meta.pk.get_db_prep_value(purchase_id, db)  # type: ignore[union-attr]
    params: list[Any] = [*set_params, pk, attempt, *RECORDABLE]
    if result.outcome != Outcome.OK:
        params += [pk, attempt]
    values = _attempt_values(purchase_id, attempt, raw, result, started_at)
    assert tuple(values) == _ATTEMPT_COLUMNS
    with hot_cursor(db) as cursor:
        if db.vendor == "postgresql":
            params += [
                f.get_db_prep_save(v, db)
                for f, v in zip(attempt_fields, values.values(), strict=True)
            ]
            cursor.execute(statement.replace("{sets}", sets, 1), params)
            row = cursor.fetchone()
        else:
            cursor.execute(statement.replace("{sets}", sets, 1), params)
            row = cursor.fetchone()
            Attempt.objects.create(**values, applied=row is not None)
    return None if row is None else _purchase_from_row(row, db)


def record_outcome(
    purchase_id: Any,
    attempt: int,
    result: UpstreamResult,
    *,
    started_at: datetime,
    now: datetime | None = None,
    merchant: Merchant | None = None,
    held: bool = True,
) -> Purchase:
    """Record attempt number `attempt` with upstream's answer, and apply it if still owned.

    The attempt row is always written, with the answer as received. It is applied only if
    the purchase is still this attempt's (`attempts` unchanged, `sending`, or `unknown`
    after its lease ran out). A late answer is kept with `applied=False`; if upstream says
    it paid a purchase recorded as anything but `sent`, admins get an alert naming it. If
    the purchase row cannot be updated, the attempt is still written and the purchase
    becomes `unknown`. `merchant` (optional) saves loading it.

    `held=False` (the caller claimed it holding nothing) with a `merchant` that has no
    webhook: nothing but the purchase row and the attempt is written with most answers,
    so on PostgreSQL one statement in its own transaction records it (no BEGIN, no COMMIT).
    """
    now = now or timezone.now()
    raw, result = result, _documented_shape(result)
    db = connections[DEFAULT_DB_ALIAS]
    try:
        if (
            not held
            and merchant is not None
            and not merchant.webhook_url
            and result.outcome != Outcome.AUTH_FAILED
            and db.vendor == "postgresql"
            and not db.in_atomic_block
        ):
            purchase = _apply_sql(purchase_id, attempt, raw, result, started_at, now, lone=True)
            if purchase is not None:
                if merchant.pk == purchase.merchant_id:
                    purchase.merchant = merchant
                _after_applied(purchase, result, now)
                return purchase
            # It matched nothing and wrote nothing: record it the general way.
        with transaction.atomic():
            purchase = _apply_sql(purchase_id, attempt, raw, result, started_at, now)
            if purchase is not None:
                if merchant is not None and merchant.pk == purchase.merchant_id:
                    purchase.merchant = merchant
                _after_applied(purchase, result, now)
                return purchase
            return _not_applied(purchase_id, attempt, result, now)
    except (OperationalError, InterfaceError):
        raise  # the database is unreachable: nothing can be written (the caller spools it)
    except DatabaseError as exc:
        return _record_failed_update(purchase_id, attempt, raw, result, started_at, now, exc)


def _count(status: str) -> None:
    """Count a purchase reaching `status` (a metric), once the transaction commits."""
    transaction.on_commit(lambda: metrics.PURCHASES.labels(outcome=status).inc())


def _after_applied(purchase: Purchase, result: UpstreamResult, now: datetime) -> None:
    _count(purchase.status)
    if purchase.hold in (Hold.CAPTURED, Hold.RELEASED) and purchase.status in FINAL_STATUSES:
        # It was held (an open purchase is held or holds nothing): write the ledger side.
        _settle(purchase, Hold.HELD)
    if result.outcome == Outcome.AUTH_FAILED:
        raise_alert(
            Alert.Kind.AUTH_FAILED,
            "Upstream answered 'authentication failed': check CASHBACK_PARTNER and "
            "CASHBACK_PARTNER_KEY.",
            now,
        )
    if purchase.status in FINAL_STATUSES:
        enqueue_webhook(purchase)


def _not_applied(purchase_id: Any, attempt: int, result: UpstreamResult, now: datetime) -> Purchase:
    """Handle an answer whose conditional update matched nothing (its attempt is written)."""
    purchase = lock_purchase(purchase_id)
    earlier_attempts = Attempt.objects.filter(purchase_id=purchase.pk, number__lt=attempt)
    earlier = earlier_attempts.filter(outcome=Outcome.OK).order_by("number").first()
    owned = purchase.attempts == attempt and purchase.status in RECORDABLE
    if owned and earlier is None and result.outcome == Outcome.REJECTED:
        maybe = earlier_attempts.filter(outcome=Outcome.AMBIGUOUS).order_by("number").first()
        if maybe is not None:
            # A refusal of a re-send after a call that may have taken effect: "already
            # registered" means that call was paid. Never `rejected` (released) on that.
            _finish(
                purchase,
                UN,
                Actor.WORKER,
                now,
                attempts=attempt,
                next_attempt_at=None,
                error=_storable(
                    f"upstream refused the re-send ({result.error}); attempt {maybe.number} "
                    f"may have been paid: reconcile with upstream",
                    1000,
                ),
            )
            return purchase
    if result.outcome == Outcome.OK and purchase.status == PE and purchase.attempts == attempt:
        # An admin's retry is due but not sent yet, and upstream paid the last call after
        # all: record the payment, so that nothing sends the order again.
        _finish(
            purchase,
            SN,
            Actor.WORKER,
            now,
            attempts=attempt,
            cashback_amount=result.cashback_amount,
            unit=result.unit,
            error=None,
            sent_at=now,
        )
        Attempt.objects.filter(pk=_last_attempt(purchase.pk, attempt)).update(applied=True)
        return purchase
    if owned and earlier is not None:
        # Upstream paid an earlier call of this order: this answer ("already registered",
        # a timeout) is about that payment, which the purchase now records.
        _finish(
            purchase,
            SN,
            Actor.WORKER,
            now,
            attempts=attempt,
            cashback_amount=int(earlier.cashback_amount or 0),
            unit=earlier.unit,
            error=None,
            sent_at=now,
        )
        Attempt.objects.filter(pk=earlier.pk).update(applied=True)
        logger.warning(
            "earlier ok answer recorded",
            extra={"order_id": purchase.order_id, "attempt": attempt, "ok_attempt": earlier.number},
        )
        return purchase
    logger.warning(
        "outcome arrived after the purchase moved on",
        extra={"order_id": purchase.order_id, "attempt": attempt, "status": purchase.status},
    )
    if result.outcome == Outcome.OK and purchase.status != SN:
        _alert_paid_unrecorded(purchase, attempt, result, now)
    return purchase


def _last_attempt(purchase_id: Any, number: int) -> Any:
    """Return the id of the attempt row just written for attempt `number`."""
    return (
        Attempt.objects.filter(purchase_id=purchase_id, number=number)
        .order_by("-pk")
        .values_list("pk", flat=True)[:1]
        .get()
    )


def _alert_paid_unrecorded(
    purchase: Purchase, attempt: int, result: UpstreamResult, now: datetime
) -> None:
    raise_alert(
        Alert.Kind.UPSTREAM_PAID_UNRECORDED,
        f"Upstream paid order {purchase.order_id!r} of merchant {purchase.merchant.public_id} "
        f"({result.cashback_amount} bytes, unit {result.unit}) on attempt {attempt}, but the "
        f"purchase is recorded {purchase.status}: reconcile it.",
        now,
        subject=str(purchase.pk),
    )


def _record_failed_update(
    purchase_id: Any,
    attempt: int,
    raw: UpstreamResult,
    result: UpstreamResult,
    started_at: datetime,
    now: datetime,
    exc: DatabaseError,
) -> Purchase:
    """Keep the answer when applying it failed: the attempt row, and the purchase `unknown`."""
    logger.exception("recording the outcome failed", extra={"attempt": attempt})
    values = _attempt_values(purchase_id, attempt, raw, result, started_at)
    error = f"the answer could not be recorded ({type(exc).__name__}): see attempt {attempt}"
    with transaction.atomic():
        Attempt.objects.create(**values, applied=False)
        purchase = lock_purchase(purchase_id)
        if purchase.attempts == attempt and purchase.status in RECORDABLE:
            _finish(
                purchase, UN, Actor.WORKER, now, attempts=attempt, error=error, next_attempt_at=None
            )
        if result.outcome == Outcome.OK:
            _alert_paid_unrecorded(purchase, attempt, result, now)
    return purchase


# --- Admins ----------------------------------------------------------------------------------


def _record_action(purchase: Purchase, user: Any, action: str, before: str, note: str = "") -> None:
    PurchaseAction.objects.create(
        purchase=purchase,
        user=user if getattr(user, "is_authenticated", False) else None,
        action=action,
        status_before=before,
        status_after=purchase.status,
        note=note,
    )


def _refuse_if_paid(purchase: Purchase, what: str) -> None:
    """Refuse to re-send or reject a purchase upstream already answered `ok` for."""
    paid = (
        Attempt.objects.filter(purchase_id=purchase.pk, outcome=Outcome.OK)
        .order_by("number")
        .first()
    )
    if paid is not None:
        raise DomainError(
            f"Upstream already paid this purchase: attempt {paid.number} answered ok "
            f"({paid.cashback_amount} bytes, unit {paid.unit}). It cannot be {what}; "
            f"mark it sent instead."
        )


def retry(purchase_id: Any, user: Any) -> Purchase:
    """Make an `unknown`, `failed` or `pending` purchase `pending` now, for an admin.

    A released reservation is reserved again under the merchant's deposit policy. The caller
    claims and sends it (after this transaction commits).
    """
    now = timezone.now()
    with transaction.atomic():
        purchase = lock_purchase(purchase_id)
        before = purchase.status
        if not allowed(before, PE, Actor.ADMIN):
            raise DomainError(
                f"Only unknown, failed or pending purchases can be retried, not {before}."
            )
        _refuse_if_paid(purchase, "retried")
        hold = purchase.hold
        if hold == Hold.RELEASED and purchase.reserved_minor:
            refused = (
                f"The deposit in {purchase.currency} no longer covers this purchase's "
                f"partner cashback, and the merchant's policy is reject."
            )
            if ledger.reserve_or_downgrade(
                purchase.merchant,
                purchase.currency,
                purchase.reserved_minor,
                purchase_id=purchase.pk,
                refused=refused,
            ):
                purchase.hold = Hold.HELD
            else:
                purchase.percentage, purchase.reserved_minor, purchase.hold = (
                    Decimal(0),
                    0,
                    Hold.NONE,
                )
        moved = Purchase.objects.filter(pk=purchase.pk, status=before).update(
            status=PE,
            next_attempt_at=now,
            retry_deadline=now + timedelta(seconds=settings.CASHBACK_RETRY_WINDOW),
            updated_at=now,
            lease_until=None,
            hold=purchase.hold,
            percentage=purchase.percentage,
            reserved_minor=purchase.reserved_minor,
        )
        if not moved:  # the row is locked: only a bug gets here
            raise DomainError("The purchase changed meanwhile; try again.")
        purchase.refresh_from_db()
        _record_action(purchase, user, "retry", before)
    return purchase


def mark_sent(
    purchase_id: Any, user: Any, cashback_amount: int, unit: str, note: str = ""
) -> Purchase:
    """Record that upstream did pay an `unknown` or `pending` purchase (checked by an admin)."""
    return _resolve(
        purchase_id,
        user,
        "mark_sent",
        note,
        SN,
        cashback_amount=cashback_amount,
        unit=unit,
        error=None,
    )


def mark_rejected(purchase_id: Any, user: Any, error: str, note: str = "") -> Purchase:
    """Record that upstream did not pay an `unknown` or `pending` purchase."""
    return _resolve(
        purchase_id, user, "mark_rejected", note, RJ, error=error or "rejected by an admin"
    )


def _resolve(
    purchase_id: Any, user: Any, action: str, note: str, to_status: str, **fields: Any
) -> Purchase:
    now = timezone.now()
    with transaction.atomic():
        purchase = lock_purchase(purchase_id)
        before = purchase.status
        if not allowed(before, to_status, Actor.ADMIN):
            raise DomainError(
                f"Only unknown or pending purchases can be resolved by hand, not {before}."
            )
        if to_status == RJ:
            _refuse_if_paid(purchase, "marked rejected")
        if to_status == SN:
            fields["sent_at"] = now
        if not _finish(purchase, to_status, Actor.ADMIN, now, user=user, **fields):
            raise DomainError("The purchase changed meanwhile; try again.")
        _record_action(purchase, user, action, before, note)
    return purchase


# --- Side effects written with a status change -----------------------------------------------


def raise_alert(kind: str, message: str, now: datetime, *, subject: str = "") -> None:
    """Open (or refresh) an alert that every admin page shows until it is resolved.

    One alert per (kind, subject): `subject` names what it is about (a purchase id, a
    merchant's public id), blank for a global condition.
    """
    subject = str(subject)
    updated = Alert.objects.filter(kind=kind, subject=subject).update(
        message=message, last_seen=now, count=F("count") + 1, resolved_at=None
    )
    if not updated:
        try:
            with transaction.atomic():
                Alert.objects.create(
                    kind=kind, subject=subject, message=message, first_seen=now, last_seen=now
                )
        except IntegrityError:
            pass
    logger.error("alert raised", extra={"alert": kind, "subject": subject})


def enqueue_webhook(purchase: Purchase) -> None:
    """Write the webhook delivery of a final status, in the caller's transaction."""
    if not purchase.merchant.webhook_url:
        return
    WebhookDelivery.objects.create(
        purchase=purchase,
        merchant=purchase.merchant,
        event=f"purchase.{purchase.status}",
        payload=PurchaseSerializer(purchase).data,
        next_attempt_at=timezone.now(),
    )
