"""Database trouble: a held lock or a stalled statement fails fast, and dropped connections
are replaced before use (PostgreSQL, where both happen)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from django.db import connection

from cashback.models import Purchase
from merchants.models import Balance, EntryKind
from merchants.services import record_entry
from tests.sessions import raw_session

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

UNAVAILABLE = {"detail": "The gateway cannot reach its database; retry later."}


@pytest.fixture
def other_session() -> Iterator[psycopg.Connection[Any]]:
    """A second connection to the test database, as another process (or an admin) holds."""
    conn = raw_session(autocommit=False)
    yield conn
    conn.rollback()
    conn.close()


def test_every_connection_has_the_statement_and_lock_timeouts() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        statement = cursor.fetchone()[0]
        cursor.execute("SHOW lock_timeout")
        lock = cursor.fetchone()[0]

    assert (statement, lock) == ("5s", "2s")


def test_a_held_balance_lock_answers_503_in_the_lock_timeout_and_stores_nothing(
    make_merchant: Any, upstream: Any, other_session: psycopg.Connection[Any]
) -> None:
    shop = make_merchant(percentage="1")
    record_entry(shop.merchant, EntryKind.DEPOSIT, Decimal("100.00"), "EUR")
    balance = Balance.objects.get(merchant=shop.merchant, currency="EUR")
    other_session.execute("SELECT 1 FROM merchants_balance WHERE id = %s FOR UPDATE", [balance.pk])

    started = time.monotonic()
    response = shop.post_purchase()
    elapsed = time.monotonic() - started

    assert (response.status_code, response.json()) == (503, UNAVAILABLE)
    assert response["Retry-After"] == "5"
    assert 2.0 <= elapsed < 4.0
    assert Purchase.objects.count() == 0
    assert upstream.state.requests == 0


def test_a_locked_purchase_table_answers_503_to_the_post_and_the_list(
    make_merchant: Any, upstream: Any, other_session: psycopg.Connection[Any]
) -> None:
    # What a migration that rewrites the table holds while it runs.
    shop = make_merchant()
    other_session.execute("LOCK TABLE cashback_purchase IN ACCESS EXCLUSIVE MODE")

    started = time.monotonic()
    post = shop.post_purchase()
    listing = shop.client.get("/api/v1/purchases")
    elapsed = time.monotonic() - started

    assert (post.status_code, post.json()) == (503, UNAVAILABLE)
    assert (listing.status_code, listing.json()) == (503, UNAVAILABLE)
    assert elapsed < 6.0
    assert upstream.state.requests == 0
    other_session.rollback()
    assert shop.post_purchase().status_code == 201


def _terminate_others(session: psycopg.Connection[Any]) -> int:
    """Terminate every other session of this database and wait until they are gone.

    pg_terminate_backend only signals: a backend still running when the next request takes
    its connection answers that one query with a FATAL, as a database going down does in
    the middle of anything. "Killed" here means dead before the requests start.
    """
    pids = [
        pid
        for (pid,) in session.execute(
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    ]
    session.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) pid", [pids])
    session.commit()
    deadline = time.monotonic() + 10
    while session.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", [pids]
    ).fetchone() != (0,):
        session.commit()
        assert time.monotonic() < deadline, "the terminated sessions did not exit"
        time.sleep(0.01)
    session.commit()
    return len(pids)


def _fill_pool(n: int) -> None:
    """Have n threads hold a pooled connection at once, then hand them all back."""
    barrier = threading.Barrier(n)

    def hold() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        barrier.wait()
        connection.close()

    threads = [threading.Thread(target=hold) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)


@pytest.mark.parametrize("pooled", [1, 12])
def test_after_every_pooled_connection_is_killed_the_next_requests_succeed(
    pooled: int, make_merchant: Any, upstream: Any, other_session: psycopg.Connection[Any]
) -> None:
    assert connection.pool is not None
    shop = make_merchant()
    assert shop.client.get("/api/v1/balance").status_code == 200
    _fill_pool(pooled)
    connection.close()  # hand the test thread's connection back to the pool too
    assert connection.pool.get_stats()["pool_available"] >= 1

    assert _terminate_others(other_session) >= 1

    started = time.monotonic()
    statuses = [shop.client.get("/api/v1/balance").status_code for _ in range(5)]
    statuses.append(shop.post_purchase(order_id="after-reset").status_code)
    elapsed = time.monotonic() - started

    assert statuses == [200, 200, 200, 200, 200, 201]
    # The first dead connection sweeps the pool; psycopg_pool waits ~1 s before the next try.
    assert elapsed < 3.0


def test_reports_run_with_their_own_statement_timeout_and_restore_the_requests_one() -> None:
    from gateway.db import report_timeout

    def current() -> str:
        with connection.cursor() as cursor:
            cursor.execute("SHOW statement_timeout")
            return str(cursor.fetchone()[0])

    with report_timeout():
        inside = current()

    assert (inside, current()) == ("5min", "5s")


def test_migrations_lift_the_statement_timeout_and_keep_the_lock_timeout() -> None:
    def current() -> tuple[str, str]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT current_setting('statement_timeout'), current_setting('lock_timeout')"
            )
            row = cursor.fetchone()
            return (row[0], row[1])

    with connection.schema_editor():
        inside = current()

    assert (inside, current()) == (("0", "2s"), ("5s", "2s"))
