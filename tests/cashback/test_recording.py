"""Recording upstream's answers: every answer is kept on its attempt, a late one never
overwrites an admin's decision but alerts when upstream paid, a payment is never lost to a
later refusal, and a purchase row that cannot be updated still leaves its attempt."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from cashback import lifecycle, services, worker
from cashback.client import UpstreamResult
from cashback.models import Alert, Attempt, Outcome, Purchase, Status
from gateway.exceptions import DomainError
from merchants.models import Balance, EntryKind, LedgerEntry
from merchants.services import record_entry

UNIT = "U" * 44
PAID = UpstreamResult(
    Outcome.OK, 200, cashback_amount=68_750_000, unit=UNIT, response_excerpt='{"result":"ok"}'
)


def funded(make_merchant: Any, policy: str = "downgrade") -> Any:
    shop = make_merchant(percentage="5", policy=policy)
    record_entry(shop.merchant, EntryKind.DEPOSIT, Decimal("10.00"), "EUR")
    return shop


def stalled_first_call(shop: Any, upstream: Any) -> Purchase:
    """Store a purchase whose first call is still out (its lease then ran out: `unknown`)."""
    upstream.state.set_mode("500", count=1)
    shop.post_purchase(order_id="A-1")
    purchase = Purchase.objects.get()
    # As if the first process stalled past its lease, its answer still on the way.
    Purchase.objects.filter(pk=purchase.pk).update(
        status=Status.SENDING, attempts=1, lease_until=timezone.now()
    )
    Attempt.objects.filter(purchase=purchase).delete()
    lifecycle.expire_leases(timezone.now() + timedelta(days=1))
    purchase.refresh_from_db()
    assert purchase.status == Status.UNKNOWN
    return purchase


def kinds(purchase: Purchase) -> list[str]:
    return list(
        LedgerEntry.objects.filter(purchase=purchase).order_by("id").values_list("kind", flat=True)
    )


def check_ledger() -> None:
    call_command("check_ledger", stdout=io.StringIO())


def test_first_call_paid_late_then_a_retry_refused_as_already_registered_ends_sent(
    make_merchant: Any, upstream: Any
) -> None:
    shop = funded(make_merchant)
    purchase = stalled_first_call(shop, upstream)
    services.retry(purchase.pk, None, send=False)
    assert lifecycle.claim(purchase, lifecycle.Actor.ADMIN)
    # The first call's answer arrives while the retry is out: kept, not applied, alerted.
    services.record_outcome(purchase.pk, 1, PAID, started_at=timezone.now())
    alert = Alert.objects.get()
    assert (alert.kind, alert.subject) == (Alert.Kind.UPSTREAM_PAID_UNRECORDED, str(purchase.pk))

    # The retry reaches upstream, which registered the order on the first call.
    refused = UpstreamResult(Outcome.REJECTED, 200, error="this order_id was already registered")
    services.record_outcome(purchase.pk, 2, refused, started_at=timezone.now())

    purchase.refresh_from_db()
    assert (purchase.status, purchase.cashback_amount, purchase.unit) == (
        Status.SENT,
        68_750_000,
        UNIT,
    )
    assert list(
        Attempt.objects.filter(purchase=purchase).values_list("number", "outcome", "applied")
    ) == [
        (1, "ok", True),
        (2, "rejected", False),
    ]
    assert kinds(purchase) == ["reservation", "capture"]
    check_ledger()


def test_a_retry_refused_after_a_timeout_is_unknown_not_rejected(
    make_merchant: Any, upstream: Any
) -> None:
    shop = funded(make_merchant)
    upstream.state.set_mode("500", count=1)  # the first call may have been paid
    shop.post_purchase(order_id="A-1")
    purchase = Purchase.objects.get()
    assert purchase.status == Status.UNKNOWN
    upstream.state.set_mode("error", count=1)  # the re-send is refused

    services.retry(purchase.pk, None)

    purchase.refresh_from_db()
    assert purchase.status == Status.UNKNOWN
    assert purchase.error == (
        "upstream refused the re-send (purchase refused by the sandbox); attempt 1 may have "
        "been paid: reconcile with upstream"
    )
    assert list(Attempt.objects.filter(purchase=purchase).values_list("outcome", "applied")) == [
        ("ambiguous", True),
        ("rejected", False),
    ]
    assert kinds(purchase) == ["reservation"]  # still held: nothing released
    check_ledger()


def test_a_late_ok_after_an_admin_rejected_is_kept_and_names_the_purchase(
    make_merchant: Any, upstream: Any
) -> None:
    shop = funded(make_merchant)
    purchase = stalled_first_call(shop, upstream)
    services.mark_rejected(purchase.pk, None, "checked with upstream: not there")

    services.record_outcome(purchase.pk, 1, PAID, started_at=timezone.now())

    purchase.refresh_from_db()
    assert (purchase.status, purchase.cashback_amount) == (Status.REJECTED, None)
    attempt = Attempt.objects.get(purchase=purchase)
    assert (attempt.outcome, attempt.applied, attempt.cashback_amount, attempt.unit) == (
        "ok",
        False,
        "68750000",
        UNIT,
    )
    assert attempt.response_excerpt == '{"result":"ok"}'
    alert = Alert.objects.get()
    assert (alert.kind, alert.subject, alert.count) == (
        Alert.Kind.UPSTREAM_PAID_UNRECORDED,
        str(purchase.pk),
        1,
    )
    assert alert.message == (
        f"Upstream paid order 'A-1' of merchant {shop.merchant.public_id} (68750000 bytes, "
        f"unit {UNIT}) on attempt 1, but the purchase is recorded rejected: reconcile it."
    )
    check_ledger()


def test_a_late_refusal_after_an_admin_marked_sent_changes_nothing_and_alerts_nobody(
    shop: Any, upstream: Any
) -> None:
    purchase = stalled_first_call(shop, upstream)
    services.mark_sent(purchase.pk, None, 5, "u-1")

    late = UpstreamResult(Outcome.REJECTED, 200, error="no such thing")
    services.record_outcome(purchase.pk, 1, late, started_at=timezone.now())

    purchase.refresh_from_db()
    assert (purchase.status, purchase.cashback_amount) == (Status.SENT, 5)
    assert Attempt.objects.get(purchase=purchase).applied is False
    assert not Alert.objects.exists()


def test_a_late_ok_before_an_admin_retry_is_sent_records_it_and_nothing_resends(
    make_merchant: Any, upstream: Any
) -> None:
    shop = funded(make_merchant)
    purchase = stalled_first_call(shop, upstream)
    services.retry(purchase.pk, None, send=False)  # `pending`, due now, not claimed yet

    services.record_outcome(purchase.pk, 1, PAID, started_at=timezone.now())
    worker.run_once(now=timezone.now() + timedelta(seconds=60))

    purchase.refresh_from_db()
    assert (purchase.status, purchase.cashback_amount, purchase.attempts) == (
        Status.SENT,
        68_750_000,
        1,
    )
    assert Attempt.objects.get(purchase=purchase).applied is True
    assert upstream.state.requests == 1  # the first call only
    assert kinds(purchase) == ["reservation", "capture"]
    assert not Alert.objects.exists()
    check_ledger()


def test_a_recorded_ok_forbids_retry_and_mark_rejected_but_allows_mark_sent(
    shop: Any, upstream: Any
) -> None:
    purchase = stalled_first_call(shop, upstream)
    services.mark_rejected(purchase.pk, None, "not there")
    services.record_outcome(purchase.pk, 1, PAID, started_at=timezone.now())
    # An admin puts it back to `unknown`-like reconciliation: here a pending one with an ok.
    Purchase.objects.filter(pk=purchase.pk).update(status=Status.UNKNOWN)
    message = (
        f"Upstream already paid this purchase: attempt 1 answered ok (68750000 bytes, unit "
        f"{UNIT}). It cannot be {{}}; mark it sent instead."
    )

    with pytest.raises(DomainError) as retried:
        services.retry(purchase.pk, None)
    with pytest.raises(DomainError) as rejected:
        services.mark_rejected(purchase.pk, None, "no")

    assert str(retried.value.detail) == message.format("retried")
    assert str(rejected.value.detail) == message.format("marked rejected")
    assert upstream.state.requests == 1
    assert services.mark_sent(purchase.pk, None, 68_750_000, UNIT).status == Status.SENT


@pytest.fixture
def failing_sent_update(is_postgres: bool) -> Iterator[None]:
    """Make the database refuse to mark any purchase `sent` (a real trigger)."""
    with connection.cursor() as cursor:
        if is_postgres:
            cursor.execute(
                "CREATE FUNCTION refuse_sent() RETURNS trigger AS $$ BEGIN "
                "IF NEW.status = 'sent' THEN RAISE EXCEPTION 'refused by test'; END IF; "
                "RETURN NEW; END $$ LANGUAGE plpgsql"
            )
            cursor.execute(
                "CREATE TRIGGER refuse_sent BEFORE UPDATE ON cashback_purchase "
                "FOR EACH ROW EXECUTE FUNCTION refuse_sent()"
            )
        else:
            cursor.execute(
                "CREATE TRIGGER refuse_sent BEFORE UPDATE ON cashback_purchase "
                "WHEN NEW.status = 'sent' BEGIN SELECT RAISE(ABORT, 'refused by test'); END"
            )
    yield
    with connection.cursor() as cursor:
        cursor.execute(
            "DROP TRIGGER refuse_sent" + (" ON cashback_purchase" if is_postgres else "")
        )
        if is_postgres:
            cursor.execute("DROP FUNCTION refuse_sent()")


@pytest.mark.parametrize("percentage", ["0", "5"])
def test_an_ok_whose_purchase_update_fails_keeps_the_attempt_and_is_unknown(
    make_merchant: Any, upstream: Any, failing_sent_update: None, percentage: str
) -> None:
    shop = make_merchant(percentage=percentage)
    record_entry(shop.merchant, EntryKind.DEPOSIT, Decimal("10.00"), "EUR")

    response = shop.post_purchase(order_id="A-1")

    assert response.status_code == 202
    assert response.json()["status"] == "unknown"
    purchase = Purchase.objects.get()
    error = response.json()["error"]
    assert error.startswith("the answer could not be recorded (")
    assert error.endswith("): see attempt 1")
    attempt = Attempt.objects.get(purchase=purchase)
    assert (attempt.outcome, attempt.applied, attempt.unit) == ("ok", False, upstream_unit(attempt))
    assert int(attempt.cashback_amount or 0) > 0
    assert Alert.objects.get().subject == str(purchase.pk)
    # Held, as every `unknown` purchase is, until an admin reconciles it.
    balance = Balance.objects.get(merchant=shop.merchant)
    assert balance.reserved_minor == (63 if percentage == "5" else 0)
    check_ledger()


def upstream_unit(attempt: Attempt) -> str:
    assert attempt.unit and len(attempt.unit) == 44
    return attempt.unit


def test_a_refusal_whose_purchase_update_fails_is_still_rejected(
    shop: Any, upstream: Any, failing_sent_update: None
) -> None:
    upstream.state.set_mode("error", count=1)

    response = shop.post_purchase(order_id="A-1")

    assert (response.status_code, response.json()["status"]) == (422, "rejected")
    assert Attempt.objects.get().applied is True
    assert not Alert.objects.exists()


@pytest.mark.parametrize(
    ("amount", "unit", "why"),
    [
        (2**64, UNIT, "cashback_amount out of range"),
        (-1, UNIT, "cashback_amount out of range"),
        (5, "u" * 45, "unit is not a unit"),
        (5, "u\x00v", "unit is not a unit"),
        (5, "u\ud800", "unit is not a unit"),
    ],
)
def test_an_ok_the_purchase_cannot_store_is_unknown_with_the_answer_on_its_attempt(
    shop: Any, amount: int, unit: str, why: str
) -> None:
    purchase = Purchase.objects.create(
        merchant=shop.merchant,
        order_id="A-1",
        customer="c",
        address="a@example.com",
        currency="EUR",
        amount_minor=100,
        requested_percentage=0,
        percentage=0,
        status=Status.SENDING,
        attempts=1,
    )
    odd = UpstreamResult(Outcome.OK, 200, cashback_amount=amount, unit=unit)

    services.record_outcome(purchase.pk, 1, odd, started_at=timezone.now())

    purchase.refresh_from_db()
    assert (purchase.status, purchase.cashback_amount) == (Status.UNKNOWN, None)
    assert (
        purchase.error == f"answer outside the documented shape ({why}); upstream may have paid it"
    )
    attempt = Attempt.objects.get()
    assert (attempt.outcome, attempt.cashback_amount) == ("ambiguous", str(amount))
    assert attempt.unit == unit.replace("\x00", "\\x00").replace("\ud800", "\\ud800")
