"""`POST /new_purchase`: the upstream protocol of cashback-api.md, served by the gateway.

Integrations written for the upstream API switch to the gateway by changing only the URL and
credentials: `partner` is the merchant's public id and `partner_key` one of its API keys. The
purchase then takes the same path as the REST API (same validation, idempotency and
deposits), and the answer is upstream's `{"result": …}` body with HTTP 200, whatever the
outcome, because those clients read only the body. Only transport limits keep their codes
(413 from the body size middleware, 429 from throttling).
"""

from __future__ import annotations

import logging
from typing import Any

from django.http import QueryDict
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import exceptions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cashback import services
from cashback.models import OPEN_STATUSES, Purchase, Status
from cashback.serializers import PurchaseRequestSerializer
from gateway.exceptions import DomainError, first_message
from gateway.parsers import BodyRefused, DecimalJSONParser, StrictFormParser, StrictMultiPartParser
from gateway.schema import RETRY_AFTER, ErrorSerializer
from gateway.throttling import ApiKeyThrottle, ClientIpThrottle
from merchants.authentication import authenticate_key
from merchants.models import ApiKey

logger = logging.getLogger(__name__)

# Upstream's own words for bad credentials; clients may compare the text.
AUTH_FAILED = "authentication failed"
MERCHANT_DISABLED = "this merchant is disabled"
NOT_AN_OBJECT = "the request body must be form fields or a JSON object"
# The purchase fields of cashback-api.md that the gateway passes on; `merchant` is ignored
# (the gateway fills it) and the credentials are replaced by the processor's.
PURCHASE_FIELDS = (
    "customer",
    "order_id",
    "description",
    "address",
    "currency",
    "currency_amount",
    "partner_cashback_percentage",
    "purchase_unit",
)


def ok(cashback_amount: int | None, unit: str | None) -> dict[str, Any]:
    return {"result": "ok", "cashback_amount": cashback_amount, "unit": unit}


def error(message: str) -> dict[str, Any]:
    return {"result": "error", "error": message}


def queued_message(purchase: Purchase) -> str:
    """Return the answer for a purchase whose outcome is not known yet."""
    # `unknown` may have reached upstream: the processor reconciles it, nothing re-sends it.
    next_step = (
        "the processor is checking whether upstream received it"
        if purchase.status == Status.UNKNOWN
        else "the gateway will send it"
    )
    return (
        f"cashback is queued (status {purchase.status}): {next_step}; "
        f"do not request cashback for order_id {purchase.order_id!r} anywhere else"
    )


def outcome_body(purchase: Purchase) -> dict[str, Any]:
    """Return the upstream-format answer for a purchase as it stands now."""
    if purchase.status == Status.SENT:
        return ok(purchase.cashback_amount, purchase.unit)
    if purchase.status == Status.REJECTED:
        return error(purchase.error or "rejected by upstream")
    if purchase.status == Status.FAILED:
        return error(f"cashback failed: {purchase.error or 'retries ran out'}")
    assert purchase.status in OPEN_STATUSES
    return error(queued_message(purchase))


def _as_fields(data: Any) -> dict[str, Any] | None:
    """Return the request's fields as a plain dict (a form's last value wins), or None."""
    if isinstance(data, QueryDict):
        return {name: data.get(name) for name in data}
    if isinstance(data, dict):
        return data
    return None


def purchase_data(fields: dict[str, Any]) -> dict[str, Any]:
    """Return the REST API's request body for the drop-in fields, with upstream's defaults."""
    data = {name: fields[name] for name in PURCHASE_FIELDS if name in fields}
    # Upstream: "Default it 0". Form clients send an empty string for "not given".
    if data.get("partner_cashback_percentage") in (None, ""):
        data["partner_cashback_percentage"] = "0"
    if data.get("purchase_unit") in (None, ""):
        data.pop("purchase_unit", None)
    if data.get("description") is None:
        data.pop("description", None)
    return data


# --- OpenAPI description -------------------------------------------------------------------


@extend_schema_field({"oneOf": [{"type": "string"}, {"type": "number"}]})
class NumberOrString(serializers.Field):
    """A decimal sent as a string, or in JSON as a number (documentation only)."""


class DropInSerializer(serializers.Serializer):
    """The parameters of cashback-api.md (documentation only)."""

    partner = serializers.CharField(help_text="The merchant's public id (its merchant_id).")
    partner_key = serializers.CharField(help_text="One of the merchant's API keys.")
    customer = serializers.CharField(
        max_length=255, help_text="Any id of the customer; the same customer sends the same."
    )
    order_id = serializers.CharField(
        max_length=128, help_text="Unique per merchant; a repeat answers the stored outcome."
    )
    description = serializers.CharField(required=False, allow_blank=True, max_length=1000)
    merchant = serializers.CharField(
        required=False, help_text="Ignored: the gateway fills it with the merchant's public id."
    )
    address = serializers.CharField(
        help_text="An Obyte address (an `obyte:` or `byteball:` prefix is stripped) or an email."
    )
    currency = serializers.CharField(
        help_text="USD, EUR, RUR, GBYTE or BTC as they are; another ISO 4217 currency with an "
        "ECB reference rate (GBP, …) is converted into the merchant's settlement currency."
    )
    currency_amount = NumberOrString(
        help_text='A decimal number, as a string ("12.50") or, in JSON, a number.'
    )
    partner_cashback_percentage = NumberOrString(
        required=False, help_text="A decimal percentage; absent or empty means 0 (as upstream)."
    )
    purchase_unit = serializers.CharField(
        required=False, allow_blank=True, help_text="Only with GBYTE: the customer's payment unit."
    )


class DropInResultSerializer(serializers.Serializer):
    """The answer of cashback-api.md (documentation only)."""

    result = serializers.ChoiceField(choices=["ok", "error"])
    cashback_amount = serializers.IntegerField(
        required=False, allow_null=True, help_text="With result ok: the cashback, in bytes."
    )
    unit = serializers.CharField(
        required=False, allow_null=True, help_text="With result ok: the unit that paid it."
    )
    error = serializers.CharField(required=False, help_text="With result error: what happened.")


_EXAMPLE_REQUEST = {
    "partner": "shop-1",
    "partner_key": "cbk_…",
    "customer": "8b1f0c9e",
    "order_id": "A-1001",
    "description": "coffee",
    "address": "obyte:WR5FPYE6LHBQ57ZCFUTJXDDNHWK5355S",
    "currency": "EUR",
    "currency_amount": "12",
    "partner_cashback_percentage": "10",
}

DROPIN_SCHEMA = extend_schema(
    operation_id="new_purchase",
    summary="Request cashback with the upstream protocol (drop-in)",
    description=(
        "Speaks the upstream `new_purchase` protocol of the Obyte Cashback API: send "
        "`partner` = your merchant id and `partner_key` = one of your API keys. Form-encoded "
        "or JSON. Every outcome of a readable request is HTTP 200 with `result` ok or error; "
        "a repeated order id answers the stored outcome without calling upstream again."
    ),
    tags=["drop-in"],
    auth=[],
    request={
        "application/x-www-form-urlencoded": DropInSerializer,
        "application/json": DropInSerializer,
    },
    responses={
        200: OpenApiResponse(DropInResultSerializer, "The outcome, in upstream's format."),
        413: OpenApiResponse(ErrorSerializer, "Body over 64 KiB (answered before it is read)."),
        429: OpenApiResponse(
            DropInResultSerializer, "Throttled, per client address or per key; see Retry-After."
        ),
    },
    parameters=[RETRY_AFTER],
    examples=[
        OpenApiExample("Request", value=_EXAMPLE_REQUEST, request_only=True),
        OpenApiExample(
            "Sent",
            value=ok(101318, "kYbc5KGKB/KnjynYePEF4cpumKmOz22xVKSVWbmtZ0M="),
            response_only=True,
            status_codes=["200"],
        ),
        OpenApiExample(
            "Bad credentials",
            value=error(AUTH_FAILED),
            response_only=True,
            status_codes=["200"],
        ),
        OpenApiExample(
            "Invalid input",
            value=error("currency_amount: EUR amounts have at most 2 decimal places"),
            response_only=True,
            status_codes=["200"],
        ),
        OpenApiExample(
            "Rejected by upstream",
            value=error("this order_id was already registered"),
            response_only=True,
            status_codes=["200"],
        ),
        OpenApiExample(
            "Queued",
            value=error(
                "cashback is queued (status pending): the gateway will send it; "
                "do not request cashback for order_id 'A-1001' anywhere else"
            ),
            response_only=True,
            status_codes=["200"],
        ),
    ],
)


# --- The view ------------------------------------------------------------------------------


class NewPurchaseView(APIView):
    """Answer a `new_purchase` request of cashback-api.md for one of our merchants."""

    # The key travels in the body, so DRF's header authentication does not apply; the view
    # authenticates it itself. DRF's APIView is CSRF-exempt without session authentication.
    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []
    parser_classes = [StrictFormParser, DecimalJSONParser, StrictMultiPartParser]
    # Per client address here; per merchant key once the body has named it (in `post`).
    throttle_classes = [ClientIpThrottle]

    @DROPIN_SCHEMA
    def post(self, request: Request) -> Response:
        try:
            fields = _as_fields(request.data)
        except BodyRefused as exc:
            return Response(error(str(exc.detail)))
        except exceptions.ParseError as exc:
            if "json" in (request.content_type or ""):
                return Response(error("the request body is not valid JSON"))
            return Response(error(str(exc.detail)))
        if fields is None:
            return Response(error(NOT_AN_OBJECT))

        key = self._authenticate(request, fields)
        if key is None:
            return Response(error(AUTH_FAILED))
        request.auth = key
        throttle = ApiKeyThrottle()
        if not throttle.allow_request(request, self):
            self.throttled(request, throttle.wait() or 1)
        merchant = key.merchant
        if not merchant.is_active:
            return Response(error(MERCHANT_DISABLED))

        serializer = PurchaseRequestSerializer(data=purchase_data(fields))
        if not serializer.is_valid():
            return Response(error(first_message(serializer.errors)))
        try:
            purchase, created = services.submit_purchase(merchant, serializer.to_input())
        except DomainError as exc:
            return Response(error(exc.detail))
        logger.info(
            "drop-in purchase answered",
            extra={
                "merchant": merchant.public_id,
                "order_id": purchase.order_id,
                "status": purchase.status,
                "replayed": not created,
            },
        )
        return Response(outcome_body(purchase))

    def _authenticate(self, request: Request, fields: dict[str, Any]) -> ApiKey | None:
        partner, raw = fields.get("partner"), fields.get("partner_key")
        if not (isinstance(partner, str) and isinstance(raw, str)):
            return None
        # Keys are printable ASCII; anything else cannot match (and NUL upsets PostgreSQL).
        if not (raw.isascii() and raw.isprintable()):
            return None
        key = authenticate_key(raw, request.META.get("REMOTE_ADDR"))
        if key is None or key.merchant.public_id != partner:
            return None
        return key

    def handle_exception(self, exc: Exception) -> Response:
        """Answer in upstream's format; only throttling and a wrong method keep their codes."""
        if isinstance(exc, exceptions.Throttled | exceptions.MethodNotAllowed):
            response = super().handle_exception(exc)
            response.data = error(
                "too many requests; retry later"
                if isinstance(exc, exceptions.Throttled)
                else str(exc.detail)
            )
            return response
        if isinstance(exc, exceptions.APIException):
            # Unsupported media type, unreadable form data: we read the request, so 200.
            return Response(error(str(exc.detail)), status=status.HTTP_200_OK)
        return super().handle_exception(exc)
