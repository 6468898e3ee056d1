"""A new staff member signs in for the first time in a real browser (Debian's Chromium):
sent to enrolment, a wrong code refused and counted, the right one gets in; next time the
code is asked beside the password."""

from __future__ import annotations

from typing import Any

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.models import User
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit.models import AuditEvent
from tests.reports.test_browser import ARTIFACTS, CHROMIUM_ARGS, chromium_path  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct-horse-battery-staple"
WRONG = "The authentication code is wrong or missing."


def failures() -> int:
    return sum(a.failures_since_start for a in AccessAttempt.objects.filter(username="newops"))


def test_first_sign_in_enrols_an_authenticator_then_asks_for_codes(
    chromium_path: str,  # noqa: F811
    live_server: Any,
    settings: Any,
    monkeypatch: Any,
) -> None:
    settings.ADMIN_REQUIRE_2FA = True
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    settings.OTP_TOTP_THROTTLE_FACTOR = 0
    settings.OTP_STATIC_THROTTLE_FACTOR = 0
    user = User.objects.create_user("newops", password=PASSWORD, is_staff=True, is_superuser=True)

    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
            page.goto(f"{live_server.url}/admin/login/?next=/admin/")
            page.fill("#id_username", "newops")
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            page.wait_for_selector("#totp-secret")
            assert page.url == f"{live_server.url}/admin/2fa/setup/?next=/admin/"
            assert page.locator("#totp-qr svg").count() == 1
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "2fa-enrolment.png"), full_page=True)
            device = TOTPDevice.objects.get(user=user, confirmed=False)
            totp = TOTP(device.bin_key, device.step, device.t0, device.digits)
            right = f"{totp.token():06d}"
            wrong = f"{(int(right) + 1) % 1_000_000:06d}"

            page.fill("#id_otp_token", wrong)
            page.click("#totp-form input[type=submit]")
            page.wait_for_selector(f"text={WRONG}")
            assert failures() == 1

            page.fill("#id_otp_token", right)
            page.click("#totp-form input[type=submit]")
            page.wait_for_selector("#backup-codes")
            codes = page.locator("#backup-codes code").all_inner_texts()
            assert len(codes) == 10
            page.click("#continue")
            page.wait_for_selector("#site-name")
            assert page.url == f"{live_server.url}/admin/"
            assert "Site administration" in page.content()

            # Signed out and back: the code goes beside the password. A wrong one is
            # refused and counted; a backup code (the app's code was just used) gets in.
            page.click("#logout-form button[type=submit]")
            page.wait_for_url(f"{live_server.url}/admin/logout/")
            page.goto(f"{live_server.url}/admin/login/?next=/admin/")
            page.fill("#id_username", "newops")
            page.fill("#id_password", PASSWORD)
            page.fill("#id_otp_token", wrong)
            page.click("input[type=submit]")
            page.wait_for_selector("#login-error")
            assert page.inner_text("#login-error") == WRONG
            assert failures() == 1  # the enrolment's failure was reset by the full sign-in
            page.fill("#id_password", PASSWORD)
            page.fill("#id_otp_token", codes[0])
            page.click("input[type=submit]")
            page.wait_for_selector("#site-name")
            assert page.url == f"{live_server.url}/admin/"
        finally:
            browser.close()

    actions = list(
        AuditEvent.objects.filter(object_id=str(user.pk), object_type="auth.user")
        .order_by("id")
        .values_list("action", flat=True)
    )
    assert actions == ["2fa_failed", "2fa_enrolled", "2fa_failed", "2fa_verified"]
