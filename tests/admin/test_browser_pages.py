"""Every admin page in a real browser (Debian's Chromium, headless), as a processor admin and
as an accountant, at 1366×768 and 390×844: no sideways scrolling of the page, no amount in
exponent notation, no 500 and no unstyled error page. Screenshots go to SCREENSHOTS (a CI
artifact, git-ignored); docs/img/ keeps a few of them for docs/admin.md.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from audit.services import record
from cashback.models import Alert, Attempt, Purchase, PurchaseAction, Status, WebhookDelivery
from merchants import services as ledger
from merchants.models import ApiKey, Balance, LedgerEntry, Merchant
from tests.conftest import ADDRESS
from tests.reports.conftest import PASSWORD, accountants_group

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(os.environ.get("SCREENSHOTS_DIR", ROOT / "artifacts" / "screenshots"))
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
VIEWPORTS = {"desktop": (1366, 768), "phone": (390, 844)}
UNIT = "kYbc5KGKB/KnjynYePEF4cpumKmOz22xVKSVWbmtZ0M="
# A number in exponent notation as Decimal or float would print it: 0E-8, 6.3e-06, 1E+3;
# not a piece of a UUID or a unit ("…-432e-4742-…"), which hex digits and dashes surround.
EXPONENT = re.compile(r"(?<![\w.-])\d+(?:\.\d+)?[eE][-+]\d+(?![\w-])")

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module (starting one costs about a second)."""
    if not os.path.exists(CHROMIUM):
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail(f"{CHROMIUM} is missing and REQUIRE_BROWSER is set.")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; Django refuses ORM calls
    # from a thread with a running loop unless told that this is a test.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as p:
            chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                yield chromium
            finally:
                chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def _purchase(merchant: Merchant, order_id: str, status: str, **fields: Any) -> Purchase:
    values: dict[str, Any] = {
        "customer": "customer@example.com",
        "address": ADDRESS,
        "currency": "EUR",
        "amount_minor": 749_995_000,
        "requested_percentage": Decimal("1.5"),
        "percentage": Decimal("1.5"),
        "status": status,
        "attempts": 1,
        "description": "A long description of what was bought, to see how the page wraps it",
    }
    values.update(fields)
    return Purchase.objects.create(merchant=merchant, order_id=order_id, **values)


def build_world() -> dict[str, Any]:
    """Several merchants, every status, attempts with answers, webhooks, keys and alerts."""
    admin = User.objects.create_superuser("root", "root@example.com", PASSWORD)
    accountant = User.objects.create_user("counter", password=PASSWORD, is_staff=True)
    accountant.groups.add(accountants_group())
    now = timezone.now()
    shops = []
    for n, name in enumerate(["Corner Shop", "Alpine Outdoor Equipment and Travel", "Café 7"]):
        shop = Merchant.objects.create(
            public_id=f"shop-{n}",
            name=name,
            default_percentage=Decimal("1.5"),
            max_percentage=Decimal("10"),
            webhook_url=f"https://hooks.example.com/{n}/cashback",
        )
        shop.rotate_webhook_secret()
        shop.save()
        ledger.record_entry(shop, "deposit", Decimal("7499950.00"), "EUR", user=admin)
        ledger.record_entry(shop, "deposit", Decimal("0.00099370"), "BTC", user=admin)
        ledger.record_entry(shop, "withdrawal", Decimal("0.00099370"), "BTC", user=admin)
        ledger.record_entry(shop, "deposit", Decimal("12.5"), "GBYTE", memo="wire 2026-11")
        ApiKey.issue(shop, name="checkout")
        ApiKey.issue(shop, name="expired", expires_at=now - timedelta(days=1))
        shops.append(shop)
    main = shops[0]
    purchases = {}
    for status in Status.values:
        purchases[status] = _purchase(
            main,
            f"A-{1000 + len(purchases)}",
            status,
            cashback_amount=7_499_950_000 if status == Status.SENT else None,
            unit=UNIT if status == Status.SENT else None,
            error="HTTP 502 from upstream" if status in (Status.UNKNOWN, Status.FAILED) else "",
            sent_at=now if status == Status.SENT else None,
        )
    _purchase(shops[1], "B-1", Status.SENT, currency="BTC", amount_minor=630, cashback_amount=6)
    _purchase(shops[2], "C-1", Status.PENDING, currency="GBYTE", amount_minor=10**9)
    unknown = purchases[Status.UNKNOWN]
    Attempt.objects.create(
        purchase=unknown,
        number=1,
        started_at=now - timedelta(minutes=5),
        duration_ms=10_000,
        outcome="ambiguous",
        error="read timeout after 10 s",
    )
    Attempt.objects.create(
        purchase=unknown,
        number=2,
        started_at=now,
        duration_ms=180,
        http_status=200,
        outcome="ok",
        response_excerpt='{"result":"ok","cashback_amount":7499950000,"unit":"' + UNIT + '"}',
        cashback_amount="7499950000",
        unit=UNIT,
        applied=False,
    )
    PurchaseAction.objects.create(
        purchase=purchases[Status.REJECTED],
        user=admin,
        action="mark_rejected",
        status_before="unknown",
        status_after="rejected",
        note="no such order upstream",
    )
    delivery = WebhookDelivery.objects.create(
        purchase=purchases[Status.SENT],
        merchant=main,
        event="purchase.sent",
        payload={"order_id": "A-1002", "status": "sent", "cashback_amount": 7499950000},
        next_attempt_at=now,
        state=WebhookDelivery.State.FAILED,
        attempts=12,
        last_status=500,
        last_error="HTTP 500: upstream of the merchant is down",
    )
    alert = Alert.objects.create(
        kind=Alert.Kind.AUTH_FAILED,
        message="Upstream refused the partner credentials: check CASHBACK_PARTNER_KEY",
        first_seen=now,
        last_seen=now,
    )
    event = record(admin, "change", main, {"name": ["Corner", "Corner Shop"]})
    return {
        "admin": admin,
        "accountant": accountant,
        "merchant": main,
        "unknown": unknown,
        "sent": purchases[Status.SENT],
        "delivery": delivery,
        "alert": alert,
        "event": event,
        "key": ApiKey.objects.filter(merchant=main).first(),
        "balance": Balance.objects.filter(merchant=main).first(),
        "entry": LedgerEntry.objects.filter(merchant=main).first(),
        "attempt": Attempt.objects.filter(purchase=unknown).first(),
        "action": PurchaseAction.objects.first(),
    }


def pages(world: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Return (name, path, the permission it needs) of every admin page, one object each."""
    m, u = world["merchant"].pk, world["unknown"].pk
    purchase = "/admin/cashback/purchase"
    out = [
        ("index", "/admin/", ""),
        ("payouts", "/admin/payouts/?period=this_month", "cashback.export_payouts"),
        (
            "payouts-empty",
            "/admin/payouts/?period=custom&start=2020-01-01&end=2020-01-31",
            "cashback.export_payouts",
        ),
        ("merchant-add", "/admin/merchants/merchant/add/", "merchants.add_merchant"),
        ("ledger-add", "/admin/merchants/ledgerentry/add/", "merchants.add_ledgerentry"),
        (
            "record-entry",
            f"/admin/merchants/merchant/{m}/record-entry/",
            "merchants.add_ledgerentry",
        ),
        ("merchant-history", f"/admin/merchants/merchant/{m}/history/", "merchants.view_merchant"),
        ("purchase-history", f"{purchase}/{u}/history/", "cashback.view_purchase"),
        ("retry", f"{purchase}/{u}/retry/", "cashback.change_purchase"),
        ("mark-sent", f"{purchase}/{u}/mark-sent/", "cashback.change_purchase"),
        ("mark-rejected", f"{purchase}/{u}/mark-rejected/", "cashback.change_purchase"),
        (
            "ledger-of-merchant",
            f"/admin/merchants/ledgerentry/?merchant__id__exact={m}",
            "merchants.view_ledgerentry",
        ),
        ("purchases-unknown", f"{purchase}/?status__exact=unknown", "cashback.view_purchase"),
        # A missing purchase: 404 for who may reconcile, 403 before that for who may not.
        ("not-found", f"{purchase}/999999/retry/", "cashback.change_purchase"),
    ]
    for model, key in [
        ("merchants/merchant", "merchant"),
        ("merchants/apikey", "key"),
        ("merchants/balance", "balance"),
        ("merchants/ledgerentry", "entry"),
        ("cashback/purchase", "unknown"),
        ("cashback/attempt", "attempt"),
        ("cashback/purchaseaction", "action"),
        ("cashback/webhookdelivery", "delivery"),
        ("cashback/alert", "alert"),
        ("audit/auditevent", "event"),
    ]:
        app, slug = model.split("/")
        perm = f"{app}.view_{slug}"
        out.append((f"{slug}-list", f"/admin/{model}/", perm))
        out.append((f"{slug}-page", f"/admin/{model}/{world[key].pk}/change/", perm))
    return out


CHECKS = """() => {
  const doc = document.documentElement;
  const sheets = [...document.querySelectorAll('link[rel=stylesheet]')].map(l => l.href);
  return {
    overflow: doc.scrollWidth - window.innerWidth,
    widest: [...document.querySelectorAll('body *')]
      .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1
                   && !e.closest('.scroll-x, .results, .tabular, svg, #toggle-nav-sidebar, #nav-sidebar'))
      .slice(0, 3).map(e => e.tagName + '#' + e.id + '.' + e.className),
    // A list that scrolls inside its box at desktop size hides its right-hand columns.
    hidden: [...document.querySelectorAll('#changelist .results')]
      .map(e => e.scrollWidth - e.clientWidth).filter(d => d > 1),
    styled: sheets.some(h => h.includes('admin/css/base.css')) && !!document.querySelector('#header'),
    text: document.body.innerText,
  };
}"""


def walk(browser: Any, live_server: Any, user: User, role: str, world: dict[str, Any]) -> list[str]:
    """Open every page at both sizes as `user`; return the problems found."""
    problems: list[str] = []
    if role == "accountant":
        # The accountant must meet refusals too: they are part of what is checked.
        assert not user.has_perm("cashback.change_purchase")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for size, (width, height) in VIEWPORTS.items():
        context = browser.new_context(viewport={"width": width, "height": height})
        try:
            page = context.new_page()
            page.goto(f"{live_server.url}/admin/login/?next=/admin/")
            page.fill("#id_username", user.get_username())
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            page.wait_for_selector("#content")
            for name, path, perm in pages(world):
                response = page.goto(f"{live_server.url}{path}")
                status = response.status if response is not None else 0
                # Who lacks the permission gets the styled 403, never a 500.
                allowed = not perm or user.has_perm(perm)
                expected = (404 if name == "not-found" else 200) if allowed else 403
                if status != expected:
                    problems.append(f"{role} {size} {name}: HTTP {status}, expected {expected}")
                found = page.evaluate(CHECKS)
                where = f"{role} {size} {name}"
                if found["overflow"] > 1:
                    problems.append(
                        f"{where}: page {found['overflow']} px too wide {found['widest']}"
                    )
                if size == "desktop" and found["hidden"]:
                    problems.append(f"{where}: list columns hidden {found['hidden']} px")
                if not found["styled"]:
                    problems.append(f"{where}: unstyled page")
                for match in EXPONENT.findall(found["text"]):
                    problems.append(f"{where}: exponent amount {match}")
                page.screenshot(path=str(SCREENSHOTS / f"{role}-{size}-{name}.png"))
        finally:
            context.close()
    return problems


def test_every_admin_page_as_an_admin_at_desktop_and_phone_sizes(
    browser: Any, live_server: Any, settings: Any
) -> None:
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    world = build_world()

    problems = walk(browser, live_server, world["admin"], "admin", world)
    assert problems == [], "\n".join(problems)


def test_every_admin_page_as_an_accountant_at_desktop_and_phone_sizes(
    browser: Any, live_server: Any, settings: Any
) -> None:
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    world = build_world()

    problems = walk(browser, live_server, world["accountant"], "accountant", world)
    assert problems == [], "\n".join(problems)


def test_reconcile_in_the_browser_from_unknown_to_sent_with_the_amount_pre_filled(
    browser: Any, live_server: Any, settings: Any
) -> None:
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    world = build_world()
    unknown = world["unknown"]
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    try:
        page = context.new_page()
        page.goto(f"{live_server.url}/admin/login/?next=/admin/")
        page.fill("#id_username", "root")
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.click("#needs-attention a[href*='status__exact=unknown']")
        page.click(f"text={unknown.order_id}")
        page.click("#button-retry")
        assert "Upstream already answered OK to attempt 2" in page.inner_text("#retry-risk")
        page.screenshot(path=str(SCREENSHOTS / "flow-retry-confirm.png"), full_page=True)
        page.click("#retry-risk a")
        assert page.input_value("#id_cashback_amount") == "7499950000"
        assert page.input_value("#id_unit") == UNIT
        page.screenshot(path=str(SCREENSHOTS / "flow-mark-sent.png"), full_page=True)
        page.fill("#id_note", "seen in the explorer")
        page.click("input[name=apply]")
        page.wait_for_selector(".messagelist")
        assert "mark sent done; status unknown → sent." in page.inner_text(".messagelist")

        # A one-time secret gets a copy button from the site's own script, under the CSP.
        refused: list[str] = []
        page.on(
            "console", lambda m: refused.append(m.text) if "Content Security" in m.text else None
        )
        page.goto(f"{live_server.url}/admin/merchants/merchant/")
        page.check(f"input[name=_selected_action][value='{world['merchant'].pk}']")
        page.select_option("select[name=action]", "rotate_webhook_secret")
        page.click("button[name=index]")
        page.wait_for_selector("code.one-time-secret + button.copy-secret")
        assert page.inner_text("button.copy-secret") == "Copy"
        page.click("button.copy-secret")
        assert refused == []
    finally:
        context.close()
    unknown.refresh_from_db()
    assert (unknown.status, unknown.cashback_amount, unknown.unit) == ("sent", 7_499_950_000, UNIT)
