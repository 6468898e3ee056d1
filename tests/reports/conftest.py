"""Fixtures for the payouts dashboard and reports: users in each role and a hand-built set
of purchases in October 2026, Europe/Berlin, whose every figure the tests know exactly."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth.models import Group, Permission, User

from cashback.models import Hold, Purchase, Status
from merchants.models import Balance, Merchant

BERLIN = ZoneInfo("Europe/Berlin")
PASSWORD = "correct-horse-battery-staple"
UNIT_1 = "kYbc5KGKB/KnjynYePEF4cpumKmOz22xVKSVWbmtZ0M="
UNIT_2 = "mWnMQTLMdI0bWVEYfYE6vIoDqf7lpTzUz5f0sPlQ7r4="
# A base64 unit may begin with "+": a spreadsheet would read it as a formula.
UNIT_PLUS = "+" + "A" * 42 + "="
UNIT_3 = "Zm9vYmFyYmF6cXV4cXV1eGZvb2JhcmJhenF1eHF1dXg="


@pytest.fixture(autouse=True)
def _plain_static_storage(settings: Any) -> None:
    """Render admin pages without a collectstatic manifest (tests never run collectstatic),
    and hash test passwords quickly."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


def accountants_group() -> Group:
    """Return the Accountants group with its permissions (as the data migration makes it)."""
    group, _ = Group.objects.get_or_create(name="Accountants")
    codenames = [
        ("merchants", "view_merchant"),
        ("merchants", "view_ledgerentry"),
        ("merchants", "view_balance"),
        ("cashback", "view_purchase"),
        ("cashback", "export_payouts"),
    ]
    for app_label, codename in codenames:
        group.permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return group


@pytest.fixture
def accountant(db: None) -> User:
    user = User.objects.create_user("accountant", password=PASSWORD, is_staff=True)
    user.groups.add(accountants_group())
    return user


@pytest.fixture
def staff_without_permission(db: None) -> User:
    return User.objects.create_user("clerk", password=PASSWORD, is_staff=True)


@pytest.fixture
def customer_user(db: None) -> User:
    return User.objects.create_user("visitor", password=PASSWORD)


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


def make_purchase(
    merchant: Merchant,
    order_id: str,
    currency: str,
    amount_minor: int,
    created: datetime,
    *,
    status: str,
    percentage: str = "0",
    requested: str | None = None,
    reserved: int = 0,
    cashback: int | None = None,
    unit: str | None = None,
    sent_after: int = 1,
    customer: str = "c-1",
    error: str | None = None,
) -> Purchase:
    """Store a purchase as the purchase path would have left it, created at `created`."""
    hold = {
        Status.SENT: Hold.CAPTURED,
        Status.REJECTED: Hold.RELEASED,
        Status.FAILED: Hold.RELEASED,
    }.get(status, Hold.HELD)
    return Purchase.objects.create(
        merchant=merchant,
        order_id=order_id,
        customer=customer,
        address="WR5FPYE6LHBQ57ZCFUTJXDDNHWK5355S",
        currency=currency,
        amount_minor=amount_minor,
        requested_percentage=Decimal(requested if requested is not None else percentage),
        percentage=Decimal(percentage),
        status=status,
        reserved_minor=reserved,
        hold=hold if reserved else Hold.NONE,
        cashback_amount=cashback,
        unit=unit,
        error=error,
        created_at=created,
        updated_at=created,
        sent_at=created + timedelta(seconds=sent_after) if status == Status.SENT else None,
    )


@dataclass
class DataSet:
    alpha: Merchant
    beta: Merchant
    gamma: Merchant


@pytest.fixture
def dataset(db: None) -> DataSet:
    """Two merchants with purchases in October 2026 (Berlin), one with purchases only outside.

    October 2026 in Berlin runs from 2026-09-30T22:00Z (CEST, +02:00) to 2026-10-31T23:00Z
    (CET, +01:00 since the 25th).
    """
    alpha = Merchant.objects.create(public_id="alpha", name="Alpha Shop")
    beta = Merchant.objects.create(public_id="beta", name="Beta Store")
    gamma = Merchant.objects.create(public_id="gamma", name="Gamma Goods")
    s = Status
    # The first instant of the period.
    make_purchase(
        alpha,
        "a-1",
        "EUR",
        1250,
        berlin(2026, 10, 1),
        status=s.SENT,
        percentage="5",
        reserved=63,
        cashback=101318,
        unit=UNIT_1,
    )
    make_purchase(
        alpha,
        "a-2",
        "USD",
        10000,
        berlin(2026, 10, 15, 12),
        status=s.SENT,
        percentage="10",
        reserved=1000,
        cashback=2_000_000_000,
        unit=UNIT_2,
        customer="c-2",
    )
    make_purchase(
        alpha,
        "a-3",
        "EUR",
        700,
        berlin(2026, 10, 20, 8, 30),
        status=s.REJECTED,
        percentage="5",
        reserved=35,
        error='=HYPERLINK("http://x")',
    )
    # The last second of the last day.
    make_purchase(
        alpha,
        "a-4",
        "GBYTE",
        1_500_000_000,
        berlin(2026, 10, 31, 23, 59, 59),
        status=s.PENDING,
        customer="+4412345",
    )
    make_purchase(
        beta,
        "b-1",
        "EUR",
        2000,
        berlin(2026, 10, 26, 9),
        status=s.SENT,
        percentage="2",
        reserved=40,
        cashback=500_000,
        unit=UNIT_3,
        sent_after=5,
        customer="c-4",
    )
    make_purchase(
        beta, "b-2", "EUR", 500, berlin(2026, 10, 10, 10), status=s.UNKNOWN, customer="@bob"
    )
    make_purchase(
        beta,
        "b-3",
        "BTC",
        10_000,
        berlin(2026, 10, 5, 12),
        status=s.FAILED,
        customer="c-3",
        error="retries ran out",
    )
    # The last microsecond of the period.
    make_purchase(
        beta,
        "b-4",
        "EUR",
        100,
        berlin(2026, 10, 31, 23, 59, 59, 999_999),
        status=s.QUEUED,
        customer="c-6",
    )
    # Downgraded: 5 % requested, 0 % applied, nothing reserved.
    make_purchase(
        beta,
        "b-5",
        "EUR",
        1000,
        berlin(2026, 10, 2, 10),
        status=s.SENT,
        requested="5",
        cashback=300,
        unit=UNIT_PLUS,
        sent_after=2,
        customer="c-5",
    )
    # Outside: the first instant after the period, and the last one before it.
    make_purchase(
        alpha,
        "a-out",
        "EUR",
        300,
        berlin(2026, 11, 1),
        status=s.SENT,
        cashback=7,
        unit=UNIT_1,
    )
    make_purchase(
        gamma,
        "g-out",
        "EUR",
        999,
        berlin(2026, 9, 30, 23, 59, 59, 999_999),
        status=s.SENT,
        cashback=9,
    )
    Balance.objects.create(merchant=alpha, currency="EUR", available_minor=1000)
    Balance.objects.create(merchant=alpha, currency="USD", available_minor=5000)
    Balance.objects.create(merchant=beta, currency="EUR", available_minor=250, reserved_minor=150)
    Balance.objects.create(merchant=gamma, currency="EUR", available_minor=999)
    return DataSet(alpha, beta, gamma)
