"""The one exception handler: every error is JSON with a `detail`."""

from __future__ import annotations

from django.db import OperationalError

from gateway.exceptions import Conflict, exception_handler


def test_a_database_outage_is_503_with_retry_after_not_500() -> None:
    response = exception_handler(OperationalError("connection refused"), {})

    assert response is not None
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response.data == {"detail": "The gateway cannot reach its database; retry later."}


def test_domain_errors_carry_their_status_code_and_extra_fields() -> None:
    response = exception_handler(Conflict("taken", extra={"fields": ["order_id"]}), {})

    assert response is not None
    assert response.status_code == 409
    assert response.data == {"detail": "taken", "code": "conflict", "fields": ["order_id"]}
