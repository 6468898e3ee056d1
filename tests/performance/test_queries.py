"""A purchase POST costs a fixed, small number of SQL statements.

The numbers count every statement the request sends, transaction control included (in a
test, `atomic` blocks become SAVEPOINT / RELEASE SAVEPOINT pairs). A change that adds a
query to the purchase path shows up here; raise a number only on purpose.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import connection

from merchants.models import Balance, EntryKind
from merchants.services import record_entry

# Key lookup; store (one INSERT … ON CONFLICT DO NOTHING RETURNING, no transaction); claim
# (conditional update); record (savepoint, the conditional UPDATE … RETURNING with the
# attempt INSERT, release). PostgreSQL runs the UPDATE and the INSERT as one statement (a
# data-modifying CTE); SQLite, which has none, as two. Was 11 on both before lifecycle.py.
# Outside a test's transaction, on PostgreSQL, an unfunded purchase of a merchant without
# webhooks is recorded by one statement in its own transaction: 4 statements in all
# (tests/cashback/test_hot_path.py counts them).
NEW_PURCHASE_QUERIES = {"postgresql": 6, "sqlite": 7}
# The same, plus the reservation (savepoint and release around the store, the balance's
# conditional update, the entry) and the capture (the balance's conditional update, the
# entry). Was 11 + 7.
FUNDED_EXTRA_QUERIES = 6
# Key lookup, the INSERT that finds the order id taken, the replay lookup: nothing is
# written and upstream is not called. Was 2 (a SELECT before every insert instead).
REPLAY_QUERIES = 3


def new_purchase_queries() -> int:
    return NEW_PURCHASE_QUERIES[connection.vendor]


def warm_up(shop: Any) -> None:
    """Send one purchase first, so the key's last-used stamp (once a minute) is written."""
    assert shop.post_purchase(order_id="warm-up").status_code == 201


def test_a_new_purchase_costs_six_or_seven_queries(
    shop: Any, upstream: Any, django_assert_num_queries: Any
) -> None:
    warm_up(shop)

    with django_assert_num_queries(new_purchase_queries()):
        response = shop.post_purchase(order_id="A-1")

    assert response.status_code == 201
    assert response.json()["status"] == "sent"
    assert upstream.state.requests == 2


def test_a_funded_purchase_adds_only_its_reservation_and_capture(
    make_merchant: Any, upstream: Any, django_assert_num_queries: Any
) -> None:
    shop = make_merchant(percentage="5")
    record_entry(shop.merchant, EntryKind.DEPOSIT, Decimal("100.00"), "EUR")
    warm_up(shop)

    with django_assert_num_queries(new_purchase_queries() + FUNDED_EXTRA_QUERIES):
        response = shop.post_purchase(order_id="A-1")

    assert response.status_code == 201
    body = response.json()
    assert (body["status"], body["partner_cashback_percentage"]) == ("sent", "5")
    balance = Balance.objects.get(merchant=shop.merchant, currency="EUR")
    # Two purchases of 12.50 EUR at 5 %: 0.625 rounded up to 0.63 each, both captured.
    assert (balance.available, balance.reserved) == (Decimal("98.74"), Decimal("0.00"))


def test_a_replay_costs_three_queries_and_no_upstream_call(
    shop: Any, upstream: Any, django_assert_num_queries: Any
) -> None:
    warm_up(shop)

    with django_assert_num_queries(REPLAY_QUERIES):
        response = shop.post_purchase(order_id="warm-up")

    assert response.status_code == 200
    assert response.headers["Idempotent-Replayed"] == "true"
    assert upstream.state.requests == 1
