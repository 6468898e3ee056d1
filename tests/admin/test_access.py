"""Who may do what in admin, every page renders, banners, and no secret on any page."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from audit.models import AuditEvent
from audit.services import record
from cashback.models import Alert, Attempt, Purchase, PurchaseAction, Status, WebhookDelivery
from merchants import services as ledger
from merchants.models import ApiKey, Balance, LedgerEntry
from tests.admin.conftest import change_form_data, make_purchase

SANDBOX_BANNER = "SANDBOX: purchases go to the local sandbox upstream, no real cashback is paid."


@pytest.fixture
def world(shop: Any, superuser: Any) -> dict[str, Any]:
    """One row of every model admin shows, with a webhook secret and a raw key to look for."""
    merchant = shop.merchant
    merchant.webhook_url = "https://hooks.example.com/cb"
    merchant.rotate_webhook_secret()
    merchant.save()
    entry = ledger.record_entry(merchant, "deposit", Decimal("10.00"), "USD", user=superuser)
    purchase = make_purchase(merchant, "A-1")
    attempt = Attempt.objects.create(
        purchase=purchase,
        number=1,
        started_at=timezone.now(),
        duration_ms=12,
        http_status=500,
        outcome="ambiguous",
        error="HTTP 500",
    )
    action = PurchaseAction.objects.create(
        purchase=purchase,
        user=superuser,
        action="retry",
        status_before="unknown",
        status_after="pending",
    )
    delivery = WebhookDelivery.objects.create(
        purchase=purchase,
        merchant=merchant,
        event="purchase.sent",
        payload={"order_id": "A-1"},
        next_attempt_at=timezone.now(),
    )
    now = timezone.now()
    alert = Alert.objects.create(
        kind=Alert.Kind.AUTH_FAILED, message="check the partner key", first_seen=now, last_seen=now
    )
    event = record(superuser, "change", merchant, {"name": ["a", "b"]})
    return {
        "merchants/merchant": merchant,
        "merchants/apikey": ApiKey.objects.get(merchant=merchant),
        "merchants/balance": Balance.objects.get(merchant=merchant),
        "merchants/ledgerentry": entry,
        "cashback/purchase": purchase,
        "cashback/attempt": attempt,
        "cashback/purchaseaction": action,
        "cashback/webhookdelivery": delivery,
        "cashback/alert": alert,
        "audit/auditevent": event,
        "raw_key": shop.key,
        "webhook_secret": merchant.webhook_secret,
    }


MODELS = [
    "merchants/merchant",
    "merchants/apikey",
    "merchants/balance",
    "merchants/ledgerentry",
    "cashback/purchase",
    "cashback/attempt",
    "cashback/purchaseaction",
    "cashback/webhookdelivery",
    "cashback/alert",
    "audit/auditevent",
]


def test_every_admin_page_renders_for_a_superuser_without_any_secret(
    admin_client: Client, world: dict[str, Any], settings: Any
) -> None:
    secrets = [
        world["raw_key"],
        world["merchants/apikey"].hashed_key,
        world["webhook_secret"],
        settings.CASHBACK_PARTNER_KEY,
    ]
    urls = ["/admin/", "/admin/merchants/merchant/add/", "/admin/merchants/ledgerentry/add/"]
    for model in MODELS:
        urls += [f"/admin/{model}/", f"/admin/{model}/{world[model].pk}/change/"]
    urls.append(f"/admin/merchants/merchant/{world['merchants/merchant'].pk}/record-entry/")

    for url in urls:
        response = admin_client.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        for secret in secrets:
            assert secret not in html, (url, secret[:6])
        assert SANDBOX_BANNER in html, url
        assert "ALERT: Upstream refused the partner credentials" in html, url


def test_the_sandbox_banner_is_absent_when_sandbox_mode_is_off(
    admin_client: Client, settings: Any
) -> None:
    settings.CASHBACK_SANDBOX = False

    html = admin_client.get("/admin/").content.decode()

    assert "SANDBOX:" not in html
    assert "ALERT:" not in html


def test_the_alert_banner_costs_one_query_and_goes_away_when_resolved(
    admin_client: Client, superuser: Any, django_assert_num_queries: Any
) -> None:
    now = timezone.now()
    alert = Alert.objects.create(
        kind=Alert.Kind.AUTH_FAILED, message="check the partner key", first_seen=now, last_seen=now
    )
    admin_client.get("/admin/")  # the session's first request may cost more
    # session, user, app list permissions, alerts, the workers' heartbeats, and the index's
    # needs-attention counts
    with django_assert_num_queries(6):
        assert "ALERT:" in admin_client.get("/admin/").content.decode()

    response = admin_client.post(
        "/admin/cashback/alert/",
        {"action": "resolve", "_selected_action": [alert.pk], "index": 0},
        follow=True,
    )

    assert "1 alert(s) resolved." in response.content.decode()
    alert.refresh_from_db()
    assert alert.resolved_at is not None
    assert "ALERT:" not in admin_client.get("/admin/").content.decode()
    assert AuditEvent.objects.get(action="resolve_alert").actor == superuser


def test_an_accountant_can_view_but_not_change_anything(
    accountant_client: Client, world: dict[str, Any]
) -> None:
    merchant, purchase = world["merchants/merchant"], world["cashback/purchase"]
    entry = world["merchants/ledgerentry"]
    for url in [
        "/admin/merchants/merchant/",
        f"/admin/merchants/merchant/{merchant.pk}/change/",
        "/admin/merchants/ledgerentry/",
        f"/admin/merchants/ledgerentry/{entry.pk}/change/",
        "/admin/merchants/balance/",
        "/admin/cashback/purchase/",
        f"/admin/cashback/purchase/{purchase.pk}/change/",
        "/admin/cashback/webhookdelivery/",
        "/admin/cashback/attempt/",
    ]:
        assert accountant_client.get(url).status_code == 200, url
    for url in [
        "/admin/merchants/merchant/add/",
        f"/admin/merchants/merchant/{merchant.pk}/delete/",
        "/admin/merchants/ledgerentry/add/",
        f"/admin/merchants/merchant/{merchant.pk}/record-entry/",
        "/admin/merchants/apikey/",
        "/admin/audit/auditevent/",
    ]:
        assert accountant_client.get(url).status_code == 403, url

    page = accountant_client.get(f"/admin/merchants/merchant/{merchant.pk}/change/")
    data = change_form_data(page)
    data["default_percentage"] = "5"
    assert (
        accountant_client.post(f"/admin/merchants/merchant/{merchant.pk}/change/", data).status_code
        == 403
    )
    assert (
        accountant_client.post(
            f"/admin/merchants/merchant/{merchant.pk}/record-entry/",
            {"kind": "deposit", "amount": "1.00", "currency": "USD"},
        ).status_code
        == 403
    )
    assert world["raw_key"] not in page.content.decode()
    assert "API key" not in page.content.decode()  # keys are not the accountant's business

    for action in ("retry_now", "mark_rejected"):
        response = accountant_client.post(
            "/admin/cashback/purchase/",
            {"action": action, "_selected_action": [str(purchase.pk)], "index": "0"},
        )
        # No action is offered to an accountant, so the list is shown again and nothing runs.
        assert response.status_code == 200
        assert response.context["action_form"] is None
    purchase.refresh_from_db()
    merchant.refresh_from_db()
    assert purchase.status == Status.UNKNOWN
    assert PurchaseAction.objects.filter(action="mark_rejected").count() == 0
    assert merchant.default_percentage == Decimal("0.00")
    assert LedgerEntry.objects.count() == 1
    # Only the fixture's: its change and its deposit (the merchant's creation is "system"'s).
    assert sorted(
        AuditEvent.objects.exclude(actor_name="system").values_list("action", flat=True)
    ) == [
        "change",
        "record_entry",
    ]


def test_a_non_staff_user_is_sent_to_the_login_page(django_user_model: Any, shop: Any) -> None:
    user = django_user_model.objects.create_user("shopper", password="pw-shopper-123")
    client = Client()
    client.force_login(user)

    response = client.get("/admin/cashback/purchase/")

    assert response.status_code == 302
    assert response["Location"] == "/admin/login/?next=/admin/cashback/purchase/"
    login = Client().get("/admin/login/")
    assert login.status_code == 200
    assert SANDBOX_BANNER in login.content.decode()


def test_redeliver_queues_a_failed_webhook_again(
    admin_client: Client, superuser: Any, world: dict[str, Any]
) -> None:
    delivery = world["cashback/webhookdelivery"]
    WebhookDelivery.objects.filter(pk=delivery.pk).update(state="failed")

    response = admin_client.post(
        "/admin/cashback/webhookdelivery/",
        {"action": "redeliver", "_selected_action": [delivery.pk], "index": 0},
    )

    assert response.status_code == 302
    delivery.refresh_from_db()
    assert delivery.state == "pending"
    assert AuditEvent.objects.get(action="redeliver").changes == {"state": ["failed", "pending"]}


def test_the_audit_log_exports_as_csv(admin_client: Client, superuser: Any, shop: Any) -> None:
    merchant = shop.merchant
    first = record(superuser, "change", merchant, {"default_percentage": ["1.50", "2.50"]})
    second = record(superuser, "change", merchant, {"name": ["=cmd()", "Shop"]})

    response = admin_client.post(
        "/admin/audit/auditevent/",
        {"action": "export_csv", "_selected_action": [first.pk, second.pk], "index": 0},
    )

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="audit-')
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows == [
        ["at", "actor", "action", "object_type", "object_id", "object", "field", "before", "after"],
        [
            first.at.isoformat(),
            "root",
            "change",
            "merchants.merchant",
            str(merchant.pk),
            str(merchant),
            "default_percentage",
            "1.50",
            "2.50",
        ],
        [
            second.at.isoformat(),
            "root",
            "change",
            "merchants.merchant",
            str(merchant.pk),
            str(merchant),
            "name",
            "'=cmd()",
            "Shop",
        ],
    ]


def test_audit_events_cannot_be_changed_or_deleted(
    admin_client: Client, superuser: Any, shop: Any
) -> None:
    event = record(superuser, "change", shop.merchant, {"name": ["a", "b"]})

    assert (
        admin_client.post(
            f"/admin/audit/auditevent/{event.pk}/change/", {"action": "x"}
        ).status_code
        == 403
    )
    assert admin_client.get(f"/admin/audit/auditevent/{event.pk}/delete/").status_code == 403
    with pytest.raises(TypeError, match="append-only"):
        event.save()
    assert AuditEvent.objects.exclude(actor_name="system").get().action == "change"
    assert Purchase.objects.count() == 0
