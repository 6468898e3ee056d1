"""Shared pieces of the OpenAPI description: error bodies, per-endpoint error lists, examples.

Each endpoint lists only the error codes it can really answer (`errors(...)`), so a client
generated from the schema, and schemathesis, see the truth.
"""

from __future__ import annotations

from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    inline_serializer,
)
from rest_framework import serializers

ErrorSerializer = inline_serializer(
    "Error",
    fields={
        "detail": serializers.CharField(help_text="What went wrong, for a person."),
        "code": serializers.CharField(
            required=False,
            help_text="A stable code for domain errors: invalid, conflict, insufficient_deposit.",
        ),
    },
)

ValidationErrorSerializer = inline_serializer(
    "ValidationError",
    fields={
        "detail": serializers.CharField(
            help_text='The first problem as one line, e.g. "currency_amount: EUR amounts have '
            'at most 2 decimal places".'
        ),
    },
)

ConflictSerializer = inline_serializer(
    "ConflictError",
    fields={
        "detail": serializers.CharField(help_text="What conflicts, for a person."),
        "code": serializers.CharField(help_text="Always `conflict`."),
        "fields": serializers.ListField(
            child=serializers.CharField(),
            required=False,
            help_text="The fields that differ from the stored purchase with this order id.",
        ),
    },
)

ThrottledSerializer = inline_serializer(
    "ThrottledError",
    fields={
        "detail": serializers.CharField(),
        "retry_after": serializers.IntegerField(
            required=False, help_text="Seconds to wait, as in the Retry-After header."
        ),
    },
)

_ERRORS: dict[int, OpenApiResponse] = {
    400: OpenApiResponse(
        ValidationErrorSerializer,
        "Invalid input. `detail` summarises the first problem; each invalid field is also a "
        "key whose value lists its messages. Nothing was stored.",
        examples=[
            OpenApiExample(
                "Invalid amount",
                value={
                    "detail": "currency_amount: EUR amounts have at most 2 decimal places",
                    "currency_amount": ["EUR amounts have at most 2 decimal places"],
                },
                response_only=True,
                status_codes=["400"],
            )
        ],
    ),
    401: OpenApiResponse(ErrorSerializer, "Missing or invalid API key."),
    402: OpenApiResponse(
        ErrorSerializer,
        "The deposit does not cover the partner percentage and the merchant's policy is "
        "reject. Nothing was stored; the same order id may be sent again later.",
        examples=[
            OpenApiExample(
                "Deposit too small",
                value={
                    "detail": "The deposit in EUR does not cover 5.00 % partner cashback; "
                    "nothing was stored.",
                    "code": "insufficient_deposit",
                },
                response_only=True,
                status_codes=["402"],
            )
        ],
    ),
    403: OpenApiResponse(ErrorSerializer, "The merchant is disabled."),
    404: OpenApiResponse(ErrorSerializer, "Not found."),
    409: OpenApiResponse(
        ConflictSerializer,
        "The order id was reported before with different fields, or the purchase unit is "
        "used by another order.",
        examples=[
            OpenApiExample(
                "Different fields",
                value={
                    "detail": "order_id 'A-1001' was already reported with different "
                    "currency_amount.",
                    "code": "conflict",
                    "fields": ["currency_amount"],
                },
                response_only=True,
                status_codes=["409"],
            )
        ],
    ),
    413: OpenApiResponse(ErrorSerializer, "Body over 64 KiB."),
    415: OpenApiResponse(ErrorSerializer, "The body is not JSON."),
    429: OpenApiResponse(ThrottledSerializer, "Throttled; see Retry-After."),
}

# What every authenticated endpoint can answer: no key, disabled merchant, throttled.
AUTH_ERRORS = (401, 403, 429)
# What an endpoint that reads a body adds.
BODY_ERRORS = (400, 413, 415)


def errors(*codes: int) -> dict[int, OpenApiResponse]:
    """Return the documented error responses for these status codes, in order."""
    return {code: _ERRORS[code] for code in sorted(set(codes))}


RETRY_AFTER = OpenApiParameter(
    "Retry-After",
    int,
    OpenApiParameter.HEADER,
    response=[429],
    description="Seconds to wait before the next request.",
)

PREFER = OpenApiParameter(
    "Prefer",
    str,
    OpenApiParameter.HEADER,
    enum=["respond-async"],
    description="RFC 7240. `respond-async`: store the purchase (with its reservation) and "
    "answer 202 at once, before upstream is called; the worker sends it within about a "
    "second. Without it the answer waits for upstream. A repeat of a known order id is "
    "answered 200 either way.",
)

PREFERENCE_APPLIED = OpenApiParameter(
    "Preference-Applied",
    str,
    OpenApiParameter.HEADER,
    response=[202],
    enum=["respond-async"],
    description="Present when `Prefer: respond-async` was honoured: the purchase is `queued`.",
)

LOCATION = OpenApiParameter(
    "Location",
    str,
    OpenApiParameter.HEADER,
    response=[202],
    description="With `Preference-Applied: respond-async`: the purchase to poll, "
    "`/api/v1/purchases/{order_id}` (order id URL-encoded).",
)

IDEMPOTENT_REPLAYED = OpenApiParameter(
    "Idempotent-Replayed",
    str,
    OpenApiParameter.HEADER,
    response=[200],
    enum=["true"],
    required=True,
    description="Present on a repeat of a known order id: the stored purchase is returned "
    "and upstream is not called again.",
)

# --- Examples of the purchase endpoint ------------------------------------------------------

_UNIT = "kYbc5KGKB/KnjynYePEF4cpumKmOz22xVKSVWbmtZ0M="


def _purchase(**changes: object) -> dict[str, object]:
    resource: dict[str, object] = {
        "id": "8f14e45f-ceea-467a-9575-a0b5c5b7d6a1",
        "order_id": "A-1001",
        "customer": "c-42",
        "description": "coffee",
        "address": "WR5FPYE6LHBQ57ZCFUTJXDDNHWK5355S",
        "currency": "EUR",
        "currency_amount": "12.50",
        "requested_partner_cashback_percentage": "5",
        "partner_cashback_percentage": "5",
        "purchase_unit": None,
        "status": "sent",
        "cashback_amount": 101318,
        "unit": _UNIT,
        "error": None,
        "attempts": 1,
        "created_at": "2026-11-29T12:00:00Z",
        "updated_at": "2026-11-29T12:00:01Z",
    }
    resource.update(changes)
    return resource


PURCHASE_EXAMPLES = [
    OpenApiExample(
        "A purchase",
        value={
            "customer": "c-42",
            "order_id": "A-1001",
            "description": "coffee",
            "address": "obyte:WR5FPYE6LHBQ57ZCFUTJXDDNHWK5355S",
            "currency": "EUR",
            "currency_amount": "12.50",
            "partner_cashback_percentage": "5",
        },
        request_only=True,
    ),
    OpenApiExample("Sent", value=_purchase(), response_only=True, status_codes=["201"]),
    OpenApiExample(
        "Pending",
        summary="Queued for a retry (upstream busy)",
        value=_purchase(
            status="pending",
            cashback_amount=None,
            unit=None,
            error="upstream busy (HTTP 503)",
        ),
        response_only=True,
        status_codes=["202"],
    ),
    OpenApiExample(
        "Replayed",
        summary="The same order again (header Idempotent-Replayed: true)",
        value=_purchase(),
        response_only=True,
        status_codes=["200"],
    ),
    OpenApiExample(
        "Rejected",
        value=_purchase(
            status="rejected",
            cashback_amount=None,
            unit=None,
            error="this order_id was already registered",
        ),
        response_only=True,
        status_codes=["422"],
    ),
]
