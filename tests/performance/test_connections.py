"""Connections are reused: to upstream (HTTP/1.1 keep-alive) and to the database."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.conf import settings

from cashback.client import get_client


def upstream_fields(order_id: str) -> dict[str, str]:
    return {
        "customer": "c-42",
        "order_id": order_id,
        "merchant": "shop-1",
        "address": "WR5FPYE6LHBQ57ZCFUTJXDDNHWK5355S",
        "currency": "EUR",
        "currency_amount": "12.5",
        "partner_cashback_percentage": "0",
    }


def test_fifty_purchases_in_a_row_use_one_upstream_connection(shop: Any, upstream: Any) -> None:
    # Ten through the whole API (each request finds the same client), forty more through
    # the client itself, which is quicker and holds the same pool.
    for i in range(10):
        assert shop.post_purchase(order_id=f"K-{i}").status_code == 201
    outcomes = [get_client().new_purchase(upstream_fields(f"K-{i}")).outcome for i in range(10, 50)]

    assert outcomes == ["ok"] * 40
    assert upstream.state.requests == 50
    assert upstream.state.connections == 1


def test_the_upstream_pool_is_as_large_as_the_threads_that_share_it(upstream: Any) -> None:
    client = get_client()
    threads = settings.CASHBACK_HTTP_POOL_SIZE
    assert threads >= 16  # a gunicorn worker's threads (GUNICORN_THREADS, 16 by default)
    assert client.pool.maxsize == threads
    barrier = threading.Barrier(threads)
    outcomes: list[str] = []

    def send(n: int) -> None:
        barrier.wait()  # all threads at once, so the pool must hold `threads` connections
        for i in range(10):
            result = client.new_purchase(upstream_fields(f"T-{n}-{i}"))
            outcomes.append(result.outcome)  # list.append is atomic; asserted below

    workers = [threading.Thread(target=send, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert outcomes == ["ok"] * (threads * 10)
    assert upstream.state.requests == threads * 10
    # Never more connections than threads: no request waited for, or discarded, a socket.
    assert 1 <= upstream.state.connections <= threads


@pytest.mark.postgres
def test_postgresql_connections_come_from_a_pool_that_covers_every_thread() -> None:
    database = settings.DATABASES["default"]
    pool = database.get("OPTIONS", {}).get("pool")
    if pool:
        # Django hands the connection back to psycopg's pool after each request.
        assert database["CONN_MAX_AGE"] == 0
        assert pool["max_size"] >= settings.CASHBACK_HTTP_POOL_SIZE
        assert 1 <= pool["min_size"] <= pool["max_size"]
    else:
        # Without the pool, each thread keeps its connection between requests.
        assert database["CONN_MAX_AGE"] > 0
        assert database["CONN_HEALTH_CHECKS"] is True
