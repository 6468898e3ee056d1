"""The merchant's own resources: settings, balances and deposit ledger."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import generics
from rest_framework.request import Request
from rest_framework.response import Response

from gateway.pagination import NewestFirst
from gateway.schema import AUTH_ERRORS, BODY_ERRORS, RETRY_AFTER, errors
from merchants.authentication import merchant_of
from merchants.models import LedgerEntry
from merchants.serializers import BalancesSerializer, LedgerEntrySerializer, MerchantSerializer
from merchants.services import balances_of


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
        context: dict[str, Any] = {}
        with transaction.atomic():
            merchant = serializer.save()
            if merchant.webhook_url and (rotate or not merchant.webhook_secret):
                context["new_webhook_secret"] = merchant.rotate_webhook_secret()
                merchant.save(update_fields=["webhook_secret"])
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
