"""The back office's defects, one test (or more) each, and the reconcile flow."""

from __future__ import annotations

import logging
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from audit.models import AuditEvent
from cashback.models import Attempt, Purchase, PurchaseAction, Status, WebhookDelivery
from gateway.money import format_money
from merchants import services as ledger
from merchants.models import Balance
from tests.admin.conftest import change_form_data, make_purchase, messages_of

UNIT = "kYbc5KGKB/KnjynYePEF4cpumKmOz22xVKSVWbmtZ0M="
PURCHASES = "/admin/cashback/purchase/"


def page(client: Client, url: str, status: int = 200) -> str:
    response = client.get(url)
    assert response.status_code == status, url
    return response.content.decode()


def _attempt(purchase: Purchase, number: int, outcome: str, **fields: Any) -> Attempt:
    return Attempt.objects.create(
        purchase=purchase,
        number=number,
        started_at=timezone.now(),
        duration_ms=40,
        outcome=outcome,
        **fields,
    )


# --- Numbers read like money ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (Decimal("0E-8"), "BTC", "0.00000000"),
        (Decimal("0E-9"), "GBYTE", "0.000000000"),
        (Decimal("7499950000"), "EUR", "7,499,950,000.00"),
        (Decimal("-1234.5"), "USD", "-1,234.50"),
        (Decimal("0.00000630"), "BTC", "0.00000630"),
        (1250, "EUR", "1,250.00"),
    ],
)
def test_the_one_formatter_never_writes_an_exponent(
    amount: Decimal, currency: str, text: str
) -> None:
    assert format_money(amount, currency) == text
    assert format_money(749_995_000, "EUR", minor=True) == "7,499,950.00"


def test_zero_amounts_are_plain_on_every_page_that_shows_them(
    admin_client: Client, shop: Any
) -> None:
    merchant = shop.merchant
    ledger.record_entry(merchant, "deposit", Decimal("0.00099370"), "BTC")
    ledger.record_entry(merchant, "deposit", Decimal("1"), "GBYTE")
    purchase = make_purchase(merchant, "Z-1", currency="GBYTE", amount_minor=10**9)
    balance = Balance.objects.get(merchant=merchant, currency="BTC")

    for url in (
        "/admin/merchants/merchant/",
        f"/admin/merchants/merchant/{merchant.pk}/change/",
        f"{PURCHASES}{purchase.pk}/change/",
        "/admin/merchants/balance/",
        f"/admin/merchants/balance/{balance.pk}/change/",
        "/admin/merchants/ledgerentry/",
        f"/admin/merchants/merchant/{merchant.pk}/record-entry/",
        "/admin/payouts/",
    ):
        html = page(admin_client, url)
        assert "E-" not in html.replace("E-mail", ""), url
    merchant_page = page(admin_client, f"/admin/merchants/merchant/{merchant.pk}/change/")
    assert '0.00099370 / 0.00000000\u00a0<span class="cur">BTC</span>' in merchant_page
    purchase_page = page(admin_client, f"{PURCHASES}{purchase.pk}/change/")
    assert '0.000000000\u00a0<span class="cur">GBYTE</span>' in purchase_page


def test_a_balance_update_moves_its_updated_at(shop: Any) -> None:
    ledger.record_entry(shop.merchant, "deposit", Decimal("5.00"), "USD")
    balance = Balance.objects.get(merchant=shop.merchant, currency="USD")
    earlier = timezone.now() - timedelta(days=3)
    Balance.objects.filter(pk=balance.pk).update(updated_at=earlier)

    ledger.record_entry(shop.merchant, "withdrawal", Decimal("1.00"), "USD")

    balance.refresh_from_db()
    assert balance.available_minor == 400
    assert balance.updated_at > earlier + timedelta(days=2)


# --- Roles and error pages ------------------------------------------------------------------


def test_an_accountant_gets_no_resolve_link_and_a_styled_403(
    accountant_client: Client, admin_client: Client, shop: Any
) -> None:
    from cashback.models import Alert

    now = timezone.now()
    Alert.objects.create(
        kind=Alert.Kind.AUTH_FAILED, message="check the key", first_seen=now, last_seen=now
    )

    assert ">resolve</a>" not in page(accountant_client, "/admin/")
    assert ">resolve</a>" in page(admin_client, "/admin/")
    purchase = make_purchase(shop.merchant, "R-1")
    for url in (f"{PURCHASES}{purchase.pk}/retry/", f"{PURCHASES}{purchase.pk}/mark-sent/"):
        refused = page(accountant_client, url, 403)
        assert "You may not do this" in refused
        assert "admin/css/base.css" in refused and "Cashback gateway admin" in refused


def test_an_expected_403_logs_one_line_without_a_traceback(
    accountant_client: Client, shop: Any, caplog: Any
) -> None:
    purchase = make_purchase(shop.merchant, "R-1")
    with caplog.at_level(logging.WARNING, logger="django.request"):
        accountant_client.get(f"{PURCHASES}{purchase.pk}/retry/")
        accountant_client.get("/admin/cashback/purchase/999999/mark-sent/")

    records = [r for r in caplog.records if r.name == "django.request"]
    assert [r.status_code for r in records] == [403, 403]  # type: ignore[attr-defined]
    # The filter runs in the handler chain of the logger: its records carry no traceback.
    assert all(r.exc_info is None and r.exc_text is None for r in records)


def test_no_view_site_link_a_favicon_and_help_texts_without_backticks(
    admin_client: Client, shop: Any, client: Client
) -> None:
    index = page(admin_client, "/admin/")
    assert "View site" not in index
    assert 'rel="icon"' in index
    icon = client.get("/favicon.ico")
    assert icon.status_code == 301 and icon["Location"].endswith("backoffice/favicon.svg")
    merchant_page = page(admin_client, f"/admin/merchants/merchant/{shop.merchant.pk}/change/")
    assert "`" not in merchant_page.split("<body", 1)[1]


# --- Merchants ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_percentage", "101", "Enter a percentage from 0 to 100."),
        ("default_percentage", "-1", "Enter a percentage from 0 to 100."),
    ],
)
def test_percentages_out_of_range_are_field_errors_for_people(
    admin_client: Client, shop: Any, field: str, value: str, message: str
) -> None:
    url = f"/admin/merchants/merchant/{shop.merchant.pk}/change/"
    data = change_form_data(admin_client.get(url))
    data[field] = value

    response = admin_client.post(url, data)

    assert response.status_code == 200
    assert response.context["adminform"].form.errors[field] == [message]
    assert "merchant_percentages_in_range" not in response.content.decode()


def test_percentages_read_the_same_everywhere(admin_client: Client, make_merchant: Any) -> None:
    shop = make_merchant(percentage="1.5", max_percentage="10")
    make_purchase(shop.merchant, "P-1", requested_percentage="1.5", percentage="1")

    assert "1.50 % / 10.00 %" in page(admin_client, "/admin/merchants/merchant/")
    assert "1.50 % / 1.00 %" in page(admin_client, PURCHASES)
    change = page(admin_client, f"/admin/merchants/merchant/{shop.merchant.pk}/change/")
    assert 'name="default_percentage" value="1.50"' in change


def test_a_merchant_offers_no_delete_and_its_history_shows_deposits(
    admin_client: Client, superuser: Any, shop: Any
) -> None:
    merchant = shop.merchant
    # A deposit recorded outside admin (the record_deposit command's path): no audit event.
    ledger.record_entry(merchant, "deposit", Decimal("25.00"), "EUR", memo="wire 7")

    change = page(admin_client, f"/admin/merchants/merchant/{merchant.pk}/change/")
    assert "deletelink" not in change
    assert admin_client.get(f"/admin/merchants/merchant/{merchant.pk}/delete/").status_code == 403
    listing = admin_client.get("/admin/merchants/merchant/")
    assert "delete_selected" not in dict(
        listing.context["cl"].model_admin.get_actions(listing.wsgi_request)
    )
    history = page(admin_client, f"/admin/merchants/merchant/{merchant.pk}/history/")
    assert "ledger: deposit" in history
    assert "25.00 EUR — wire 7" in history


# --- Purchases ------------------------------------------------------------------------------


def test_titles_name_order_ids_and_merchants_never_internal_ids(
    admin_client: Client, shop: Any
) -> None:
    purchase = make_purchase(shop.merchant, "A-1007")
    delivery = WebhookDelivery.objects.create(
        purchase=purchase,
        merchant=shop.merchant,
        event="purchase.rejected",
        payload={"order_id": "A-1007", "status": "rejected"},
        next_attempt_at=timezone.now(),
    )

    assert str(purchase) == "A-1007 of shop-1"
    assert str(delivery) == "purchase.rejected for A-1007"
    html = page(admin_client, f"{PURCHASES}{purchase.pk}/change/")
    assert "<title>Purchase A-1007 of shop-1 |" in html
    hook = page(admin_client, f"/admin/cashback/webhookdelivery/{delivery.pk}/change/")
    assert "Webhook purchase.rejected for A-1007" in hook
    assert f"({shop.merchant.pk})" not in html


def test_history_of_a_purchase_shows_mark_sent(admin_client: Client, shop: Any) -> None:
    purchase = make_purchase(shop.merchant, "H-1")
    admin_client.post(
        f"{PURCHASES}{purchase.pk}/mark-sent/",
        {"action": "mark_sent", "cashback_amount": "500", "unit": UNIT, "note": "explorer"},
    )

    history = page(admin_client, f"{PURCHASES}{purchase.pk}/history/")
    assert "mark_sent H-1 of shop-1" in history
    assert "status: unknown → sent" in history


def test_mark_sent_puts_each_error_under_its_field_and_shows_the_upstream_error(
    admin_client: Client, shop: Any
) -> None:
    purchase = make_purchase(shop.merchant, "M-1", error="HTTP 502 from upstream")
    url = f"{PURCHASES}{purchase.pk}/mark-sent/"

    response = admin_client.post(
        url, {"action": "mark_sent", "cashback_amount": "5", "unit": "x" * 44, "note": ""}
    )

    assert response.status_code == 200
    form = response.context["form"]
    assert list(form.fields) == ["cashback_amount", "unit", "note", "action", "select_across"]
    assert form.errors == {"unit": ["Enter the 44-character base64 id of the unit."]}
    html = response.content.decode()
    # The error follows the unit input, after the amount's row has ended.
    unit_row = html.index('field-unit"')
    assert html.index('id="errors-unit"') > html.index('name="unit"') > unit_row
    assert html.index('field-cashback_amount"') < unit_row
    assert 'id="purchase-error">HTTP 502 from upstream<' in html
    assert (
        html.index('name="cashback_amount"') < html.index('name="unit"') < html.index('name="note"')
    )


def test_reconcile_an_unknown_purchase_to_sent_with_the_amount_from_its_attempt(
    admin_client: Client, superuser: Any, shop: Any
) -> None:
    purchase = make_purchase(shop.merchant, "U-1", attempts=2)
    _attempt(purchase, 1, "ambiguous", http_status=504, error="timeout")
    ok = _attempt(
        purchase,
        2,
        "ok",
        http_status=200,
        response_excerpt='{"result":"ok","cashback_amount":68750000,"unit":"' + UNIT + '"}',
        cashback_amount="68750000",
        unit=UNIT,
        applied=False,
    )
    change = page(admin_client, f"{PURCHASES}{purchase.pk}/change/")
    assert 'id="button-retry"' in change and 'id="button-mark-sent"' in change

    # Retry's confirmation lists every attempt with upstream's answer and the risk.
    confirm = page(admin_client, f"{PURCHASES}{purchase.pk}/retry/")
    assert "timeout" in confirm and "68,750,000" in confirm
    assert "&quot;result&quot;:&quot;ok&quot;" in confirm
    assert "Upstream already answered OK to attempt 2" in confirm
    assert "pay\n    <strong>twice</strong>" in confirm

    form = admin_client.get(f"{PURCHASES}{purchase.pk}/mark-sent/")
    assert form.context["form"].initial["cashback_amount"] == 68_750_000
    assert form.context["form"].initial["unit"] == UNIT
    assert f"Pre-filled from attempt {ok.number}" in form.content.decode()

    done = admin_client.post(
        f"{PURCHASES}{purchase.pk}/mark-sent/",
        {"action": "mark_sent", "cashback_amount": "68750000", "unit": UNIT, "note": "seen"},
    )

    assert done.status_code == 302 and done["Location"] == f"{PURCHASES}{purchase.pk}/change/"
    purchase.refresh_from_db()
    assert (purchase.status, purchase.cashback_amount, purchase.unit) == ("sent", 68_750_000, UNIT)
    action = PurchaseAction.objects.get(purchase=purchase)
    event = AuditEvent.objects.get(action="mark_sent")
    assert (
        [action.status_before, action.status_after]
        == event.changes["status"]
        == [
            "unknown",
            "sent",
        ]
    )
    assert "U-1: mark sent done; status unknown → sent." in messages_of(
        admin_client.get(done["Location"])
    )
    # No buttons once it is final.
    final = page(admin_client, f"{PURCHASES}{purchase.pk}/change/")
    assert 'id="button-mark-sent"' not in final and 'id="button-retry"' not in final


def test_retry_from_the_page_asks_first_and_records_one_agreeing_change(
    admin_client: Client, shop: Any, upstream: Any
) -> None:
    purchase = make_purchase(shop.merchant, "T-1")

    assert admin_client.post(f"{PURCHASES}{purchase.pk}/retry/", {}).status_code == 200
    assert upstream.state.sent_count(shop.merchant.public_id, "T-1") == 0
    done = admin_client.post(f"{PURCHASES}{purchase.pk}/retry/", {"confirm": "1"})

    assert done.status_code == 302
    purchase.refresh_from_db()
    assert purchase.status == Status.SENT
    action = PurchaseAction.objects.get(purchase=purchase)
    assert AuditEvent.objects.get(action="retry").changes == {
        "status": [action.status_before, action.status_after]
    }


def test_purchase_search_and_totals_per_currency(admin_client: Client, shop: Any) -> None:
    make_purchase(shop.merchant, "S-1", customer="alice@example.com", amount_minor=123_456_789)
    make_purchase(shop.merchant, "S-2", description="blue shoes", amount_minor=1)
    make_purchase(shop.merchant, "S-3", currency="BTC", amount_minor=630)

    for term, ids in (
        ("alice", ["S-1"]),
        ("shoes", ["S-2"]),
        (shop.merchant.public_id, ["S-1", "S-2", "S-3"]),
    ):
        response = admin_client.get(PURCHASES, {"q": term})
        assert sorted(p.order_id for p in response.context["cl"].result_list) == ids, term
    html = page(admin_client, PURCHASES)
    assert '1,234,567.90\u00a0<span class="cur">EUR</span>' in html
    assert '0.00000630\u00a0<span class="cur">BTC</span>' in html


def test_api_keys_filter_by_active_revoked_and_expired(admin_client: Client, shop: Any) -> None:
    from merchants.models import ApiKey

    ApiKey.issue(shop.merchant, name="old", expires_at=timezone.now() - timedelta(days=1))
    revoked, _ = ApiKey.issue(shop.merchant, name="gone")
    ApiKey.objects.filter(pk=revoked.pk).update(revoked_at=timezone.now())

    def names(state: str) -> list[str]:
        response = admin_client.get("/admin/merchants/apikey/", {"state": state})
        return sorted(k.name for k in response.context["cl"].result_list)

    assert names("expired") == ["old"]
    assert names("revoked") == ["gone"]
    assert names("active") == sorted(
        k.name for k in ApiKey.objects.filter(revoked_at__isnull=True, expires_at__isnull=True)
    )


def test_the_ledger_shows_links_totals_and_the_balance_after_each_entry(
    admin_client: Client, shop: Any
) -> None:
    merchant = shop.merchant
    ledger.record_entry(merchant, "deposit", Decimal("10.00"), "USD")
    ledger.record_entry(merchant, "withdrawal", Decimal("2.50"), "USD")

    response = admin_client.get(
        "/admin/merchants/ledgerentry/", {"merchant__id__exact": merchant.pk}
    )

    rows = {e.amount_minor: e.running_available for e in response.context["cl"].result_list}
    assert rows == {1000: 1000, -250: 750}
    html = response.content.decode()
    assert '7.50\u00a0<span class="cur">USD</span>' in html
    assert 'id="ledger-totals"' in html


def test_a_webhook_delivery_shows_target_payload_and_a_redeliver_button(
    admin_client: Client, accountant_client: Client, shop: Any
) -> None:
    merchant = shop.merchant
    merchant.webhook_url = "https://hooks.example.com/cb"
    merchant.save()
    purchase = make_purchase(merchant, "W-1")
    delivery = WebhookDelivery.objects.create(
        purchase=purchase,
        merchant=merchant,
        event="purchase.sent",
        payload={"order_id": "W-1", "status": "sent"},
        next_attempt_at=timezone.now(),
        state=WebhookDelivery.State.FAILED,
        attempts=12,
        last_status=500,
        last_error="HTTP 500",
    )
    url = f"/admin/cashback/webhookdelivery/{delivery.pk}/change/"

    html = page(admin_client, url)
    assert "https://hooks.example.com/cb" in html
    assert '<pre class="payload">{\n  &quot;order_id&quot;: &quot;W-1&quot;,' in html
    assert 'id="button-redeliver"' in html
    assert 'id="button-redeliver"' not in page(accountant_client, url)

    done = admin_client.post(f"/admin/cashback/webhookdelivery/{delivery.pk}/redeliver/")

    assert done.status_code == 302
    delivery.refresh_from_db()
    assert delivery.state == WebhookDelivery.State.PENDING
    assert AuditEvent.objects.get(action="redeliver").changes == {"state": ["failed", "pending"]}
    assert (
        accountant_client.post(
            f"/admin/cashback/webhookdelivery/{delivery.pk}/redeliver/"
        ).status_code
        == 403
    )


def test_the_index_counts_unknown_apart_from_pending_with_their_age(
    admin_client: Client, accountant_client: Client, shop: Any
) -> None:
    now = timezone.now()
    make_purchase(shop.merchant, "U-1", created_at=now - timedelta(hours=3, minutes=5))
    make_purchase(shop.merchant, "U-2", created_at=now - timedelta(minutes=2))
    make_purchase(shop.merchant, "P-1", status=Status.PENDING, created_at=now - timedelta(days=2))
    make_purchase(shop.merchant, "S-1", status=Status.SENT)

    for client in (admin_client, accountant_client):
        html = page(client, "/admin/")
        box = html[html.index('id="needs-attention"') :]
        unknown = box[box.index('data-status="unknown"') : box.index('data-status="pending"')]
        pending = box[box.index('data-status="pending"') : box.index("</table>")]
        assert 'status__exact=unknown&amp;o=8">2</a>' in unknown
        assert "oldest 3 h 5 min old" in unknown
        assert 'status__exact=pending&amp;o=8">1</a>' in pending
        assert "oldest 2 d 0 h old" in pending
    listing = admin_client.get(PURCHASES, {"status__exact": "unknown", "o": "8"})
    assert [p.order_id for p in listing.context["cl"].result_list] == ["U-1", "U-2"]


@pytest.mark.parametrize("suffix", ["retry", "mark-sent", "mark-rejected"])
def test_a_reconcile_page_of_no_purchase_is_a_404_not_a_500(
    admin_client: Client, suffix: str
) -> None:
    for pk in ("999999", "3f2504e0-4f89-11d3-9a0c-0305e82c3301"):
        html = page(admin_client, f"{PURCHASES}{pk}/{suffix}/", 404)
        assert "Page not found" in html and "admin/css/base.css" in html
