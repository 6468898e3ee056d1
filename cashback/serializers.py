"""Input validation of the merchant REST API (the purchase resource is in `resources`)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import CharField
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from cashback.models import Purchase
from cashback.services import PurchaseInput
from cashback.validators import (
    CONTROL_CHARACTERS_MESSAGE,
    has_control_characters,
    is_valid_unit,
    normalize_address,
)
from gateway.money import (
    PRECISION,
    AmountError,
    Currency,
    check_amount,
    format_plain,
    parse_decimal,
    percent_to_hundredths,
    to_minor,
)


def _no_control_characters(value: str) -> None:
    if has_control_characters(value):
        raise serializers.ValidationError(CONTROL_CHARACTERS_MESSAGE)


def stored_length(field: str) -> int:
    """Return the stored length of a purchase's text field: the one limit of that field."""
    column = Purchase._meta.get_field(field)
    assert isinstance(column, CharField) and column.max_length is not None
    return column.max_length


# The longest QR prefix an address may come with; it is stripped before storing.
_QR_PREFIX_LENGTH = len("byteball:")


@extend_schema_field(OpenApiTypes.DECIMAL)
class ExactDecimalField(serializers.Field):
    """A decimal given as a JSON number or a string, parsed without float."""

    default_error_messages = {"invalid": "Must be a decimal number, as a string or a number."}

    def to_internal_value(self, data: Any) -> Decimal:
        try:
            return parse_decimal(data)
        except AmountError as exc:
            raise serializers.ValidationError(str(exc)) from None

    def to_representation(self, value: Decimal) -> str:
        return format_plain(value)


class PurchaseRequestSerializer(serializers.Serializer):
    """A paid purchase, as a merchant integration reports it."""

    customer = serializers.CharField(
        min_length=1,
        max_length=stored_length("customer"),
        trim_whitespace=False,
        validators=[_no_control_characters],
        help_text="Any id of the customer; the same customer always sends the same value.",
    )
    order_id = serializers.CharField(
        min_length=1,
        max_length=stored_length("order_id"),
        trim_whitespace=False,
        validators=[_no_control_characters],
        help_text="Unique per merchant; a repeat with the same fields is answered idempotently.",
    )
    description = serializers.CharField(
        max_length=stored_length("description"),
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        default="",
        validators=[_no_control_characters],
        help_text="What was bought; absent means empty.",
    )
    address = serializers.CharField(
        # The stored address has no prefix: validate_address checks its length again.
        max_length=stored_length("address") + _QR_PREFIX_LENGTH,
        validators=[_no_control_characters],
        help_text="An Obyte address (an `obyte:` or `byteball:` prefix is stripped) or an email address.",
    )
    currency = serializers.CharField(
        min_length=3,
        max_length=5,
        help_text="The currency the purchase was paid in: USD, EUR, RUR, GBYTE or BTC are sent "
        "as they are; any other ISO 4217 currency with a current ECB reference rate (GBP, "
        "JPY, CHF, …) is converted into the merchant's settlement currency.",
    )
    currency_amount = ExactDecimalField(
        help_text="Greater than 0; at most 2 decimals for USD/EUR/RUR, 8 for BTC, 9 for GBYTE, "
        "and the ISO 4217 minor units of other currencies (JPY 0); at most 18 digits in all."
    )
    partner_cashback_percentage = ExactDecimalField(
        required=False,
        allow_null=True,
        help_text="0 to the merchant's maximum, at most 2 decimals; absent means the merchant's default.",
    )
    purchase_unit = serializers.CharField(
        required=False,
        allow_null=True,
        min_length=stored_length("purchase_unit"),
        max_length=stored_length("purchase_unit"),
        trim_whitespace=False,
        validators=[_no_control_characters],
        help_text="Only with GBYTE: the 44-character base64 id of the customer's payment unit.",
    )

    def validate_address(self, value: str) -> str:
        try:
            address = normalize_address(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages) from None
        if len(address) > stored_length("address"):
            raise serializers.ValidationError(
                f"Ensure this field has no more than {stored_length('address')} characters."
            )
        return address

    def validate_currency(self, value: str) -> str:
        if value not in PRECISION:
            raise serializers.ValidationError(
                f"{value!r} is not a currency the gateway takes: USD, EUR, RUR, GBYTE, BTC, "
                "or an ISO 4217 currency with an ECB reference rate (upper case, e.g. GBP)."
            )
        return value

    def validate_partner_cashback_percentage(self, value: Decimal | None) -> Decimal | None:
        if value is None:
            return None
        if value < 0 or value > 100:
            raise serializers.ValidationError("Must be between 0 and 100.")
        try:
            percent_to_hundredths(value)
        except AmountError as exc:
            raise serializers.ValidationError(str(exc)) from None
        return value.quantize(Decimal("0.01"))

    def validate_purchase_unit(self, value: str | None) -> str | None:
        if value is not None and not is_valid_unit(value):
            raise serializers.ValidationError("Must be a 44-character canonical base64 unit id.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        currency = attrs.get("currency")
        if currency is None:  # refused by its own validator; the errors are already keyed
            return attrs
        try:
            check_amount(attrs["currency_amount"], currency)
        except AmountError as exc:
            raise serializers.ValidationError({"currency_amount": [str(exc)]}) from None
        if attrs.get("purchase_unit") and currency != Currency.GBYTE:
            raise serializers.ValidationError(
                {"purchase_unit": ["Only purchases paid in GBYTE have a purchase unit."]}
            )
        return attrs

    def to_input(self) -> PurchaseInput:
        data = self.validated_data
        return PurchaseInput(
            order_id=data["order_id"],
            customer=data["customer"],
            description=data.get("description") or "",
            address=data["address"],
            currency=data["currency"],
            amount_minor=to_minor(data["currency_amount"], data["currency"]),
            percentage=data.get("partner_cashback_percentage"),
            purchase_unit=data.get("purchase_unit") or None,
        )


def _plain_text(data: dict[str, Any], name: str, shortest: int, longest: int) -> str | None:
    value = data.get(name)
    if (
        type(value) is not str
        or not shortest <= len(value) <= longest
        or has_control_characters(value)
    ):
        return None
    return value


def fast_input(data: Any) -> PurchaseInput | None:
    """Return the input of an ordinary, valid purchase body without the serializer, or None.

    The purchase POST's hot path: the same rules as PurchaseRequestSerializer, checked in
    the plainest way. Anything it does not accept plainly (a number where text goes, space
    around the currency, a missing or null field, anything invalid) gives None, and the
    caller runs the serializer, which accepts or refuses it with its own messages. So this
    decides nothing the serializer would decide otherwise: where it returns an input, the
    serializer's `to_input` is the same (tests/cashback/test_fast_input.py checks both
    ways).
    """
    if type(data) is not dict:
        return None
    customer = _plain_text(data, "customer", 1, _CUSTOMER_LENGTH)
    order_id = _plain_text(data, "order_id", 1, _ORDER_ID_LENGTH)
    description = _plain_text(data, "description", 0, _DESCRIPTION_LENGTH)
    raw_address = _plain_text(data, "address", 1, _ADDRESS_LENGTH + _QR_PREFIX_LENGTH)
    currency = data.get("currency")
    if "description" not in data:
        description = ""
    if (
        customer is None
        or order_id is None
        or description is None
        or raw_address is None
        or raw_address != raw_address.strip()
        or type(currency) is not str
        or currency not in PRECISION
        or not 3 <= len(currency) <= 5
        or "currency_amount" not in data
        or data.get("purchase_unit") is not None
    ):
        return None
    percentage = data.get("partner_cashback_percentage")
    try:
        address = normalize_address(raw_address)
        amount = parse_decimal(data["currency_amount"])
        check_amount(amount, currency)
        if percentage is not None:
            percentage = parse_decimal(percentage)
            if percentage < 0 or percentage > 100:
                return None
            percent_to_hundredths(percentage)
            percentage = percentage.quantize(Decimal("0.01"))
        amount_minor = to_minor(amount, currency)
    except (AmountError, DjangoValidationError):
        return None
    if len(address) > _ADDRESS_LENGTH:
        return None
    return PurchaseInput(
        order_id=order_id,
        customer=customer,
        description=description,
        address=address,
        currency=currency,
        amount_minor=amount_minor,
        percentage=percentage,
        purchase_unit=None,
    )


_CUSTOMER_LENGTH = stored_length("customer")
_ORDER_ID_LENGTH = stored_length("order_id")
_DESCRIPTION_LENGTH = stored_length("description")
_ADDRESS_LENGTH = stored_length("address")
