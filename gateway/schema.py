"""Shared pieces of the OpenAPI description."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers

ErrorSerializer = inline_serializer(
    "Error",
    fields={"detail": serializers.CharField(help_text="What went wrong, for a person.")},
)

ERROR_RESPONSES = {
    400: OpenApiResponse(
        ErrorSerializer, "Invalid input; field errors are keyed by field. Nothing was stored."
    ),
    401: OpenApiResponse(ErrorSerializer, "Missing or invalid API key."),
    403: OpenApiResponse(ErrorSerializer, "The merchant is disabled."),
    404: OpenApiResponse(ErrorSerializer, "Not found."),
    409: OpenApiResponse(
        ErrorSerializer, "The order id was seen with different fields, or the unit is reused."
    ),
    402: OpenApiResponse(
        ErrorSerializer, "The deposit does not cover the partner percentage (policy reject)."
    ),
    413: OpenApiResponse(ErrorSerializer, "Body over 64 KiB."),
    429: OpenApiResponse(ErrorSerializer, "Throttled; see Retry-After."),
}
