"""The purchases endpoints of the merchant REST API. Thin: validate, call a service, render."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.timezone import make_aware
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from cashback import services
from cashback.models import Purchase, Status
from cashback.prefer import async_headers, prefers_respond_async
from cashback.resources import PurchaseSerializer, purchase_resource
from cashback.serializers import PurchaseRequestSerializer, fast_input
from gateway.pagination import NewestFirst
from gateway.parsers import parse_json
from gateway.schema import (
    AUTH_ERRORS,
    BODY_ERRORS,
    IDEMPOTENT_REPLAYED,
    LOCATION,
    PREFER,
    PREFERENCE_APPLIED,
    PURCHASE_EXAMPLES,
    RETRY_AFTER,
    errors,
)
from merchants.authentication import merchant_of

# The answer to a newly stored purchase, by the status it reached.
CREATED_STATUS: dict[str, int] = {
    Status.SENT: status.HTTP_201_CREATED,
    Status.REJECTED: status.HTTP_422_UNPROCESSABLE_ENTITY,
    Status.FAILED: status.HTTP_422_UNPROCESSABLE_ENTITY,
}


def _parse_time(value: str, name: str, *, end: bool = False) -> Any:
    try:
        moment = parse_datetime(value)
        day = parse_date(value) if moment is None else None
    except ValueError:
        # Well formed but impossible, e.g. 2026-13-45: parse_date raises instead of None.
        moment = day = None
    if moment is None:
        if day is None:
            raise serializers.ValidationError({name: ["Use an ISO 8601 date or date-time."]})
        from datetime import datetime, time

        moment = datetime.combine(day, time.max if end else time.min)
    if moment.tzinfo is None:
        moment = make_aware(moment)
    return moment


def _body(request: Request) -> Any:
    """Return the parsed body: a JSON one read at once, with the parser's own rules."""
    if request.content_type == "application/json":
        # What DecimalJSONParser does, without DRF's parser lookup.
        return parse_json(request.body, (request.content_params or {}).get("charset"))
    return request.data


def _rendered(
    request: Request, body: Any, code: int, headers: dict[str, str] | None = None
) -> HttpResponse:
    """Return `body` rendered by the negotiated renderer, as DRF's Response would render it.

    A plain response: the purchase POST skips the template-response machinery it does not use.
    """
    renderer = request.accepted_renderer
    response = HttpResponse(
        renderer.render(body, request.accepted_media_type, {}),
        status=code,
        content_type=renderer.media_type,
    )
    for name, value in (headers or {}).items():
        response[name] = value
    return response


class PurchaseListCreate(generics.GenericAPIView):
    serializer_class = PurchaseSerializer
    pagination_class = NewestFirst

    def get_queryset(self) -> Any:
        qs = Purchase.objects.filter(merchant=merchant_of(self.request))
        params = self.request.query_params
        if "status" in params:
            if params["status"] not in Status.values:
                raise serializers.ValidationError(
                    {"status": [f"Must be one of {', '.join(Status.values)}."]}
                )
            qs = qs.filter(status=params["status"])
        if "created_after" in params:
            qs = qs.filter(created_at__gte=_parse_time(params["created_after"], "created_after"))
        if "created_before" in params:
            qs = qs.filter(
                created_at__lte=_parse_time(params["created_before"], "created_before", end=True)
            )
        return qs

    @extend_schema(
        operation_id="purchases_list",
        parameters=[
            OpenApiParameter(
                "status", enum=Status.values, description="Only purchases in this status."
            ),
            OpenApiParameter(
                "created_after", str, description="ISO 8601 date or date-time, inclusive."
            ),
            OpenApiParameter(
                "created_before", str, description="ISO 8601 date or date-time, inclusive."
            ),
            RETRY_AFTER,
        ],
        # 400: a bad filter; 404: a cursor that is not ours.
        responses={200: PurchaseSerializer(many=True), **errors(400, 404, *AUTH_ERRORS)},
    )
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        assert page is not None  # the view always paginates
        return self.get_paginated_response([purchase_resource(p) for p in page])

    @extend_schema(
        operation_id="purchases_create",
        request=PurchaseRequestSerializer,
        parameters=[PREFER, PREFERENCE_APPLIED, LOCATION, IDEMPOTENT_REPLAYED, RETRY_AFTER],
        examples=PURCHASE_EXAMPLES,
        responses={
            201: OpenApiResponse(PurchaseSerializer, "Created and sent: the cashback was paid."),
            202: OpenApiResponse(
                PurchaseSerializer,
                "Created; queued, sending, pending or unknown. With `Prefer: respond-async`: "
                "stored and answered at once as `queued`, before upstream is called; the "
                "worker sends it within about a second, and the webhook or a GET of "
                "`Location` tells the outcome.",
            ),
            200: OpenApiResponse(
                PurchaseSerializer, "A repeat of a known order id; Idempotent-Replayed: true."
            ),
            422: OpenApiResponse(
                PurchaseSerializer, "Created and rejected by upstream (see error)."
            ),
            **errors(402, 409, *BODY_ERRORS, *AUTH_ERRORS),
        },
    )
    def post(self, request: Request) -> HttpResponse:
        data = fast_input(_body(request))
        if data is None:  # anything but an ordinary valid body: the serializer answers it
            serializer = PurchaseRequestSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            data = serializer.to_input()
        respond_async = prefers_respond_async(request.headers.get("Prefer"))
        purchase, created = services.submit_purchase(
            merchant_of(request), data, respond_async=respond_async
        )
        body = purchase_resource(purchase)
        if not created:
            return _rendered(request, body, status.HTTP_200_OK, {"Idempotent-Replayed": "true"})
        if respond_async:
            headers = async_headers(request.path, purchase.order_id)
            return _rendered(request, body, status.HTTP_202_ACCEPTED, headers)
        return _rendered(
            request, body, CREATED_STATUS.get(purchase.status, status.HTTP_202_ACCEPTED)
        )


class PurchaseDetail(generics.GenericAPIView):
    serializer_class = PurchaseSerializer

    @extend_schema(
        operation_id="purchases_retrieve",
        parameters=[RETRY_AFTER],
        responses={200: PurchaseSerializer, **errors(404, *AUTH_ERRORS)},
    )
    def get(self, request: Request, order_id: str) -> Response:
        # No order id holds NUL (validation refuses it), and PostgreSQL cannot even compare one.
        purchase = (
            None
            if "\x00" in order_id
            else Purchase.objects.filter(merchant=merchant_of(request), order_id=order_id).first()
        )
        if purchase is None:
            return Response({"detail": "No such purchase."}, status=status.HTTP_404_NOT_FOUND)
        return Response(purchase_resource(purchase))
