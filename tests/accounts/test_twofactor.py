"""Two-factor sign-in for staff: enrolment, the code beside the password, lockout, audit."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.models import User
from django.test import Client
from django_otp.oath import TOTP
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice
from prometheus_client import REGISTRY

from audit.models import AuditEvent

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery-staple"
WRONG = "The authentication code is wrong or missing."


@pytest.fixture(autouse=True)
def _two_factor_on(settings: Any) -> None:
    settings.ADMIN_REQUIRE_2FA = True
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    # django-otp's own delay after a wrong code (1 s, doubling) would refuse the right code
    # typed straight after it; axes' lockout is what these tests prove.
    settings.OTP_TOTP_THROTTLE_FACTOR = 0
    settings.OTP_STATIC_THROTTLE_FACTOR = 0


@pytest.fixture
def staff() -> User:
    return User.objects.create_user("ops", password=PASSWORD, is_staff=True, is_superuser=True)


def code_of(device: TOTPDevice) -> str:
    return (
        f"{TOTP(device.bin_key, device.step, device.t0, device.digits).token():0{device.digits}d}"
    )


def wrong_code(device: TOTPDevice) -> str:
    return f"{(int(code_of(device)) + 1) % 10**device.digits:0{device.digits}d}"


def enrolled(user: User) -> TOTPDevice:
    return TOTPDevice.objects.create(user=user, name="app", confirmed=True)


def failures(username: str = "ops") -> int:
    return sum(a.failures_since_start for a in AccessAttempt.objects.filter(username=username))


def audit_actions(user: User) -> list[tuple[str, dict[str, Any]]]:
    return [
        (e.action, e.changes)
        for e in AuditEvent.objects.filter(
            object_type="auth.user", object_id=str(user.pk)
        ).order_by("id")
    ]


def login(client: Client, code: str = "", username: str = "ops") -> Any:
    return client.post(
        "/admin/login/?next=/admin/",
        {"username": username, "password": PASSWORD, "otp_token": code, "next": "/admin/"},
    )


def metric(step: str) -> float:
    return REGISTRY.get_sample_value("cashback_admin_login_failures_total", {"step": step}) or 0.0


def test_staff_without_a_device_is_sent_to_enrolment_and_confirms_with_a_code(staff: User) -> None:
    client = Client()
    response = login(client)
    assert (response.status_code, response["Location"]) == (302, "/admin/")
    response = client.get("/admin/")
    assert (response.status_code, response["Location"]) == (302, "/admin/2fa/setup/?next=/admin/")
    assert client.get("/admin/cashback/purchase/")["Location"].startswith("/admin/2fa/setup/")

    page = client.get("/admin/2fa/setup/?next=/admin/").content.decode()
    secret = re.search(r'<code id="totp-secret">([A-Z2-7=]+)</code>', page).group(1)  # type: ignore[union-attr]
    assert "<svg" in page
    device = TOTPDevice.objects.get(user=staff, confirmed=False)
    assert base64.b32decode(secret) == device.bin_key

    before = metric("second_factor")
    response = client.post(
        "/admin/2fa/setup/", {"otp_token": wrong_code(device), "next": "/admin/"}
    )
    assert response.status_code == 200
    assert WRONG in response.content.decode()
    assert failures() == 1
    assert metric("second_factor") == before + 1
    assert client.get("/admin/")["Location"].startswith("/admin/2fa/setup/")

    response = client.post("/admin/2fa/setup/", {"otp_token": code_of(device), "next": "/admin/"})
    assert response.status_code == 200
    codes = re.findall(r"<li><code>([a-z0-9]+)</code></li>", response.content.decode())
    assert len(codes) == 10 and len(set(codes)) == 10
    assert sorted(
        StaticToken.objects.filter(device__user=staff).values_list("token", flat=True)
    ) == sorted(codes)
    device.refresh_from_db()
    assert device.confirmed
    assert failures() == 0  # a complete sign-in forgets its failures
    assert client.get("/admin/").status_code == 200
    assert audit_actions(staff) == [
        ("2fa_failed", {"step": [None, "enrolment"]}),
        (
            "2fa_enrolled",
            {"backup_codes": [None, 10], "device": [None, device.persistent_id]},
        ),
    ]


def test_a_device_owner_needs_the_code_beside_the_password(staff: User) -> None:
    device = enrolled(staff)
    client = Client()
    response = login(client)  # no code
    assert response.status_code == 200
    assert WRONG in response.content.decode()
    response = login(client, wrong_code(device))
    assert WRONG in response.content.decode()
    assert failures() == 2
    assert client.get("/admin/")["Location"].startswith("/admin/login/")

    response = login(client, code_of(device))
    assert (response.status_code, response["Location"]) == (302, "/admin/")
    assert client.get("/admin/").status_code == 200
    assert failures() == 0  # a complete sign-in resets the count, as for passwords
    assert [a for a, _ in audit_actions(staff)] == ["2fa_failed", "2fa_failed", "2fa_verified"]


def test_wrong_codes_lock_the_account_out_like_wrong_passwords(staff: User, settings: Any) -> None:
    settings.AXES_FAILURE_LIMIT = 3
    device = enrolled(staff)
    client = Client()
    for _ in range(2):
        assert WRONG in login(client, wrong_code(device)).content.decode()
    locked = login(client, wrong_code(device))
    assert locked.status_code == 429
    # Locked out: even the right password and code are refused now.
    assert login(client, code_of(device)).status_code == 429
    assert client.get("/admin/")["Location"].startswith("/admin/login/")
    assert [a for a, _ in audit_actions(staff)] == ["2fa_failed"] * 3


def test_a_backup_code_signs_in_once(staff: User) -> None:
    enrolled(staff)
    backup = StaticDevice.objects.create(user=staff, name="backup codes", confirmed=True)
    backup.token_set.create(token="backup12")
    assert login(Client(), "backup12").status_code == 302
    assert WRONG in login(Client(), "backup12").content.decode()


def test_a_session_from_before_2fa_is_asked_for_the_code(staff: User) -> None:
    device = enrolled(staff)
    client = Client()
    client.force_login(staff)  # signed in by password only
    response = client.get("/admin/merchants/merchant/")
    assert response["Location"] == "/admin/2fa/verify/?next=/admin/merchants/merchant/"
    response = client.post("/admin/2fa/verify/", {"otp_token": wrong_code(device)})
    assert WRONG in response.content.decode()
    assert failures() == 1
    response = client.post(
        "/admin/2fa/verify/", {"otp_token": code_of(device), "next": "/admin/merchants/merchant/"}
    )
    assert response["Location"] == "/admin/merchants/merchant/"
    assert client.get("/admin/merchants/merchant/").status_code == 200
    assert failures() == 0


def test_the_next_parameter_never_leaves_the_site(staff: User) -> None:
    device = enrolled(staff)
    client = Client()
    client.force_login(staff)
    response = client.post(
        "/admin/2fa/verify/", {"otp_token": code_of(device), "next": "https://evil.example/"}
    )
    assert response["Location"] == "/admin/"


def test_with_2fa_off_the_password_is_enough(staff: User, settings: Any) -> None:
    settings.ADMIN_REQUIRE_2FA = False
    enrolled(staff)
    client = Client()
    assert login(client).status_code == 302
    assert client.get("/admin/").status_code == 200


def test_second_factor_pages_need_a_staff_session() -> None:
    response = Client().get("/admin/2fa/setup/")
    assert response["Location"] == "/admin/login/?next=/admin/2fa/setup/"
    client = Client()
    client.force_login(User.objects.create_user("shopper", password=PASSWORD))
    assert client.get("/admin/2fa/verify/")["Location"].startswith("/admin/login/")


def test_setup_demo_prints_a_one_use_code_for_the_demo_admin(monkeypatch: Any) -> None:
    from io import StringIO

    from django.core.management import call_command

    monkeypatch.setenv("DEMO_ADMIN_PASSWORD", PASSWORD)

    def demo_code() -> str:
        out = StringIO()
        call_command("setup_demo", stdout=out)
        found = re.search(
            r"authentication code ([a-z0-9]+) \(one use, new each run\)", out.getvalue()
        )
        assert found, out.getvalue()
        return found.group(1)

    first, second = demo_code(), demo_code()
    assert first != second
    assert WRONG in login(Client(), first, username="admin").content.decode()  # replaced
    client = Client()
    assert login(client, second, username="admin").status_code == 302
    assert client.get("/admin/").status_code == 200
    assert WRONG in login(Client(), second, username="admin").content.decode()  # used up
