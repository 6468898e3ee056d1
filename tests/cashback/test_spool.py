"""An answer upstream gives while the database is unreachable is kept on disk and recorded
once the database is back (cashback/spool.py); a reset connection is retried at once."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.core.management import call_command
from django.db import OperationalError, connection
from django.utils import timezone

from cashback import lifecycle, spool, worker
from cashback.client import UpstreamResult
from cashback.models import Attempt, Outcome, Purchase, Status
from cashback.sandbox import demo_cashback, demo_unit
from cashback.serializers import PurchaseRequestSerializer
from cashback.services import submit_purchase
from tests.conftest import purchase_body
from tests.sessions import raw_session


@pytest.fixture
def spool_dir(settings: Any) -> Path:
    return Path(settings.CASHBACK_SPOOL_DIR)


@pytest.fixture
def admin_session() -> Iterator[psycopg.Connection[Any]]:
    """A session outside the gateway that can cut and refuse the gateway's connections."""
    # To another database: a database cannot refuse connections to itself.
    conn = raw_session(dbname="postgres")
    name = connection.settings_dict["NAME"]
    yield conn
    conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    conn.close()


@pytest.fixture
def short_pool_wait() -> Iterator[None]:
    """Wait 1 s (not DATABASE_POOL_TIMEOUT) for a connection while the database refuses."""
    pool = connection.settings_dict["OPTIONS"]["pool"]
    before = pool["timeout"]
    connection.close_pool()
    pool["timeout"] = 1
    yield
    connection.close_pool()
    pool["timeout"] = before


def _cut(session: psycopg.Connection[Any], *, refuse: bool) -> None:
    name = connection.settings_dict["NAME"]
    if refuse:
        session.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    session.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name]
    )


def _cut_during_the_call(session: psycopg.Connection[Any], *, refuse: bool) -> None:
    """Cut once the purchase is claimed, so its call is in flight (upstream holds it 0.6 s).

    Not after a fixed pause alone: a request that is the first of its process can take
    longer than that to store and claim, and would then be cut before it stored anything.
    """
    time.sleep(0.3)
    with raw_session() as watcher:
        deadline = time.monotonic() + 15
        while not watcher.execute(
            "SELECT 1 FROM cashback_purchase WHERE order_id = 'held' AND status = 'sending'"
        ).fetchone():
            assert time.monotonic() < deadline, "the purchase was never claimed"
            time.sleep(0.01)
    _cut(session, refuse=refuse)


def _connections_allowed_again(session: psycopg.Connection[Any]) -> None:
    """Let connections in again, and wait until the pool has one to hand out.

    The pool reconnects on its own, after a back-off that grew while it was refused (a
    second or a few): as a worker's next pass would, wait for it rather than for a fixed time.
    """
    session.execute(f'ALTER DATABASE "{connection.settings_dict["NAME"]}" ALLOW_CONNECTIONS true')
    deadline = time.monotonic() + 30
    while True:
        try:
            connection.ensure_connection()
            return
        except OperationalError:
            assert time.monotonic() < deadline, "the pool never reconnected"
            time.sleep(0.1)


def _in_thread(fn: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(fn())
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def _send_by(path: str, shop: Any) -> Any:
    """Start sending one purchase the way `path` does; return what the caller sees."""
    if path == "request":
        return lambda: shop.post_purchase(order_id="held")
    serializer = PurchaseRequestSerializer(data=purchase_body(order_id="held"))
    serializer.is_valid(raise_exception=True)
    submit_purchase(shop.merchant, serializer.to_input(), respond_async=True)
    (claimed,) = lifecycle.claim_due(timezone.now(), limit=1)
    return lambda: worker._send(claimed)


def _assert_sent_once(shop: Any, upstream: Any) -> Purchase:
    purchase = Purchase.objects.get(merchant=shop.merchant, order_id="held")
    assert (purchase.status, purchase.cashback_amount, purchase.unit) == (
        Status.SENT,
        demo_cashback("EUR", Decimal("12.50"), Decimal(0)),
        demo_unit("sandbox", shop.merchant.public_id, "held"),
    )
    attempts = list(Attempt.objects.filter(purchase=purchase).values_list("number", "outcome"))
    assert attempts == [(1, Outcome.OK)]
    assert upstream.state.requests == 1
    call_command("check_ledger", stdout=io.StringIO())
    return purchase


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["request", "worker"])
def test_a_connection_reset_during_the_call_still_records_the_ok_answer(
    path: str, make_merchant: Any, upstream: Any, admin_session: Any, spool_dir: Path
) -> None:
    shop = make_merchant()
    send = _send_by(path, shop)
    upstream.state.latency = 0.6  # upstream holds its answer while the connections are cut

    connection.close()  # the test thread's connection goes back to the pool, to be cut too
    thread, out = _in_thread(send)
    _cut_during_the_call(admin_session, refuse=False)
    thread.join(30)

    if path == "request":
        assert out[0].status_code == 201
        assert out[0].json()["status"] == "sent"
    _assert_sent_once(shop, upstream)
    assert spool.pending() == []


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["request", "worker"])
def test_an_answer_arriving_while_the_database_refuses_is_spooled_then_recorded(
    path: str,
    make_merchant: Any,
    upstream: Any,
    admin_session: Any,
    short_pool_wait: None,
    spool_dir: Path,
) -> None:
    shop = make_merchant()
    send = _send_by(path, shop)
    upstream.state.latency = 0.6

    connection.close()  # the test thread's connection goes back to the pool, to be cut too
    thread, out = _in_thread(send)
    _cut_during_the_call(admin_session, refuse=True)
    thread.join(30)

    if path == "request":
        # Stored and sent, its outcome not yet recorded: in progress, never a 500.
        assert out[0].status_code == 202
        assert out[0].json()["status"] == "sending"
    (kept,) = spool.pending()
    answer = json.loads(kept.read_text())
    assert (answer["attempt"], answer["result"]["outcome"]) == (1, "ok")
    assert answer["result"]["cashback_amount"] == demo_cashback("EUR", Decimal("12.50"), 0)
    assert not list(spool_dir.glob(".*.tmp"))

    # While the database refuses, a pass keeps the file; once it is back, a pass records it.
    assert spool.replay() == 0
    assert spool.pending() == [kept]
    _connections_allowed_again(admin_session)
    assert Purchase.objects.get(order_id="held").status == Status.SENDING
    worker.run_once()

    _assert_sent_once(shop, upstream)
    assert spool.pending() == []


def _stored_purchase(shop: Any) -> Purchase:
    serializer = PurchaseRequestSerializer(data=purchase_body(order_id="held"))
    serializer.is_valid(raise_exception=True)
    purchase, _ = submit_purchase(shop.merchant, serializer.to_input(), send=False)
    assert lifecycle.claim(purchase, lifecycle.Actor.REQUEST)
    return purchase


OK = UpstreamResult(
    outcome=Outcome.OK,
    http_status=200,
    cashback_amount=9_007_199_254_740_993,  # beyond a float's 53 bits: kept exactly
    unit=demo_unit("sandbox", "m", "o"),
    duration_ms=12,
    response_excerpt='{"result":"ok"}',
)


def test_a_replayed_answer_is_recorded_once_even_if_its_first_commit_landed(shop: Any) -> None:
    purchase = _stored_purchase(shop)
    started = timezone.now()
    # The commit landed but its acknowledgement was lost: the caller spooled it anyway.
    lifecycle.record_outcome(purchase.pk, 1, OK, started_at=started)
    spool.keep(purchase.pk, 1, OK, started)

    assert spool.replay() == 1
    assert spool.replay() == 0

    assert Attempt.objects.filter(purchase=purchase).count() == 1
    assert spool.pending() == []


def test_a_spooled_answer_keeps_every_field_exactly(shop: Any) -> None:
    purchase = _stored_purchase(shop)
    started = timezone.now()
    spool.keep(purchase.pk, 1, OK, started)

    assert spool.replay() == 1

    attempt = Attempt.objects.get(purchase=purchase)
    assert (attempt.number, attempt.outcome, attempt.started_at, attempt.http_status) == (
        1,
        Outcome.OK,
        started,
        200,
    )
    assert attempt.response_excerpt == '{"result":"ok"}'
    assert Decimal(attempt.cashback_amount) == Decimal(9_007_199_254_740_993)
    assert attempt.unit == demo_unit("sandbox", "m", "o")


def test_an_answer_for_a_purchase_that_is_gone_is_set_aside_not_retried_forever(
    shop: Any, spool_dir: Path
) -> None:
    spool.keep("00000000-0000-0000-0000-000000000000", 1, OK, timezone.now())

    assert spool.replay() == 0

    assert spool.pending() == []
    assert [p.name.endswith(".json.unrecordable") for p in spool_dir.iterdir()] == [True]
