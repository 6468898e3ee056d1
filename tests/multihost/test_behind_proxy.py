"""Behind a load balancer every request comes from the balancer's address: admin login
lockouts must count the client it forwards for (NUM_PROXIES), and only when told to."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.django_db

BALANCER = "10.0.0.2"


@pytest.fixture(autouse=True)
def fast_admin_pages(settings: Any) -> None:
    """Render admin pages without a collectstatic manifest; hash passwords quickly."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture
def boss(django_user_model: Any) -> Any:
    return django_user_model.objects.create_superuser("boss", "boss@example.com", "right-pw-123")


def login(client: Any, username: str, password: str, forwarded_for: str) -> int:
    response = client.post(
        "/admin/login/?next=/admin/",
        {"username": username, "password": password},
        REMOTE_ADDR=BALANCER,
        HTTP_X_FORWARDED_FOR=forwarded_for,
    )
    return response.status_code


def test_behind_one_proxy_a_guessing_client_does_not_lock_out_other_admins(
    client: Any, settings: Any, boss: Any
) -> None:
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}

    # Lockouts count a user name at an address (AXES_LOCKOUT_PARAMETERS): the guesser's
    # failures for "boss" lock "boss" at the guesser's address only.
    guesses = [login(client, "boss", f"wrong-{n}", "203.0.113.9") for n in range(10)]
    admin = login(client, "boss", "right-pw-123", "198.51.100.7")
    again = login(client, "boss", "right-pw-123", "203.0.113.9")

    assert guesses == [200] * 9 + [429]
    assert admin == 302
    assert again == 429


def test_without_a_proxy_a_forged_forwarded_for_does_not_dodge_the_lockout(
    client: Any, settings: Any, boss: Any
) -> None:
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 0}

    # Every failure counts against the balancer's address, whatever X-Forwarded-For says.
    guesses = [login(client, "boss", f"wrong-{n}", f"203.0.113.{n}") for n in range(10)]
    admin = login(client, "boss", "right-pw-123", "198.51.100.7")

    assert guesses == [200] * 9 + [429]
    assert admin == 429
