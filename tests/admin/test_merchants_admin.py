"""Merchants in admin: ledger entries, API keys, webhook secrets, balances and the audit log."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from audit.models import AuditEvent
from cashback.models import Purchase
from merchants import services as ledger
from merchants.forms import ApiKeyIssueForm, ApiKeyRevokeForm
from merchants.models import ApiKey, Balance, LedgerEntry, Merchant
from tests.admin.conftest import (
    RAW_KEY,
    change_form_data,
    inline_prefix,
    make_purchase,
    messages_of,
)


def _change_url(merchant: Merchant) -> str:
    return f"/admin/merchants/merchant/{merchant.pk}/change/"


def _balance_status(key: str) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client.get("/api/v1/balance").status_code


def test_a_deposit_recorded_in_admin_names_the_admin_and_moves_the_balance(
    admin_client: Client, superuser: Any, shop: Any
) -> None:
    url = f"/admin/merchants/merchant/{shop.merchant.pk}/record-entry/"
    assert admin_client.get(url).status_code == 200

    form = {"kind": "deposit", "amount": "10.00", "currency": "USD", "memo": "wire 42"}
    # Entries are permanent: the first post repeats amount, currency and merchant.
    review = admin_client.post(url, form)
    assert review.status_code == 200
    assert review.context["confirm"]["merchant"] == shop.merchant
    html = review.content.decode()
    assert "Record this entry? It is permanent." in html
    assert '10.00\u00a0<span class="cur">USD</span>' in html
    assert not LedgerEntry.objects.exists()

    response = admin_client.post(url, {**form, "confirm": "1"})

    assert response.status_code == 302
    assert response["Location"] == _change_url(shop.merchant)
    entry = LedgerEntry.objects.get(merchant=shop.merchant)
    assert (entry.kind, entry.amount_minor, entry.currency, entry.memo) == (
        "deposit",
        1000,
        "USD",
        "wire 42",
    )
    assert entry.created_by == superuser
    balance = Balance.objects.get(merchant=shop.merchant, currency="USD")
    assert (balance.available_minor, balance.reserved_minor) == (1000, 0)
    event = AuditEvent.objects.get(action="record_entry")
    assert event.actor == superuser
    assert event.object_type == "merchants.ledgerentry"
    assert event.object_id == str(entry.pk)
    assert event.changes == {
        "amount": [None, "10.00"],
        "currency": [None, "USD"],
        "kind": [None, "deposit"],
        "memo": [None, "wire 42"],
        "merchant": [None, shop.merchant.public_id],
    }
    page = admin_client.get(response["Location"])
    assert "Recorded deposit of 10.00 USD for shop-1." in messages_of(page)


def test_a_withdrawal_beyond_the_balance_is_a_form_error_and_records_nothing(
    admin_client: Client, shop: Any
) -> None:
    ledger.record_entry(shop.merchant, "deposit", Decimal("5.00"), "USD")
    url = f"/admin/merchants/merchant/{shop.merchant.pk}/record-entry/"

    response = admin_client.post(
        url, {"kind": "withdrawal", "amount": "5.01", "currency": "USD", "memo": "", "confirm": "1"}
    )

    assert response.status_code == 200
    assert response.context["form"].non_field_errors() == [
        "Available balance is 5.00 USD; it cannot go below zero."
    ]
    assert LedgerEntry.objects.count() == 1
    # Only the fixture's own writes (by "system") are in the log.
    assert not AuditEvent.objects.exclude(actor_name="system").exists()


def test_the_ledger_add_form_offers_only_manual_kinds(admin_client: Client, shop: Any) -> None:
    page = admin_client.get("/admin/merchants/ledgerentry/add/")
    assert page.status_code == 200
    assert [value for value, _ in page.context["form"].fields["kind"].choices] == [
        "deposit",
        "withdrawal",
        "adjustment",
    ]

    response = admin_client.post(
        "/admin/merchants/ledgerentry/add/",
        {"merchant": shop.merchant.pk, "kind": "reservation", "amount": "1", "currency": "USD"},
    )

    assert response.status_code == 200
    assert response.context["form"].errors["kind"] == [
        "Select a valid choice. reservation is not one of the available choices."
    ]
    assert not LedgerEntry.objects.exists()

    ok = admin_client.post(
        "/admin/merchants/ledgerentry/add/",
        {
            "merchant": shop.merchant.pk,
            "kind": "adjustment",
            "amount": "0.000000001",
            "currency": "GBYTE",
            "confirm": "1",
        },
    )
    assert ok.status_code == 302
    assert ok["Location"] == "/admin/merchants/ledgerentry/"
    assert LedgerEntry.objects.get().amount_minor == 1


def test_a_ledger_entry_cannot_be_changed_or_deleted_even_by_a_superuser(
    admin_client: Client, shop: Any
) -> None:
    entry = ledger.record_entry(shop.merchant, "deposit", Decimal("5.00"), "USD")
    change = f"/admin/merchants/ledgerentry/{entry.pk}/change/"

    assert admin_client.get(change).status_code == 200  # shown read-only
    assert admin_client.post(change, {"memo": "edited"}).status_code == 403
    assert admin_client.get(f"/admin/merchants/ledgerentry/{entry.pk}/delete/").status_code == 403
    assert (
        admin_client.post(
            f"/admin/merchants/ledgerentry/{entry.pk}/delete/", {"post": "yes"}
        ).status_code
        == 403
    )
    bulk = admin_client.post(
        "/admin/merchants/ledgerentry/",
        {"action": "delete_selected", "_selected_action": [entry.pk], "index": 0},
    )
    assert bulk.status_code == 200  # no actions at all: the list is shown again
    assert "delete_selected" not in bulk.context["cl"].model_admin.get_actions(bulk.wsgi_request)
    entry.refresh_from_db()
    assert (entry.memo, LedgerEntry.objects.count()) == ("", 1)


def test_a_key_issued_in_admin_is_shown_once_authenticates_and_stops_when_revoked(
    admin_client: Client, superuser: Any, shop: Any
) -> None:
    url = _change_url(shop.merchant)
    page = admin_client.get(url)
    data = change_form_data(page)
    prefix = inline_prefix(page, ApiKeyIssueForm)
    data.update(
        {
            f"{prefix}-TOTAL_FORMS": "1",
            f"{prefix}-0-name": "till 2",
            f"{prefix}-0-expires_at_0": "",
            f"{prefix}-0-expires_at_1": "",
            f"{prefix}-0-merchant": str(shop.merchant.pk),
        }
    )

    response = admin_client.post(url, data, follow=True)

    assert response.status_code == 200
    shown = RAW_KEY.findall(response.content.decode())
    assert len(shown) == 1
    raw = shown[0]
    key = ApiKey.objects.get(merchant=shop.merchant, name="till 2")
    assert key.created_by == superuser
    assert raw.startswith(f"cbk_{key.prefix}")
    assert key.hashed_key not in response.content.decode()
    # Once: the next page does not show it again.
    again = admin_client.get(url)
    assert raw not in again.content.decode()
    assert RAW_KEY.findall(again.content.decode()) == []
    assert _balance_status(raw) == 200
    issued = AuditEvent.objects.exclude(actor_name="system").get(action="issue_key")
    assert issued.changes == {
        "expires_at": [None, None],
        "merchant": [None, shop.merchant.public_id],
        "name": [None, "till 2"],
    }
    assert raw not in str(issued.changes)

    # Revoke it with the box on its row.
    data = change_form_data(again)
    revoke_prefix = inline_prefix(again, ApiKeyRevokeForm)
    row = next(
        i
        for i, form in enumerate(
            next(
                inline.formset
                for inline in again.context["inline_admin_formsets"]
                if inline.formset.prefix == revoke_prefix
            ).forms
        )
        if form.instance.pk == key.pk
    )
    data[f"{revoke_prefix}-{row}-revoke"] = "on"
    revoked = admin_client.post(url, data, follow=True)

    assert revoked.status_code == 200
    assert f"API key {key} was revoked." in messages_of(revoked)
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert _balance_status(raw) == 401
    assert _balance_status(shop.key) == 200  # the other key still works
    assert AuditEvent.objects.get(action="revoke_key").object_id == str(key.pk)


def test_a_percentage_change_is_audited_with_old_and_new_values(
    admin_client: Client, superuser: Any, make_merchant: Any
) -> None:
    shop = make_merchant(percentage="1.5", max_percentage="10")
    url = _change_url(shop.merchant)
    data = change_form_data(admin_client.get(url))
    data["default_percentage"] = "2.5"

    response = admin_client.post(url, data)

    assert response.status_code == 302
    event = AuditEvent.objects.get(action="change", object_type="merchants.merchant")
    assert event.actor == superuser
    assert event.actor_name == "root"
    assert event.object_id == str(shop.merchant.pk)
    assert event.changes == {"default_percentage": ["1.50", "2.50"]}
    # An unchanged save records nothing.
    admin_client.post(url, change_form_data(admin_client.get(url)))
    assert AuditEvent.objects.filter(action="change").count() == 1


def test_a_default_above_the_maximum_is_a_form_error(admin_client: Client, shop: Any) -> None:
    url = _change_url(shop.merchant)
    data = change_form_data(admin_client.get(url))
    data["default_percentage"] = "11"

    response = admin_client.post(url, data)

    assert response.status_code == 200
    form = response.context["adminform"].form
    # A message for people on the field, never the database constraint's name.
    assert form.errors == {
        "default_percentage": ["The default (11.00 %) cannot be above the maximum (10.00 %)."]
    }
    assert "merchant_percentages_in_range" not in response.content.decode()
    shop.merchant.refresh_from_db()
    assert shop.merchant.default_percentage == Decimal("0.00")


def test_a_webhook_url_gets_a_secret_shown_once_and_rotation_shows_a_new_one(
    admin_client: Client, shop: Any, settings: Any
) -> None:
    url = _change_url(shop.merchant)
    data = change_form_data(admin_client.get(url))
    data["webhook_url"] = "http://127.0.0.1:9/hook"

    page = admin_client.post(url, data, follow=True)

    shop.merchant.refresh_from_db()
    first = shop.merchant.webhook_secret
    assert first.startswith("whsec_")
    # The secret is marked for the copy button (backoffice.js), inside the message.
    assert (
        "New webhook signing secret for shop-1: "
        f'<code class="one-time-secret">{first}</code>'
        " — copy it now; it will not be shown again." in messages_of(page)
    )
    html = page.content.decode()
    assert f'<code class="one-time-secret">{first}</code>' in html
    assert "backoffice/backoffice.js" in html
    assert first not in admin_client.get(url).content.decode()
    event = AuditEvent.objects.get(action="change")
    assert event.changes == {
        "webhook_secret": ["(secret)", "(secret), changed"],
        "webhook_url": ["", "http://127.0.0.1:9/hook"],
    }

    rotated = admin_client.post(
        "/admin/merchants/merchant/",
        {"action": "rotate_webhook_secret", "_selected_action": [shop.merchant.pk], "index": 0},
        follow=True,
    )

    shop.merchant.refresh_from_db()
    second = shop.merchant.webhook_secret
    assert second != first
    assert any(second in m for m in messages_of(rotated))
    assert first not in str(list(AuditEvent.objects.values_list("changes", flat=True)))
    assert second not in str(list(AuditEvent.objects.values_list("changes", flat=True)))

    # Outside development, a private address is refused.
    settings.WEBHOOK_ALLOW_PRIVATE = False
    data = change_form_data(admin_client.get(url))
    data["webhook_url"] = "https://127.0.0.1/hook"
    refused = admin_client.post(url, data)
    assert refused.status_code == 200
    assert refused.context["adminform"].form.errors["webhook_url"] == [
        "The host 127.0.0.1 resolves to 127.0.0.1, which is not a public address."
    ]


def _reserve(merchant: Merchant, order_id: str, minor: int) -> None:
    purchase = make_purchase(
        merchant,
        order_id,
        currency="USD",
        amount_minor=minor * 10,
        reserved_minor=minor,
        status="queued",
    )
    with transaction.atomic():
        assert ledger.reserve_or_downgrade(
            merchant, "USD", minor, purchase_id=purchase.pk, refused="not covered"
        )
        Purchase.objects.filter(pk=purchase.pk).update(hold="held")


def test_the_merchant_list_shows_balances_and_flags_a_runway_under_a_day(
    admin_client: Client, make_merchant: Any
) -> None:
    short = make_merchant(name="Short").merchant
    ample = make_merchant(name="Ample").merchant
    ledger.record_entry(short, "deposit", Decimal("10.00"), "USD")
    ledger.record_entry(ample, "deposit", Decimal("100.00"), "USD")
    _reserve(short, "S-1", 900)  # 9.00 in a week: 1.29 a day, 1.00 left
    _reserve(ample, "A-1", 900)  # 91.00 left

    page = admin_client.get("/admin/merchants/merchant/")

    assert page.status_code == 200
    rows = {m.name: m for m in page.context["cl"].result_list}
    assert rows["Short"].daily_rates == {"USD": 129}
    assert rows["Ample"].daily_rates == {"USD": 129}
    html = page.content.decode()
    assert html.count("⚠") == 1
    assert "⚠ USD (uses 1.29/day)" in html
    assert '1.00 / 9.00\u00a0<span class="cur">USD</span>' in html
    assert '91.00 / 9.00\u00a0<span class="cur">USD</span>' in html


def test_the_merchant_list_costs_the_same_queries_for_2_and_12_merchants(
    admin_client: Client, make_merchant: Any, django_assert_max_num_queries: Any
) -> None:
    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert admin_client.get("/admin/merchants/merchant/").status_code == 200
        return len(queries)

    for _ in range(2):
        ledger.record_entry(make_merchant().merchant, "deposit", Decimal("1.00"), "EUR")
    small = count()
    for _ in range(10):
        merchant = make_merchant().merchant
        ledger.record_entry(merchant, "deposit", Decimal("1.00"), "EUR")
        ledger.record_entry(merchant, "deposit", Decimal("1.00"), "USD")

    assert count() == small
    with django_assert_max_num_queries(small):
        admin_client.get("/admin/merchants/merchant/")
