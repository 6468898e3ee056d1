"""The rates admin: see the rates conversions use, record an override with a reason."""

from __future__ import annotations

import secrets
from typing import Any

from django.test import Client
from django.utils import timezone

from audit.models import AuditEvent
from cashback.models import Purchase, Rate
from merchants.models import Merchant


def test_an_admin_records_an_override_with_a_reason_and_it_is_audited(
    admin_client: Client, superuser: Any
) -> None:
    today = timezone.now().date()
    response = admin_client.post(
        "/admin/cashback/rate/add/",
        {"currency": "GBP", "date": today.isoformat(), "rate": "0.8500", "reason": "feed late"},
    )

    assert response.status_code == 302, response.content
    row = Rate.objects.get(source="override")
    assert (row.currency, row.date, row.rate, row.reason, row.created_by) == (
        "GBP",
        today,
        "0.8500",
        "feed late",
        superuser,
    )
    event = AuditEvent.objects.get(action="rate_override")
    assert (event.actor, event.object_type, event.object_id) == (
        superuser,
        "cashback.rate",
        str(row.pk),
    )
    assert event.changes == {
        "currency": [None, "GBP"],
        "date": [None, today.isoformat()],
        "rate": [None, "0.8500"],
        "reason": [None, "feed late"],
    }
    listing = admin_client.get("/admin/cashback/rate/?source=override")
    assert listing.status_code == 200
    assert "0.8500" in listing.content.decode()


def test_an_override_without_a_reason_or_with_a_bad_rate_is_refused(admin_client: Client) -> None:
    today = timezone.now().date().isoformat()
    before = Rate.objects.count()
    for data, field, message in [
        ({"currency": "GBP", "date": today, "rate": "0.85", "reason": " "}, "reason", None),
        ({"currency": "GBP", "date": today, "rate": "-1", "reason": "x"}, "rate", "positive"),
        ({"currency": "GBP", "date": today, "rate": "1e", "reason": "x"}, "rate", "decimal"),
        ({"currency": "XYZ", "date": today, "rate": "1", "reason": "x"}, "currency", "converts"),
    ]:
        response = admin_client.post("/admin/cashback/rate/add/", data)
        assert response.status_code == 200, data
        errors = response.context["adminform"].form.errors
        assert field in errors, (data, errors)
        if message:
            assert message in errors[field][0]
    assert Rate.objects.count() == before
    assert not AuditEvent.objects.filter(action="rate_override").exists()


def test_rates_are_never_edited_or_deleted(admin_client: Client) -> None:
    rate = Rate.objects.create(currency="GBP", date=timezone.now().date(), rate="0.8338")

    page = admin_client.get(f"/admin/cashback/rate/{rate.pk}/change/")
    assert page.status_code == 200
    assert 'name="rate"' not in page.content.decode()
    assert (
        admin_client.post(f"/admin/cashback/rate/{rate.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    assert Rate.objects.filter(pk=rate.pk, rate="0.8338").exists()


def test_accountants_cannot_override_rates(accountant_client: Client) -> None:
    assert accountant_client.get("/admin/cashback/rate/add/").status_code == 403


def test_the_purchase_page_shows_both_amounts_of_a_converted_purchase(
    admin_client: Client, make_merchant: Any, upstream: Any
) -> None:
    Rate.objects.create(currency="GBP", date=timezone.now().date(), rate="0.8338")
    shop = make_merchant()
    assert shop.post_purchase(currency="GBP", currency_amount="12.50").status_code == 201
    purchase = Purchase.objects.get()

    page = admin_client.get(f"/admin/cashback/purchase/{purchase.pk}/change/").content.decode()

    assert "14.99" in page and "12.50" in page and "0.8338 per EUR" in page


def test_admins_see_which_merchants_have_not_rotated_to_a_standard_secret(
    admin_client: Client, make_merchant: Any
) -> None:
    old, new, none = make_merchant(), make_merchant(), make_merchant()
    old_secret = "whsec_" + secrets.token_urlsafe(32)  # the form issued before
    Merchant.objects.filter(pk=old.merchant.pk).update(
        webhook_url="https://example.com/h", webhook_secret=old_secret
    )
    rotated = new.merchant
    rotated.webhook_url = "https://example.com/h"
    rotated.rotate_webhook_secret()
    rotated.save()

    def listed(query: str) -> set[str]:
        response = admin_client.get(f"/admin/merchants/merchant/{query}")
        assert response.status_code == 200
        return {m.public_id for m in response.context["cl"].result_list}

    assert listed("?webhook_secret=legacy") == {old.merchant.public_id}
    assert listed("?webhook_secret=standard") == {rotated.public_id}
    assert none.merchant.public_id in listed("")
    page = admin_client.get("/admin/merchants/merchant/").content.decode()
    assert "old form: rotate (still sends X-Cashback-Signature)" in page
    assert old_secret not in page and rotated.webhook_secret not in page
