"""The merchant's own resources: settings, balances and deposit ledger."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import generics
from rest_framework.request import Request
from rest_framework.response import Response

from audit.services import Actor
from gateway.pagination import NewestFirst
from gateway.schema import AUTH_ERRORS, BODY_ERRORS, RETRY_AFTER, errors
from merchants.authentication import merchant_of
from merchants.models import LedgerEntry
from merchants.serializers import BalancesSerializer, LedgerEntrySerializer, MerchantSerializer
from merchants.services import balances_of, update_settings


class MerchantSettings(generics.GenericAPIView):
    serializer_class = MerchantSerializer

    @extend_schema(
        parameters=[RETRY_AFTER], responses={200: MerchantSerializer, **errors(*AUTH_ERRORS)}
    )
    def get(self, request: Request) -> Response:
        return Response(MerchantSerializer(merchant_of(request)).data)

    @extend_schema(
        parameters=[RETRY_AFTER],
        responses={200: MerchantSerializer, **errors(*BODY_ERRORS, *AUTH_ERRORS)},
    )
    def patch(self, request: Request) -> Response:
        merchant = merchant_of(request)
        serializer = MerchantSerializer(merchant, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        rotate = serializer.validated_data.pop("rotate_webhook_secret", False)
        merchant, secret = update_settings(
            merchant,
            dict(serializer.validated_data),
            rotate_secret=rotate,
            actor=Actor.api_key(request.auth),
        )
        context: dict[str, Any] = {"new_webhook_secret": secret} if secret else {}
        return Response(MerchantSerializer(merchant, context=context).data)


class BalanceView(generics.GenericAPIView):
    serializer_class = BalancesSerializer

    @extend_schema(
        parameters=[RETRY_AFTER], responses={200: BalancesSerializer, **errors(*AUTH_ERRORS)}
    )
    def get(self, request: Request) -> Response:
        return Response(BalancesSerializer({"balances": balances_of(merchant_of(request))}).data)


@extend_schema_view(
    get=extend_schema(
        parameters=[RETRY_AFTER],
        # 404: a cursor that is not ours.
        responses={200: LedgerEntrySerializer(many=True), **errors(404, *AUTH_ERRORS)},
    )
)
class LedgerView(generics.ListAPIView):
    serializer_class = LedgerEntrySerializer
    pagination_class = NewestFirst

    def get_queryset(self) -> Any:
        return LedgerEntry.objects.filter(merchant=merchant_of(self.request)).select_related(
            "purchase"
        )
