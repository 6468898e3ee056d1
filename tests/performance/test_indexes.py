"""No hot query scans a table: EXPLAIN every statement of the hot paths over 100,000 rows.

The rows are made by PostgreSQL itself (INSERT … SELECT over generate_series, cloned from
one row made by the ORM, so new columns need no change here) and ANALYZEd, so the planner
sees a production-sized table and a scan would be its honest choice.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.db.models import Model
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from cashback import lifecycle
from cashback.models import Purchase
from merchants.authentication import authenticate_key
from merchants.models import ApiKey, Merchant

pytestmark = pytest.mark.postgres

PURCHASES = 100_000
MERCHANTS = 100
API_KEYS = 10_000
WATCHED = ("cashback_purchase", "merchants_apikey")


def clone_rows(model: type[Model], template_pk: Any, count: int, overrides: dict[str, str]) -> None:
    """Insert `count` copies of one row in SQL; `overrides` maps columns to SQL over `g`."""
    table = model._meta.db_table
    columns = [f.column for f in model._meta.concrete_fields]
    if model._meta.pk.column not in overrides:
        columns.remove(model._meta.pk.column)  # an auto id: the sequence fills it
    values = [overrides.get(c, f't."{c}"') for c in columns]
    names = ", ".join(f'"{c}"' for c in columns)
    with connection.cursor() as cursor:
        cursor.execute(
            f'INSERT INTO "{table}" ({names}) SELECT {", ".join(values)} '
            f'FROM "{table}" t, generate_series(1, %s) g WHERE t."{model._meta.pk.column}" = %s',
            [count, template_pk],
        )


def plan(sql: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql)
        return "\n".join(row[0] for row in cursor.fetchall())


def scans(plan_text: str) -> list[str]:
    """Return the watched tables that `plan_text` reads with a sequential scan."""
    return [t for t in WATCHED if f"Seq Scan on {t} " in plan_text + " "]


@pytest.fixture
def big_tables(make_merchant: Any, upstream: Any) -> Any:
    """Return a merchant with a key among 100 merchants, 10,000 keys, 100,000 purchases."""
    shop = make_merchant()
    assert shop.post_purchase(order_id="template").status_code == 201
    template = Purchase.objects.get(merchant=shop.merchant, order_id="template")
    clone_rows(Merchant, shop.merchant.pk, MERCHANTS - 1, {"public_id": "'bulk-' || g"})
    clone_rows(
        ApiKey,
        ApiKey.objects.get(merchant=shop.merchant).pk,
        API_KEYS,
        {
            "prefix": "lpad(to_hex(g), 10, 'z')",
            "merchant_id": "(SELECT max(id) FROM merchants_merchant) - mod(g, 99)",
        },
    )
    # Mostly finished purchases over a year; 1 % open, as a live queue would be.
    clone_rows(
        Purchase,
        template.pk,
        PURCHASES,
        {
            "id": "gen_random_uuid()",
            "merchant_id": f"(SELECT max(id) FROM merchants_merchant) - mod(g, {MERCHANTS})",
            "order_id": "'bulk-' || g",
            "status": "CASE mod(g, 100) WHEN 0 THEN 'pending' WHEN 1 THEN 'unknown' ELSE 'sent' END",
            "next_attempt_at": "CASE mod(g, 100) WHEN 0 THEN now() + interval '1 hour' END",
            "created_at": "now() - g * interval '5 minutes'",
            "updated_at": "now() - g * interval '5 minutes'",
        },
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE cashback_purchase, merchants_apikey, merchants_merchant")
    assert Purchase.objects.count() == PURCHASES + 1
    return shop


def test_every_hot_query_uses_an_index_over_100000_purchases(big_tables: Any) -> None:
    shop = big_tables
    now = timezone.now()
    day = (now - timedelta(days=3)).date().isoformat()
    own_order = (
        Purchase.objects.filter(merchant=shop.merchant, order_id__startswith="bulk-")
        .values_list("order_id", flat=True)
        .first()
    )
    with CaptureQueriesContext(connection) as captured:
        assert authenticate_key(shop.key, "10.0.0.1") is not None  # key lookup by prefix
        assert shop.post_purchase(order_id="A-1").status_code == 201  # store, claim, record
        assert shop.post_purchase(order_id="template").status_code == 200  # replay lookup
        assert shop.client.get("/api/v1/purchases").status_code == 200
        first = shop.client.get("/api/v1/purchases?status=sent&page_size=5").json()
        assert shop.client.get(first["next"]).status_code == 200  # the next page's cursor
        for query in (
            "status=pending",
            f"created_after={day}",
            f"created_before={day}",
            f"created_after={day}&created_before={now.date().isoformat()}&status=unknown",
        ):
            assert shop.client.get(f"/api/v1/purchases?{query}").status_code == 200
        assert shop.client.get(f"/api/v1/purchases/{own_order}").status_code == 200
        later = now + timedelta(hours=2)  # the pending rows are due by then
        lifecycle.expire_leases(later)
        lifecycle.fail_expired(later)
        assert len(lifecycle.claim_due(later, limit=16)) == 16
    statements = [
        q["sql"]
        for q in captured.captured_queries
        if q["sql"].lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE"))
        and any(t in q["sql"] for t in WATCHED)
    ]
    assert len(statements) >= 15
    # A query on an unindexed column is reported, or this test would prove nothing.
    assert scans(plan("SELECT id FROM cashback_purchase WHERE customer = 'nobody'")) == [
        "cashback_purchase"
    ]
    scanned = {sql[:160]: scans(plan(sql)) for sql in statements}
    assert {sql: tables for sql, tables in scanned.items() if tables} == {}


def plan_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    """Return `node` and every node below it in an EXPLAIN (FORMAT JSON) plan."""
    return [node, *(n for child in node.get("Plans", ()) for n in plan_nodes(child))]


def test_the_workers_claim_reads_only_the_rows_it_takes_from_a_long_queue(
    big_tables: Any,
) -> None:
    # 1,000 pending purchases fall due by `later`. The claim is a prepared statement, so it
    # is planned once without its values (a generic plan): it must still walk `purchase_due`
    # in due order and stop at its limit, not read and sort the whole queue per claim.
    later = timezone.now() + timedelta(hours=2)
    froms = lifecycle.sources(lifecycle.SE, lifecycle.Actor.WORKER)
    sql, _, _ = lifecycle._claim_due_plan(froms)
    numbered = sql
    for n in range(1, sql.count("%s") + 1):
        numbered = numbered.replace("%s", f"${n}", 1)
    stamp = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        cursor.execute(f"PREPARE due_claim AS {numbered}")
        cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        cursor.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE due_claim(%s, 16, 'sending', %s, %s)",
            [stamp(later), stamp(later + timedelta(minutes=1)), stamp(later)],
        )
        (result,) = cursor.fetchone()
        cursor.execute("DEALLOCATE due_claim")
    nodes = plan_nodes(result[0]["Plan"])
    due = [n for n in nodes if n.get("Index Name") == "purchase_due"]
    assert [n["Actual Rows"] for n in due] == [16]
    assert [n["Node Type"] for n in nodes if n["Node Type"] == "Sort"] == []
    # The purchases are reached by their key; the merchants (100) may be read whole.
    purchases = [n for n in nodes if n.get("Relation Name") == "cashback_purchase"]
    assert {n["Node Type"] for n in purchases} == {"Index Scan", "ModifyTable"}
    assert Purchase.objects.filter(status="sending").count() == 16
