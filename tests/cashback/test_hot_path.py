"""The purchase hot path as optimised: an answer for a purchase that holds nothing recorded
by one statement in its own transaction (PostgreSQL), the hot statements prepared once per
connection and logged with their parameters, pooled connections checked without a round
trip, and the upstream watchdog dropping finished calls at once.

The database tests run without a test transaction around them (`transaction=True`): the
lone recording only runs outside any transaction, as in a request. On SQLite, which has no
lone path, the same answers are recorded alike in one transaction.
"""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import DataError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from cashback import lifecycle
from cashback.client import UpstreamResult
from cashback.models import Alert, Attempt, Hold, Outcome, Purchase, Status, WebhookDelivery
from cashback.sandbox import demo_cashback, demo_unit
from cashback.services import PurchaseInput, submit_purchase
from gateway.db import hot_cursor
from gateway.http import Exchange, _Watchdog
from gateway.postgresql.base import _maybe_dead, check_connection
from merchants.authentication import authenticate_key
from merchants.models import EntryKind, LedgerEntry, parse_api_key
from merchants.services import record_entry
from tests.sessions import raw_session

# No test transaction around them: the lone recording runs only outside any transaction.
DB = pytest.mark.django_db(transaction=True)

UNIT = "U" * 44
PAID = UpstreamResult(
    Outcome.OK, 200, cashback_amount=68_750_000, unit=UNIT, response_excerpt='{"result":"ok"}'
)
ADDRESS = "WR5FPYE6LHBQ57ZCFUTJXDDNHWK5355S"


def funded(make_merchant: Any) -> Any:
    shop = make_merchant(percentage="5")
    record_entry(shop.merchant, EntryKind.DEPOSIT, Decimal("10.00"), "EUR")
    return shop


def order(order_id: str = "A-1") -> PurchaseInput:
    return PurchaseInput(
        order_id=order_id,
        customer="c-42",
        description="coffee",
        address=ADDRESS,
        currency="EUR",
        amount_minor=1250,
        percentage=None,
        purchase_unit=None,
    )


def in_flight(shop: Any, order_id: str = "A-1") -> Purchase:
    """Store a purchase and claim it, as the request does before calling upstream."""
    purchase, new = submit_purchase(shop.merchant, order(order_id), send=False)
    assert new
    assert lifecycle.claim(purchase, lifecycle.Actor.REQUEST)
    purchase.refresh_from_db()
    assert (purchase.status, purchase.attempts) == (Status.SENDING, 1)
    return purchase


def record(purchase: Purchase, shop: Any, result: UpstreamResult, *, held: bool) -> Purchase:
    return lifecycle.record_outcome(
        purchase.pk, 1, result, started_at=timezone.now(), merchant=shop.merchant, held=held
    )


def kinds(purchase: Purchase) -> list[str]:
    return list(
        LedgerEntry.objects.filter(purchase=purchase).order_by("id").values_list("kind", flat=True)
    )


def check_ledger() -> None:
    call_command("check_ledger", stdout=io.StringIO())


def first_words(captured: CaptureQueriesContext) -> list[str]:
    return [q["sql"].split(None, 1)[0].upper() for q in captured.captured_queries]


def is_lone(sql: str) -> bool:
    """Whether `sql` is the lone recording statement (lifecycle._record_plan, lone=True)."""
    return "AND hold <> 'held'" in sql and ", true FROM p)" in sql


def warm_up(shop: Any) -> None:
    """Send one purchase first, so the key's last-used stamp (once a minute) is written."""
    assert shop.post_purchase(order_id="warm-up").status_code == 201


# -- 1. the lone recording ------------------------------------------------------------------


@DB
@pytest.mark.postgres
def test_a_purchase_holding_nothing_costs_four_statements_and_no_transaction(
    shop: Any, upstream: Any
) -> None:
    warm_up(shop)

    with CaptureQueriesContext(connection) as captured:
        response = shop.post_purchase(order_id="A-1")

    assert response.status_code == 201
    assert response.json()["status"] == "sent"
    # Key lookup, store, claim, record: no BEGIN, COMMIT or SAVEPOINT (Django logs those).
    assert first_words(captured) == ["SELECT", "INSERT", "UPDATE", "WITH"]
    recording = captured.captured_queries[3]["sql"]
    # The lone statement: only for a purchase that holds nothing, attempt only if matched.
    assert is_lone(recording)
    purchase = Purchase.objects.get(order_id="A-1")
    assert (purchase.status, purchase.hold, purchase.attempts) == (Status.SENT, Hold.NONE, 1)
    unit = demo_unit(settings.CASHBACK_PARTNER, shop.merchant.public_id, "A-1")
    amount = demo_cashback("EUR", Decimal("12.50"), Decimal("0"))
    assert (purchase.cashback_amount, purchase.unit) == (amount, unit)
    attempt = Attempt.objects.get(purchase=purchase)
    assert (attempt.number, attempt.applied, attempt.outcome) == (1, True, Outcome.OK)
    assert (attempt.cashback_amount, attempt.unit, attempt.http_status) == (str(amount), unit, 200)
    assert upstream.state.requests == 2


@DB
def test_an_answer_for_a_purchase_that_moved_on_writes_one_unapplied_attempt_and_alerts(
    shop: Any,
) -> None:
    purchase = in_flight(shop)
    # An admin's retry took it on (attempt 2) while attempt 1's answer was on the way.
    Purchase.objects.filter(pk=purchase.pk).update(attempts=2)
    before = Purchase.objects.values().get(pk=purchase.pk)

    with CaptureQueriesContext(connection) as captured:
        recorded = record(purchase, shop, PAID, held=False)

    words = first_words(captured)
    if connection.vendor == "postgresql":
        # The lone statement, which matched nothing and wrote nothing; then the general path.
        assert is_lone(captured.captured_queries[0]["sql"])
        assert words[:3] == ["WITH", "BEGIN", "WITH"]
        assert not is_lone(captured.captured_queries[2]["sql"])
    else:
        assert words[:3] == ["BEGIN", "UPDATE", "INSERT"]
    assert words[-1] == "COMMIT"
    attempt = Attempt.objects.get(purchase=purchase)
    assert (attempt.number, attempt.outcome, attempt.applied) == (1, Outcome.OK, False)
    assert (attempt.cashback_amount, attempt.unit) == ("68750000", UNIT)
    assert Purchase.objects.values().get(pk=purchase.pk) == before
    assert (recorded.status, recorded.attempts) == (Status.SENDING, 2)
    alert = Alert.objects.get()
    assert (alert.kind, alert.subject) == (Alert.Kind.UPSTREAM_PAID_UNRECORDED, str(purchase.pk))
    assert alert.message == (
        f"Upstream paid order 'A-1' of merchant {shop.merchant.public_id} (68750000 bytes, "
        f"unit {UNIT}) on attempt 1, but the purchase is recorded sending: reconcile it."
    )


@DB
def test_a_held_purchase_passed_as_holding_nothing_is_still_captured(
    make_merchant: Any,
) -> None:
    shop = funded(make_merchant)
    purchase = in_flight(shop)
    assert purchase.hold == Hold.HELD
    assert kinds(purchase) == ["reservation"]

    with CaptureQueriesContext(connection) as captured:
        recorded = record(purchase, shop, PAID, held=False)

    # The guard `hold <> 'held'` kept the lone statement off it: the general path settled it,
    # the capture in the same transaction as the purchase's update.
    if connection.vendor == "postgresql":
        assert is_lone(captured.captured_queries[0]["sql"])
        assert first_words(captured) == ["WITH", "BEGIN", "WITH", "UPDATE", "INSERT", "COMMIT"]
    else:
        assert first_words(captured) == ["BEGIN", "UPDATE", "INSERT", "UPDATE", "INSERT", "COMMIT"]

    purchase.refresh_from_db()
    assert (purchase.status, purchase.hold, purchase.cashback_amount, purchase.unit) == (
        Status.SENT,
        Hold.CAPTURED,
        68_750_000,
        UNIT,
    )
    assert (recorded.status, recorded.hold) == (Status.SENT, Hold.CAPTURED)
    assert list(
        Attempt.objects.filter(purchase=purchase).values_list("number", "outcome", "applied")
    ) == [(1, "ok", True)]
    assert kinds(purchase) == ["reservation", "capture"]
    check_ledger()


ANSWERS = {
    Status.SENT: PAID,
    Status.REJECTED: UpstreamResult(Outcome.REJECTED, 200, error="refused by upstream"),
    Status.PENDING: UpstreamResult(Outcome.NOT_SENT, None, error="connection refused"),
    Status.UNKNOWN: UpstreamResult(Outcome.AMBIGUOUS, 500, error="HTTP 500"),
}


@DB
@pytest.mark.parametrize("status", list(ANSWERS))
def test_each_answer_for_a_purchase_holding_nothing_is_recorded_alone(
    shop: Any, status: str
) -> None:
    purchase = in_flight(shop)
    result = ANSWERS[status]

    with CaptureQueriesContext(connection) as captured:
        recorded = record(purchase, shop, result, held=False)

    sql = [q["sql"] for q in captured.captured_queries]
    if connection.vendor == "postgresql":
        assert len(sql) == 1
        assert is_lone(sql[0])
    else:
        assert first_words(captured) == ["BEGIN", "UPDATE", "INSERT", "COMMIT"]
    purchase.refresh_from_db()
    assert (recorded.status, purchase.status, purchase.hold) == (status, status, Hold.NONE)
    assert purchase.error == (result.error or None)
    assert purchase.lease_until is None
    assert (purchase.next_attempt_at is not None) == (status == Status.PENDING)
    attempt = Attempt.objects.get(purchase=purchase)
    assert (attempt.number, attempt.outcome, attempt.applied, attempt.http_status) == (
        1,
        result.outcome,
        True,
        result.http_status,
    )
    assert (attempt.error, attempt.cashback_amount) == (
        result.error,
        None if result.cashback_amount is None else str(result.cashback_amount),
    )
    assert not Alert.objects.exists()


@DB
@pytest.mark.parametrize("case", ["webhook", "auth_failed", "in_transaction", "held"])
def test_everything_else_is_recorded_in_a_transaction(shop: Any, case: str) -> None:
    """A webhook to write, an alert to raise, an open transaction, a hold: never lone."""
    purchase = in_flight(shop)
    if case == "webhook":
        shop.merchant.webhook_url = "http://127.0.0.1:9/hook"
        shop.merchant.save(update_fields=["webhook_url"])
    result = PAID
    if case == "auth_failed":
        result = UpstreamResult(Outcome.AUTH_FAILED, 401, error="authentication failed")

    with CaptureQueriesContext(connection) as captured:
        if case == "in_transaction":
            with transaction.atomic():
                recorded = record(purchase, shop, result, held=False)
        else:
            recorded = record(purchase, shop, result, held=case == "held")

    sql = [q["sql"] for q in captured.captured_queries]
    assert not any(is_lone(s) for s in sql)
    assert sql[0].startswith("BEGIN")
    assert sql[-1] == "COMMIT"
    status = Status.PENDING if case == "auth_failed" else Status.SENT
    assert (recorded.status, Purchase.objects.get(pk=purchase.pk).status) == (status, status)
    assert Attempt.objects.get(purchase=purchase).applied is True
    assert WebhookDelivery.objects.count() == (1 if case == "webhook" else 0)
    assert Alert.objects.filter(kind=Alert.Kind.AUTH_FAILED).count() == (
        1 if case == "auth_failed" else 0
    )


# -- 2. the hot statements, prepared once per connection ------------------------------------


def prepared() -> dict[str, int]:
    """Return the statements prepared on this connection and how often each ran."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement, generic_plans + custom_plans FROM pg_prepared_statements")
        return dict(cursor.fetchall())


HOT = {
    "key lookup": lambda s: s.startswith("SELECT k.") and s.endswith("WHERE k.prefix = $1"),
    "store": lambda s: s.startswith("INSERT INTO cashback_purchase "),
    "claim": lambda s: s.startswith("UPDATE cashback_purchase SET status = $1, lease_until = $2"),
    "lone ok": lambda s: (
        s.startswith("WITH p AS (UPDATE cashback_purchase SET status = $1, cashback_amount = $2")
        and is_lone(s)
    ),
}


def runs(found: dict[str, int]) -> dict[str, int]:
    """Return how often each hot statement prepared on this connection ran (0: not there)."""
    counts = {}
    for name, matches in HOT.items():
        matching = [n for statement, n in found.items() if matches(statement)]
        assert len(matching) <= 1, (name, found)
        counts[name] = matching[0] if matching else 0
    return counts


@DB
@pytest.mark.postgres
def test_the_hot_statements_are_prepared_on_the_connection_and_reused(
    shop: Any, upstream: Any
) -> None:
    # Pooled connections keep what earlier tests prepared: count from here.
    before = runs(prepared())

    for n in range(1, 4):
        assert authenticate_key(shop.key) is not None
        purchase, new = submit_purchase(shop.merchant, order(f"P-{n}"))
        assert new
        assert purchase.status == Status.SENT
        # The key lookup, the store, the claim, the lone recording: each prepared on this
        # connection (parameters bound on the server) and run once more per purchase.
        assert runs(prepared()) == {name: count + n for name, count in before.items()}

    assert upstream.state.requests == 3
    # An ORM query (client-side binding) is never prepared.
    total = len(prepared())
    assert Purchase.objects.filter(order_id="P-1").count() == 1
    assert Purchase.objects.filter(order_id="P-1").count() == 1
    assert len(prepared()) == total


@DB
@pytest.mark.postgres
def test_a_hot_statement_is_captured_with_its_parameters_not_placeholders(shop: Any) -> None:
    with CaptureQueriesContext(connection) as captured:
        assert authenticate_key(shop.key) is not None

    lookup = captured.captured_queries[0]["sql"]
    assert lookup.startswith("SELECT k.")
    assert lookup.endswith(f"WHERE k.prefix = '{parse_api_key(shop.key)}'")
    assert "$1" not in lookup
    assert "%s" not in lookup


@DB
@pytest.mark.postgres
def test_an_integer_outside_its_column_type_is_refused_by_the_hot_cursor_not_wrapped() -> None:
    # What the hot statements bind for an integer column: Django's get_db_prep_save wraps
    # the value in psycopg's Int4 (Int2 for small integers). Django's own cursor sends it
    # as a literal, which the server refuses; the hot cursor must refuse it too, not store
    # another number. (Today it sends the low 32 bits: 2**32 + 1234 arrives as 1234.)
    value = Attempt._meta.get_field("duration_ms").get_db_prep_save(2**32 + 1234, connection)
    with connection.cursor() as cursor, pytest.raises(DataError):
        cursor.execute("SELECT %s::integer", [value])

    with hot_cursor(connection) as cursor:
        try:
            cursor.execute("SELECT %s::integer", [value])
            sent = cursor.fetchone()[0]
        except DataError:
            sent = None
    assert sent is None, f"{2**32 + 1234} reached the server as {sent}"


@DB
@pytest.mark.postgres
def test_the_workers_one_statement_claim_takes_only_due_purchases_oldest_first(
    shop: Any,
) -> None:
    # Outside any transaction, as the worker runs it: the prepared statement of
    # lifecycle._claim_due_sql, whose UPDATE trusts the rows its CTE locked.
    now = timezone.now()
    due: dict[str, tuple[str, timedelta]] = {
        "Q-old": (Status.QUEUED, timedelta(seconds=-30)),
        "P-mid": (Status.PENDING, timedelta(seconds=-20)),
        "Q-new": (Status.QUEUED, timedelta(seconds=-10)),
        "Q-later": (Status.QUEUED, timedelta(seconds=60)),  # not due yet
    }
    others = [Status.SENDING, Status.UNKNOWN, Status.SENT, Status.REJECTED, Status.FAILED]
    for n, status in enumerate(others):
        due[f"X-{status}"] = (status, timedelta(seconds=-40 - n))  # due, but not claimable
    for order_id, (status, offset) in due.items():
        purchase, new = submit_purchase(shop.merchant, order(order_id), send=False)
        assert new
        Purchase.objects.filter(pk=purchase.pk).update(status=status, next_attempt_at=now + offset)

    first = lifecycle.claim_due(now, limit=2)
    rest = lifecycle.claim_due(now, limit=10)

    assert [p.order_id for p in first] == ["Q-old", "P-mid"]
    assert [p.order_id for p in rest] == ["Q-new"]
    assert {p.status for p in first + rest} == {Status.SENDING}
    assert dict(Purchase.objects.values_list("order_id", "status")) == {
        "Q-old": Status.SENDING,
        "P-mid": Status.SENDING,
        "Q-new": Status.SENDING,
        "Q-later": Status.QUEUED,
        **{f"X-{status}": status for status in others},
    }
    assert Purchase.objects.get(order_id="Q-old").attempts == 1


# -- 3. pooled connections checked without a round trip -------------------------------------


@pytest.fixture
def watched() -> Iterator[psycopg.Connection[Any]]:
    conn = raw_session()
    yield conn
    conn.close()


@pytest.fixture
def admin() -> Iterator[psycopg.Connection[Any]]:
    """Another session, as a database administrator (or a restart) would act from."""
    conn = raw_session()
    yield conn
    conn.close()


def last_query(admin: psycopg.Connection[Any], pid: int) -> str:
    row = admin.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
    assert row is not None
    return str(row[0])


@pytest.mark.django_db
@pytest.mark.postgres
def test_a_live_idle_connection_is_not_suspected_and_checked_without_a_round_trip(
    watched: psycopg.Connection[Any], admin: psycopg.Connection[Any]
) -> None:
    assert _maybe_dead(watched) is False
    assert watched.execute("SELECT 41 + 1").fetchone() == (42,)
    assert _maybe_dead(watched) is False

    check_connection(watched)

    # Nothing was sent: the backend's last statement is still the SELECT, not the empty
    # query psycopg_pool's check sends.
    assert last_query(admin, watched.info.backend_pid) == "SELECT 41 + 1"
    assert watched.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.django_db
@pytest.mark.postgres
def test_a_connection_inside_a_transaction_is_suspected() -> None:
    for autocommit in (False, True):
        conn = raw_session(autocommit=autocommit)
        try:
            if autocommit:
                conn.execute("BEGIN")
            else:
                conn.execute("SELECT 1")  # psycopg begins the transaction first
            assert conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
            assert _maybe_dead(conn) is True
        finally:
            conn.close()
        assert _maybe_dead(conn) is True  # closed


@pytest.mark.django_db
@pytest.mark.postgres
def test_a_terminated_connection_is_suspected_and_its_check_raises(
    watched: psycopg.Connection[Any], admin: psycopg.Connection[Any]
) -> None:
    assert watched.execute("SELECT 1").fetchone() == (1,)
    assert _maybe_dead(watched) is False

    row = admin.execute("SELECT pg_terminate_backend(%s)", [watched.info.backend_pid]).fetchone()
    assert row == (True,)
    # The server's last message and the end of the stream reach the socket soon after.
    deadline = time.monotonic() + 2.0
    while not _maybe_dead(watched) and time.monotonic() < deadline:
        time.sleep(0.01)

    assert _maybe_dead(watched) is True
    assert not watched.closed  # psycopg has not noticed yet: only the socket says so
    with pytest.raises(psycopg.OperationalError):
        check_connection(watched)
    assert watched.closed


# -- 4. the upstream watchdog drops finished calls at once ----------------------------------


def heap_of(watchdog: _Watchdog) -> list[Exchange]:
    with watchdog._cond:
        return [exchange for _, _, exchange in watchdog._heap]


def stuck_call(watchdog: _Watchdog, seconds: float) -> tuple[Exchange, float]:
    """Watch a call stuck reading its socket, due in `seconds`; return it and when it was cut."""
    ours, theirs = socket.socketpair()
    try:
        stuck = Exchange(deadline=time.monotonic() + seconds, connect_timeout=1)
        watchdog.watch(stuck)
        watchdog.attach(stuck, ours)
        theirs.settimeout(2.0)
        started = time.monotonic()
        assert theirs.recv(1) == b""  # the watchdog shut the stuck call's socket down
        return stuck, time.monotonic() - started
    finally:
        ours.close()
        theirs.close()


def test_the_watchdog_drops_a_finished_call_without_waiting_for_its_deadline() -> None:
    watchdog = _Watchdog()
    done = Exchange(deadline=time.monotonic() + 60, connect_timeout=1)
    watchdog.watch(done)
    watchdog.release(done)  # answered long before its deadline, as nearly every call is

    stuck, took = stuck_call(watchdog, 0.2)

    assert stuck.timed_out is True
    assert 0.1 <= took < 1.0
    # With the stuck call gone, the finished one is at the top of the heap: dropped at
    # once, not kept (and slept on) until its deadline a minute away.
    deadline = time.monotonic() + 1.0
    while heap_of(watchdog) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert heap_of(watchdog) == []
    assert done.timed_out is False


def test_the_watchdog_cuts_a_call_due_after_finished_ones_at_its_own_deadline() -> None:
    watchdog = _Watchdog()
    finished = []
    for seconds in (0.1, 0.2, 0.3):
        exchange = Exchange(deadline=time.monotonic() + seconds, connect_timeout=1)
        watchdog.watch(exchange)
        watchdog.release(exchange)
        finished.append(exchange)

    stuck, took = stuck_call(watchdog, 0.5)

    assert stuck.timed_out is True
    assert 0.4 <= took < 0.5 + 0.25  # DEADLINE_SLACK
    assert [e.timed_out for e in finished] == [False, False, False]
    assert heap_of(watchdog) == []
