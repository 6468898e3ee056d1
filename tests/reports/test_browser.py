"""An accountant uses the payouts dashboard in a real browser (Debian's Chromium, headless)."""

from __future__ import annotations

import csv
import io
import os
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from cashback import reports
from cashback.models import Status
from merchants.models import Merchant
from tests.reports.conftest import PASSWORD, make_purchase

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def chromium_path() -> str:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail(f"{CHROMIUM} is missing and REQUIRE_BROWSER is set.")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    return CHROMIUM


def test_accountant_downloads_last_months_csv_from_the_dashboard(
    chromium_path: str, live_server: Any, accountant: Any, settings: Any, monkeypatch: Any
) -> None:
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    tz = ZoneInfo(settings.TIME_ZONE)
    last_month = reports.preset_period("last_month", tz)
    first = datetime.combine(last_month.start, time(12), tzinfo=tz)
    last = datetime.combine(last_month.end, time(23, 59, 59), tzinfo=tz)
    shop = Merchant.objects.create(public_id="shop", name="Corner Shop")
    make_purchase(shop, "lm-1", "EUR", 1250, first, status=Status.SENT, cashback=101318)
    make_purchase(shop, "lm-2", "USD", 999, last, status=Status.REJECTED, customer="=cmd")
    make_purchase(shop, "this-month", "EUR", 100, last + timedelta(seconds=1), status=Status.SENT)

    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; Django refuses ORM calls
    # from a thread with a running loop unless told that this is a test.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(
                accept_downloads=True, viewport={"width": 1400, "height": 900}
            )
            page = context.new_page()
            page.goto(f"{live_server.url}/admin/login/?next=/admin/")
            page.fill("#id_username", accountant.username)
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            page.click("text=Payouts dashboard")
            page.click("a[data-preset=last_month]")
            page.wait_for_selector("a[data-preset=last_month].selected")

            heading = page.inner_text("#payouts-period")
            assert heading == (
                f"{last_month.start} to {last_month.end}, both inclusive, in {settings.TIME_ZONE}"
            )
            assert page.inner_text('tr[data-merchant="shop"] td[data-col="purchases"]') == "2"
            assert page.inner_text('tr[data-merchant="shop"] td[data-col="cashback_gbyte"]') == (
                "0.000101318"
            )
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "payouts-dashboard.png"), full_page=True)

            with page.expect_download() as info:
                page.click("#export-detail-csv")
            download = info.value
            zone = settings.TIME_ZONE.replace("/", "-")
            assert download.suggested_filename == (
                f"payouts-detail_{last_month.start}_{last_month.end}_{zone}.csv"
            )
            text = Path(download.path()).read_text(encoding="utf-8-sig")
        finally:
            browser.close()

    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == [
        f"Payout detail report, {last_month.start} to {last_month.end} ({settings.TIME_ZONE}), "
        "all merchants"
    ]
    assert [r[2:9] for r in rows[2:]] == [
        ["shop", "Corner Shop", "lm-1", "c-1", "sent", "EUR", "12.50"],
        ["shop", "Corner Shop", "lm-2", "'=cmd", "rejected", "USD", "9.99"],
    ]
    assert rows[2][0] == first.isoformat() and rows[3][0] == last.isoformat()
