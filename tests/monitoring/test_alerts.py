"""Back-office alerts for a deposit about to run out and for silent workers: raised once per
occurrence, refreshed while they last, resolvable, and exported as metrics."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from cashback import alerts, gauges
from cashback.models import Alert
from gateway.money import partner_cost_minor
from merchants.models import EntryKind
from merchants.services import record_entry
from monitoring.models import WorkerHeartbeat

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh(settings: Any) -> None:
    gauges.STATE.clear()
    gauges.RUNWAY.clear()
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


def metrics_text() -> str:
    gauges.STATE.clear()
    gauges.RUNWAY.clear()
    return Client().get("/metrics").content.decode()


def test_a_deposit_lasting_under_a_day_raises_runway_low_once_per_occurrence(
    make_merchant: Any, upstream: Any
) -> None:
    shop = make_merchant(percentage="10")
    record_entry(shop.merchant, EntryKind.DEPOSIT, Decimal("4.00"), "EUR")
    for n in range(3):
        assert shop.post_purchase(order_id=f"r-{n}").status_code == 201
    cost = partner_cost_minor(1250, Decimal(10))
    available, spent = 400 - 3 * cost, 3 * cost
    (runway,) = alerts.runways()
    assert (runway.merchant, runway.currency, runway.available_minor, runway.spent_minor) == (
        shop.merchant.public_id,
        "EUR",
        available,
        spent,
    )
    assert runway.days == float(Fraction(available * 7, spent)) < 1

    alerts.check_runways(alerts.runways())
    alerts.check_runways(alerts.runways())  # still low: the same occurrence
    alert = Alert.objects.get(kind=Alert.Kind.RUNWAY_LOW)
    assert (alert.subject, alert.count, alert.resolved_at) == ("shop-1:EUR", 1, None)
    assert alert.message.startswith(f"shop-1's EUR deposit lasts {runway.days:.2f} days")
    text = metrics_text()
    assert 'cashback_alerts_open{kind="runway_low"} 1.0' in text
    assert (
        f'cashback_deposit_runway_days{{currency="EUR",merchant="shop-1"}} {runway.days!r}' in text
    )

    assert alerts.resolve_alert(alert.pk, None)
    assert 'cashback_alerts_open{kind="runway_low"} 0.0' in metrics_text()
    alerts.check_runways(alerts.runways())  # low again after the resolution: a new one
    alert.refresh_from_db()
    assert (alert.count, alert.resolved_at) == (2, None)


def test_a_merchant_with_a_long_runway_raises_nothing(make_merchant: Any, upstream: Any) -> None:
    shop = make_merchant(percentage="10")
    record_entry(shop.merchant, EntryKind.DEPOSIT, Decimal("100.00"), "EUR")
    assert shop.post_purchase(order_id="long").status_code == 201
    alerts.check_runways(alerts.runways())
    assert not Alert.objects.exists()


def test_a_silent_worker_raises_worker_silent_from_the_admin_and_metrics(settings: Any) -> None:
    settings.WORKER_SILENT_AFTER = 60
    now = timezone.now()
    staff = User.objects.create_superuser("ops", "ops@example.com", "pw-ops-0123")
    client = Client()
    client.force_login(staff)
    # No worker ever seen: the banner, but no alert (nothing stopped).
    assert "WORKER SILENT:" in client.get("/admin/").content.decode()
    assert not Alert.objects.exists()

    WorkerHeartbeat.objects.create(
        worker="host-a:41",
        host="host-a",
        pid=41,
        version="1.0.0",
        started_at=now - timedelta(hours=1),
        last_pass_at=now - timedelta(seconds=90),
    )
    page = client.get("/admin/").content.decode()
    assert "WORKER SILENT:" in page
    assert "No worker has reported in" in page  # the alert's banner too
    client.get("/admin/")
    alert = Alert.objects.get(kind=Alert.Kind.WORKER_SILENT)
    assert (alert.subject, alert.count) == ("", 1)
    assert 'cashback_alerts_open{kind="worker_silent"} 1.0' in metrics_text()
    assert alert.count == 1

    WorkerHeartbeat.objects.update(last_pass_at=timezone.now())
    assert "WORKER SILENT:" not in client.get("/admin/").content.decode()
