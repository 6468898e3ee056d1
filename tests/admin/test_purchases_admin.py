"""Purchases in admin: read-only, `unknown` first, constant queries, reconciliation actions."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.models import AuditEvent
from cashback.models import Purchase, PurchaseAction, Status
from tests.admin.conftest import make_purchase, messages_of

LIST = "/admin/cashback/purchase/"
UNIT = "kYbc5KGKB/KnjynYePEF4cpumKmOz22xVKSVWbmtZ0M="


def _act(client: Client, action: str, *purchases: Purchase, **fields: Any) -> Any:
    data = {"action": action, "_selected_action": [str(p.pk) for p in purchases], **fields}
    if "apply" not in fields:
        data["index"] = "0"
    return client.post(LIST, data)


def test_unknown_purchases_are_listed_first(admin_client: Client, shop: Any) -> None:
    now = timezone.now()
    make_purchase(shop.merchant, "old-unknown", created_at=now - timedelta(days=2))
    make_purchase(shop.merchant, "new-sent", status=Status.SENT, created_at=now)
    make_purchase(
        shop.merchant, "mid-pending", status=Status.PENDING, created_at=now - timedelta(days=1)
    )

    page = admin_client.get(LIST)

    assert page.status_code == 200
    assert [p.order_id for p in page.context["cl"].result_list] == [
        "old-unknown",
        "new-sent",
        "mid-pending",
    ]


def test_the_list_shows_amounts_percentages_and_cashback(admin_client: Client, shop: Any) -> None:
    make_purchase(
        shop.merchant,
        "A-1",
        status=Status.SENT,
        currency="GBYTE",
        amount_minor=1_500_000_000,
        requested_percentage="5",
        percentage="0",
        cashback_amount=101_318,
        unit=UNIT,
    )

    html = admin_client.get(LIST).content.decode()

    assert '1.500000000\u00a0<span class="cur">GBYTE</span>' in html
    assert "5.00 % / 0.00 %" in html
    assert '101,318\u00a0<span class="cur">bytes</span>' in html
    assert '(0.000101318\u00a0<span class="cur">GBYTE</span>)' in html


def test_a_page_of_100_purchases_costs_the_same_queries_as_5(
    admin_client: Client, make_merchant: Any, django_assert_max_num_queries: Any
) -> None:
    merchants = [make_merchant().merchant for _ in range(5)]

    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            page = admin_client.get(LIST)
        assert page.status_code == 200
        return len(queries)

    Purchase.objects.bulk_create([_row(merchants[i % 5], f"F-{i}") for i in range(5)])
    five = count()
    Purchase.objects.bulk_create([_row(merchants[i % 5], f"H-{i}") for i in range(95)])

    with django_assert_max_num_queries(five):
        page = admin_client.get(LIST)
    assert len(page.context["cl"].result_list) == 100
    assert count() == five


def _row(merchant: Any, order_id: str) -> Purchase:
    return Purchase(
        merchant=merchant,
        order_id=order_id,
        customer="c",
        address="x@example.com",
        currency="USD",
        amount_minor=100,
        requested_percentage=0,
        percentage=0,
        status=Status.SENT,
    )


def test_purchases_cannot_be_added_changed_or_deleted(admin_client: Client, shop: Any) -> None:
    purchase = make_purchase(shop.merchant, "A-1")
    change = f"{LIST}{purchase.pk}/change/"

    assert admin_client.get(change).status_code == 200
    assert admin_client.get(f"{LIST}add/").status_code == 403
    assert admin_client.post(change, {"customer": "someone else"}).status_code == 403
    assert admin_client.get(f"{LIST}{purchase.pk}/delete/").status_code == 403
    purchase.refresh_from_db()
    assert purchase.customer == "c-42"


def test_retry_now_sends_an_unknown_purchase_and_is_recorded(
    admin_client: Client, superuser: Any, shop: Any, upstream: Any
) -> None:
    purchase = make_purchase(shop.merchant, "A-1")

    response = _act(admin_client, "retry_now", purchase)

    assert response.status_code == 302
    purchase.refresh_from_db()
    assert purchase.status == Status.SENT
    assert purchase.cashback_amount == 68_750_000
    assert purchase.attempts == 2
    assert upstream.state.sent_count(shop.merchant.public_id, "A-1") == 1
    action = PurchaseAction.objects.get(purchase=purchase)
    assert (action.user, action.action, action.status_before, action.status_after) == (
        superuser,
        "retry",
        "unknown",
        "pending",
    )
    event = AuditEvent.objects.get(action="retry")
    assert (event.actor, event.object_type, event.object_id) == (
        superuser,
        "cashback.purchase",
        str(purchase.pk),
    )
    # The audit log and the message repeat the action log's change; the send's result follows.
    assert event.changes == {"status": ["unknown", "pending"]}
    page = admin_client.get(LIST)
    assert (
        "A-1: retry done; status unknown → pending. The attempt that followed left it sent."
        in messages_of(page)
    )
    # The attempts log is on the purchase's page.
    detail = admin_client.get(f"{LIST}{purchase.pk}/change/").content.decode()
    assert "upstream attempts" in detail.lower()


def test_mark_sent_asks_for_amount_and_unit_then_records_it(
    admin_client: Client, superuser: Any, shop: Any
) -> None:
    purchase = make_purchase(shop.merchant, "A-1")

    form_page = _act(admin_client, "mark_sent", purchase)
    assert form_page.status_code == 200
    assert [p for p, _ in form_page.context["purchases"]] == [purchase]

    bad = _act(admin_client, "mark_sent", purchase, apply="1", cashback_amount="5", unit="x" * 44)
    assert bad.status_code == 200
    assert bad.context["form"].errors["unit"] == ["Enter the 44-character base64 id of the unit."]

    done = _act(
        admin_client,
        "mark_sent",
        purchase,
        apply="1",
        cashback_amount="101318",
        unit=UNIT,
        note="seen in explorer",
    )

    assert done.status_code == 302
    purchase.refresh_from_db()
    assert (purchase.status, purchase.cashback_amount, purchase.unit) == ("sent", 101_318, UNIT)
    action = PurchaseAction.objects.get(purchase=purchase)
    assert (action.user, action.action, action.status_before, action.status_after, action.note) == (
        superuser,
        "mark_sent",
        "unknown",
        "sent",
        "seen in explorer",
    )
    assert AuditEvent.objects.get(action="mark_sent").changes == {
        "cashback_amount": [None, 101_318],
        "status": ["unknown", "sent"],
        "unit": [None, UNIT],
    }

    # A purchase already sent cannot be resolved again: the service's message is shown.
    again = _act(admin_client, "mark_sent", purchase, apply="1", cashback_amount="1", unit=UNIT)
    assert again.status_code == 302
    assert (
        "A-1: Only unknown or pending purchases can be resolved by hand, not sent."
        in messages_of(admin_client.get(LIST))
    )
    assert PurchaseAction.objects.count() == 1


def test_mark_rejected_asks_for_the_error_then_records_it(
    admin_client: Client, superuser: Any, shop: Any
) -> None:
    first = make_purchase(shop.merchant, "A-1")
    second = make_purchase(shop.merchant, "A-2", status=Status.PENDING)

    assert _act(admin_client, "mark_rejected", first, second).status_code == 200
    done = _act(
        admin_client, "mark_rejected", first, second, apply="1", error="no such order upstream"
    )

    assert done.status_code == 302
    for purchase, before in ((first, "unknown"), (second, "pending")):
        purchase.refresh_from_db()
        assert (purchase.status, purchase.error) == ("rejected", "no such order upstream")
        action = PurchaseAction.objects.get(purchase=purchase)
        assert (action.user, action.status_before, action.status_after) == (
            superuser,
            before,
            "rejected",
        )
        assert AuditEvent.objects.get(
            action="mark_rejected", object_id=str(purchase.pk)
        ).changes == {
            "error": [None, "no such order upstream"],
            "status": [before, "rejected"],
        }
