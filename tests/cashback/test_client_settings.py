"""Upstream timeouts that would break the deadline-inside-the-lease rule refuse to start."""

from __future__ import annotations

import pytest

from tests.security.conftest import clean_env, manage

MESSAGE = (
    "django.core.exceptions.ImproperlyConfigured: CASHBACK_TIMEOUT and "
    "CASHBACK_CONNECT_TIMEOUT must be positive and CASHBACK_LEASE_MARGIN at least 1 second."
)


@pytest.mark.parametrize(
    "overrides",
    [
        {"CASHBACK_TIMEOUT": "0"},
        {"CASHBACK_LEASE_MARGIN": "0.2"},
    ],
)
def test_a_timeout_or_lease_margin_that_cannot_hold_refuses_to_start(
    overrides: dict[str, str],
) -> None:
    result = manage("check", env=clean_env(CASHBACK_SANDBOX="on", **overrides))

    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == MESSAGE


def test_the_smallest_allowed_values_start() -> None:
    env = clean_env(
        CASHBACK_SANDBOX="on",
        CASHBACK_TIMEOUT="0.1",
        CASHBACK_CONNECT_TIMEOUT="0.1",
        CASHBACK_LEASE_MARGIN="1",
    )
    result = manage("check", env=env)

    assert result.returncode == 0, result.stderr
