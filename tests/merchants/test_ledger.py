"""The deposit ledger: reservations, captures, releases, rounding, and the checks."""

from __future__ import annotations

import io
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from cashback import lifecycle
from cashback.models import Hold, Purchase, Status
from gateway.exceptions import InsufficientDeposit, InvalidInput
from gateway.money import partner_cost_minor, to_minor
from merchants.models import Balance, EntryKind, LedgerEntry
from merchants.services import record_entry


def kinds(purchase: Purchase) -> list[str]:
    return list(
        LedgerEntry.objects.filter(purchase=purchase).order_by("id").values_list("kind", flat=True)
    )


def balance(shop: Any, currency: str) -> tuple[Decimal, Decimal]:
    b = Balance.objects.get(merchant=shop.merchant, currency=currency)
    return b.available, b.reserved


@pytest.mark.parametrize(
    ("currency", "amount", "percent", "cost"),
    [
        ("USD", "10.01", "3.33", "0.34"),  # 0.333333 rounds up
        ("USD", "20.00", "5", "1.00"),
        ("EUR", "0.01", "0.01", "0.01"),  # a millionth of a cent is still a cent
        ("BTC", "0.00012345", "2.5", "0.00000309"),  # 0.0000030862…
        ("GBYTE", "1.000000001", "10", "0.100000001"),  # 0.1000000001
        ("GBYTE", "3", "10", "0.3"),
    ],
)
def test_the_partner_cost_is_rounded_up_to_the_currency_precision(
    currency: str, amount: str, percent: str, cost: str
) -> None:
    minor = partner_cost_minor(to_minor(Decimal(amount), currency), Decimal(percent))
    assert minor == to_minor(Decimal(cost), currency)


def test_a_sent_purchase_reserves_then_captures(make_merchant: Any, upstream: Any) -> None:
    shop = make_merchant(percentage="5")
    record_entry(shop.merchant, EntryKind.DEPOSIT, Decimal("10.00"), "EUR")

    body = shop.post_purchase().json()

    purchase = Purchase.objects.get()
    assert body["partner_cashback_percentage"] == "5"
    assert kinds(purchase) == ["reservation", "capture"]
    assert purchase.hold == Hold.CAPTURED
    assert balance(shop, "EUR") == (Decimal("9.37"), Decimal("0.00"))  # 12.50 × 5 % = 0.625 → 0.63
    assert upstream.state.log[-1]["partner_cashback_percentage"] == "5"


def test_a_rejected_purchase_releases_its_reservation(make_merchant: Any, upstream: Any) -> None:
    shop = make_merchant(percentage="5")
    record_entry(shop.merchant, EntryKind.DEPOSIT, Decimal("10.00"), "EUR")
    upstream.state.set_mode("error")

    shop.post_purchase()

    purchase = Purchase.objects.get()
    assert purchase.status == Status.REJECTED
    assert kinds(purchase) == ["reservation", "release"]
    assert balance(shop, "EUR") == (Decimal("10.00"), Decimal("0.00"))
    call_command("check_ledger", stdout=io.StringIO())


def test_pending_and_unknown_purchases_hold_their_reservation(
    make_merchant: Any, upstream: Any
) -> None:
    shop = make_merchant(percentage="5")
    record_entry(shop.merchant, EntryKind.DEPOSIT, Decimal("10.00"), "EUR")
    upstream.state.set_mode("503", count=1)
    shop.post_purchase(order_id="p")
    upstream.state.set_mode("500", count=1)
    shop.post_purchase(order_id="u")

    assert dict(Purchase.objects.values_list("order_id", "status")) == {
        "p": "pending",
        "u": "unknown",
    }
    assert balance(shop, "EUR") == (Decimal("8.74"), Decimal("1.26"))
    assert shop.client.get("/api/v1/balance").json() == {
        "balances": [{"currency": "EUR", "available": "8.74", "reserved": "1.26"}]
    }
    call_command("check_ledger", stdout=io.StringIO())


def test_a_failed_purchase_releases_its_reservation(make_merchant: Any, upstream: Any) -> None:
    shop = make_merchant(percentage="5")
    record_entry(shop.merchant, EntryKind.DEPOSIT, Decimal("10.00"), "EUR")
    upstream.state.set_mode("503", count=1)
    shop.post_purchase()
    purchase = Purchase.objects.get()

    lifecycle.fail_expired(
        purchase.retry_deadline + (purchase.retry_deadline - purchase.created_at)
    )

    purchase.refresh_from_db()
    assert purchase.status == Status.FAILED
    assert kinds(purchase) == ["reservation", "release"]
    assert balance(shop, "EUR") == (Decimal("10.00"), Decimal("0.00"))
    call_command("check_ledger", stdout=io.StringIO())


def test_a_deposit_in_eur_does_not_fund_a_usd_purchase(make_merchant: Any, upstream: Any) -> None:
    shop = make_merchant(percentage="5")
    record_entry(shop.merchant, EntryKind.DEPOSIT, Decimal("100.00"), "EUR")

    body = shop.post_purchase(currency="USD").json()

    assert (body["requested_partner_cashback_percentage"], body["partner_cashback_percentage"]) == (
        "5",
        "0",
    )
    assert upstream.state.log[-1]["partner_cashback_percentage"] == "0"
    assert balance(shop, "EUR") == (Decimal("100.00"), Decimal("0.00"))


def test_policy_reject_answers_402_and_stores_nothing(make_merchant: Any, upstream: Any) -> None:
    shop = make_merchant(percentage="5", policy="reject")

    response = shop.post_purchase()

    assert response.status_code == 402
    assert response.json()["detail"] == (
        "The deposit in EUR does not cover 5.00 % partner cashback; nothing was stored."
    )
    assert Purchase.objects.count() == 0
    assert upstream.state.requests == 0
    # The same order id may be sent again once the deposit covers it.
    record_entry(shop.merchant, EntryKind.DEPOSIT, Decimal("1.00"), "EUR")
    assert shop.post_purchase().status_code == 201


def test_the_ledger_api_lists_the_callers_entries_newest_first(
    make_merchant: Any, upstream: Any
) -> None:
    shop, other = make_merchant(percentage="5"), make_merchant()
    record_entry(shop.merchant, EntryKind.DEPOSIT, Decimal("10.00"), "EUR", memo="wire 17")
    record_entry(other.merchant, EntryKind.DEPOSIT, Decimal("99.00"), "EUR")
    shop.post_purchase()

    entries = shop.client.get("/api/v1/ledger").json()["results"]

    assert [(e["kind"], e["amount"], e["order_id"]) for e in entries] == [
        ("capture", "-0.63", "A-1001"),
        ("reservation", "-0.63", "A-1001"),
        ("deposit", "10.00", None),
    ]
    assert entries[2]["memo"] == "wire 17"


def test_withdrawals_cannot_take_available_below_zero(shop: Any) -> None:
    record_entry(shop.merchant, EntryKind.DEPOSIT, Decimal("5.00"), "USD")
    with pytest.raises(InsufficientDeposit):
        record_entry(shop.merchant, EntryKind.WITHDRAWAL, Decimal("5.01"), "USD")
    record_entry(shop.merchant, EntryKind.WITHDRAWAL, Decimal("5.00"), "USD")
    assert balance(shop, "USD") == (Decimal("0.00"), Decimal("0.00"))
    with pytest.raises(InvalidInput):
        record_entry(shop.merchant, EntryKind.DEPOSIT, Decimal("0.001"), "USD")
    with pytest.raises(InvalidInput):
        record_entry(shop.merchant, EntryKind.RESERVATION, Decimal("1"), "USD")


def test_entries_are_append_only(shop: Any) -> None:
    entry = record_entry(shop.merchant, EntryKind.DEPOSIT, Decimal("5.00"), "USD")
    entry.memo = "changed"
    with pytest.raises(TypeError):
        entry.save()
    with pytest.raises(TypeError):
        entry.delete()
    with pytest.raises(TypeError):
        LedgerEntry.objects.filter(pk=entry.pk).update(memo="changed")
    with pytest.raises(TypeError):
        LedgerEntry.objects.all().delete()


def test_check_ledger_finds_a_balance_that_disagrees_with_its_entries(shop: Any) -> None:
    record_entry(shop.merchant, EntryKind.DEPOSIT, Decimal("5.00"), "USD")
    call_command("check_ledger", stdout=io.StringIO())

    Balance.objects.filter(merchant=shop.merchant).update(available_minor=600)

    err = io.StringIO()
    with pytest.raises(CommandError, match="1 ledger problem"):
        call_command("check_ledger", stdout=io.StringIO(), stderr=err)
    assert "balance available/reserved [600, 0] but entries sum to [500, 0]" in err.getvalue()


def test_check_ledger_finds_a_finished_purchase_still_holding(
    make_merchant: Any, upstream: Any
) -> None:
    shop = make_merchant(percentage="5")
    record_entry(shop.merchant, EntryKind.DEPOSIT, Decimal("10.00"), "EUR")
    upstream.state.set_mode("500")
    shop.post_purchase()
    Purchase.objects.update(status=Status.REJECTED)  # as a bug that forgot the release would

    with pytest.raises(CommandError):
        call_command("check_ledger", stdout=io.StringIO(), stderr=io.StringIO())


def test_record_deposit_and_create_merchant_commands(db: None) -> None:
    out = io.StringIO()
    call_command(
        "create_merchant", "Corner Cafe", "--id", "cafe", "--percentage", "2", "--json", stdout=out
    )
    import json

    created = json.loads(out.getvalue())
    assert created["merchant_id"] == "cafe" and created["api_key"].startswith("cbk_")
    out = io.StringIO()
    call_command("record_deposit", "cafe", "25.50", "USD", "--memo", "wire", stdout=out)
    assert "Recorded deposit 25.50 USD for cafe" in out.getvalue()
    entry = LedgerEntry.objects.get()
    assert (entry.kind, entry.amount, entry.memo, entry.created_by) == (
        "deposit",
        Decimal("25.50"),
        "wire",
        None,
    )
    with pytest.raises(CommandError, match="No merchant"):
        call_command("record_deposit", "nobody", "1", "USD")
    with pytest.raises(CommandError, match="at most 2 decimal places"):
        call_command("record_deposit", "cafe", "1.001", "USD")
