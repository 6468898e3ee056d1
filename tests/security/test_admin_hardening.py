"""Admin: login lockouts by user name and address together; one-time secrets stay server-side."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from merchants.forms import ApiKeyIssueForm
from merchants.models import Merchant
from tests.admin.conftest import RAW_KEY, change_form_data, inline_prefix

SESSION_KEY = re.compile(r"[a-z0-9]{32}")


@pytest.fixture
def boss(db: None, plain_static: None, settings: Any) -> User:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed
    return User.objects.create_superuser("boss", "boss@example.com", "right-password-123")


def _login(address: str, username: str, password: str) -> Any:
    client = Client(REMOTE_ADDR=address)
    response = client.post(
        "/admin/login/?next=/admin/", {"username": username, "password": password}
    )
    return response, client


def test_failures_from_one_address_do_not_lock_the_user_out_elsewhere(boss: User) -> None:
    failures = [_login("192.0.2.1", "boss", f"wrong-{n}")[0].status_code for n in range(10)]
    locked, _ = _login("192.0.2.1", "boss", "right-password-123")
    elsewhere, client = _login("192.0.2.2", "boss", "right-password-123")

    assert failures == [200] * 9 + [429]
    assert locked.status_code == 429
    assert (elsewhere.status_code, elsewhere["Location"]) == (302, "/admin/")
    assert client.session["_auth_user_id"] == str(boss.pk)


def test_failures_for_one_user_name_do_not_lock_another_user_at_that_address(boss: User) -> None:
    User.objects.create_superuser("ops", "ops@example.com", "ops-password-123")
    for n in range(10):
        _login("192.0.2.1", "mallory", f"wrong-{n}")

    still_locked, _ = _login("192.0.2.1", "mallory", "anything")
    other, _ = _login("192.0.2.1", "ops", "ops-password-123")
    boss_there, _ = _login("192.0.2.1", "boss", "right-password-123")

    assert still_locked.status_code == 429
    assert other.status_code == 302
    assert boss_there.status_code == 302


def _cookies(response: Any) -> dict[str, str]:
    return {name: morsel.value for name, morsel in response.cookies.items()}


def test_a_new_api_key_never_travels_in_a_cookie_and_is_shown_once(
    admin_client: Client, plain_static: None, shop: Any
) -> None:
    url = f"/admin/merchants/merchant/{shop.merchant.pk}/change/"
    page = admin_client.get(url)
    data = change_form_data(page)
    prefix = inline_prefix(page, ApiKeyIssueForm)
    data.update(
        {
            f"{prefix}-TOTAL_FORMS": "1",
            f"{prefix}-0-name": "till 2",
            f"{prefix}-0-merchant": str(shop.merchant.pk),
        }
    )

    saved = admin_client.post(url, data)
    shown = admin_client.get(saved["Location"])
    again = admin_client.get(saved["Location"])

    assert saved.status_code == 302
    keys = RAW_KEY.findall(shown.content.decode())
    assert len(keys) == 1
    raw = keys[0]
    secret_part = raw[len("cbk_") + 10 :]
    for response in (saved, shown, again):
        cookies = _cookies(response)
        # Only the session id and the CSRF token: no `messages` cookie, signed or not.
        assert set(cookies) <= {"sessionid", "csrftoken"}, cookies
        assert all(secret_part[:12] not in value for value in cookies.values())
    session_cookie = admin_client.cookies["sessionid"].value
    assert SESSION_KEY.fullmatch(session_cookie)
    assert RAW_KEY.findall(again.content.decode()) == []


def test_a_new_webhook_secret_never_travels_in_a_cookie(
    admin_client: Client, plain_static: None, shop: Any
) -> None:
    url = f"/admin/merchants/merchant/{shop.merchant.pk}/change/"
    data = change_form_data(admin_client.get(url))
    data["webhook_url"] = "http://127.0.0.1:9/hook"

    saved = admin_client.post(url, data)
    shown = admin_client.get(saved["Location"])

    secret = Merchant.objects.get(pk=shop.merchant.pk).webhook_secret
    assert secret.startswith("whsec_")
    assert shown.content.decode().count(secret) == 1
    for response in (saved, shown):
        cookies = _cookies(response)
        assert set(cookies) <= {"sessionid", "csrftoken"}, cookies
        assert all(secret[6:18] not in value for value in cookies.values())
    assert secret not in admin_client.get(url).content.decode()
