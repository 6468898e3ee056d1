"""Production settings: `check --deploy` is clean, the app refuses unsafe configurations
with a message that says what to set, and admin and docs pages carry a CSP."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path
from typing import Any

import pytest

from gateway.middleware import CSP
from tests.security.conftest import clean_env, manage


def production_env(**overrides: str) -> dict[str, str]:
    env = {
        "SECRET_KEY": secrets.token_urlsafe(50),
        "SECURE_HSTS_SECONDS": "31536000",
        "SECURE_SSL_REDIRECT": "on",
        "ALLOWED_HOSTS": "gateway.example.com",
        "CASHBACK_PARTNER": "acme-processor",
        "CASHBACK_PARTNER_KEY": secrets.token_urlsafe(24),
    }
    return clean_env(**(env | overrides))


def test_check_deploy_is_clean_with_a_production_environment() -> None:
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env())

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "System check identified no issues (1 silenced)."


SECRET_MISSING = (
    "SECRET_KEY is not set. Set SECRET_KEY to a long random string "
    "(`make run` writes one into .env), or set DEBUG=on for development."
)
SECRET_WEAK = (
    "SECRET_KEY is a known development key or shorter than 32 characters. "
    "Set SECRET_KEY to a long random string."
)
NO_CREDENTIALS = (
    "Partner credentials are not configured. Set CASHBACK_PARTNER and "
    "CASHBACK_PARTNER_KEY (or CASHBACK_PARTNER_KEY_FILE), or set CASHBACK_SANDBOX=on "
    "to use the local sandbox upstream."
)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"SECRET_KEY": ""}, SECRET_MISSING),
        ({"SECRET_KEY": "insecure-development-key"}, SECRET_WEAK),
        ({"SECRET_KEY": "django-insecure-change-me"}, SECRET_WEAK),
        ({"SECRET_KEY": "short-key"}, SECRET_WEAK),
        ({"CASHBACK_PARTNER_KEY": ""}, NO_CREDENTIALS),
        ({"CASHBACK_PARTNER": ""}, NO_CREDENTIALS),
    ],
    ids=["no-secret", "dev-key", "django-placeholder", "short-key", "no-key", "no-partner"],
)
def test_the_app_refuses_to_start_and_says_what_to_set(
    overrides: dict[str, str], message: str
) -> None:
    result = manage("check", env=production_env(**overrides))

    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line == f"django.core.exceptions.ImproperlyConfigured: {message}"


def test_debug_may_run_without_a_secret_key_and_sandbox_without_credentials() -> None:
    result = manage(
        "check",
        env=clean_env(SECRET_KEY="", DEBUG="on", CASHBACK_SANDBOX="on"),
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "System check identified no issues (0 silenced)."


def test_partner_key_is_read_from_the_file_named_by_the_environment(tmp_path: Path) -> None:
    key_file = tmp_path / "partner_key"
    key = secrets.token_urlsafe(24)
    key_file.write_text(key + "\n")  # container secrets often end with a newline
    env = production_env(CASHBACK_PARTNER_KEY="", CASHBACK_PARTNER_KEY_FILE=str(key_file))

    result = manage(
        "shell",
        "-c",
        "from django.conf import settings; import hashlib; "
        "print(hashlib.sha256(settings.CASHBACK_PARTNER_KEY.encode()).hexdigest())",
        env=env,
    )

    assert result.returncode == 0, result.stderr
    # The key itself is never printed, not even here: its digest proves it was read.
    assert result.stdout.strip().splitlines()[-1] == hashlib.sha256(key.encode()).hexdigest()
    assert key not in result.stdout + result.stderr


def test_an_unreadable_partner_key_file_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    env = production_env(CASHBACK_PARTNER_KEY="", CASHBACK_PARTNER_KEY_FILE=str(missing))

    result = manage("check", env=env)

    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "django.core.exceptions.ImproperlyConfigured: "
        f"CASHBACK_PARTNER_KEY_FILE={missing} cannot be read (No such file or directory)."
    )


@pytest.mark.parametrize("path", ["/admin/login/", "/api/docs/"])
def test_admin_and_docs_pages_carry_a_content_security_policy(
    client: Any, plain_static: None, path: str
) -> None:
    response = client.get(path)

    assert response.status_code == 200
    assert response["Content-Security-Policy"] == CSP
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"


def test_api_answers_carry_no_page_policy_but_still_nosniff(client: Any, db: None) -> None:
    response = client.get("/api/v1/balance")

    assert response.status_code == 401
    assert "Content-Security-Policy" not in response
    assert response["X-Content-Type-Options"] == "nosniff"
