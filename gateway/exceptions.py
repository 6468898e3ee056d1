"""Domain errors and the one DRF exception handler that turns every error into JSON."""

from __future__ import annotations

import logging
from typing import Any

from django import db
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


class DomainError(Exception):
    """An error the API answers with a code, an HTTP status and a message for the merchant."""

    code = "error"
    status_code: int = status.HTTP_400_BAD_REQUEST

    def __init__(self, detail: str, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra or {}


class InsufficientDeposit(DomainError):
    code = "insufficient_deposit"
    status_code = status.HTTP_402_PAYMENT_REQUIRED


class Conflict(DomainError):
    code = "conflict"
    status_code = status.HTTP_409_CONFLICT


class InvalidInput(DomainError):
    code = "invalid"
    status_code = status.HTTP_400_BAD_REQUEST


def first_message(errors: Any) -> str:
    """Return a one-line summary of DRF validation errors, e.g. "currency: not a choice"."""
    if isinstance(errors, dict):
        for field, value in errors.items():
            message = first_message(value)
            return message if field in ("non_field_errors", "detail") else f"{field}: {message}"
    if isinstance(errors, list) and errors:
        return first_message(errors[0])
    return str(errors)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Answer domain errors and DRF errors as JSON with a `detail` message."""
    if isinstance(exc, DomainError):
        return Response(
            {"detail": exc.detail, "code": exc.code, **exc.extra}, status=exc.status_code
        )
    if isinstance(exc, db.OperationalError | db.InterfaceError):
        # The database is down or its pool is exhausted: a load balancer should retry
        # elsewhere, and a merchant later. What was stored stays stored.
        logger.exception("database unavailable")
        return Response(
            {"detail": "The gateway cannot reach its database; retry later."},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "5"},
        )
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError) and isinstance(response.data, dict):
        response.data = {"detail": first_message(response.data), **response.data}
    elif isinstance(exc, exceptions.ValidationError):
        response.data = {"detail": first_message(response.data)}
    wait = getattr(exc, "wait", None)  # set by DRF; missing from its stubs
    if isinstance(exc, exceptions.Throttled) and wait is not None:
        response.data = {"detail": "Request was throttled. Retry later.", "retry_after": wait}
    return response
