"""Create a merchant and print its public id and a new API key."""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from audit.services import Actor
from gateway.exceptions import DomainError
from merchants.models import DepositPolicy
from merchants.services import create_merchant


def _percentage(value: str) -> Decimal:
    try:
        d = Decimal(value)
    except InvalidOperation:
        raise CommandError(f"{value!r} is not a number") from None
    if not d.is_finite() or d != d.quantize(Decimal("0.01")):
        raise CommandError(f"{value!r}: percentages have at most 2 decimal places")
    return d


class Command(BaseCommand):
    help = "Create a merchant; print its public id and a new API key (shown only now)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("name")
        parser.add_argument(
            "--id", dest="public_id", help="public id (a slug); generated if absent"
        )
        parser.add_argument("--percentage", type=_percentage, default=Decimal(0))
        parser.add_argument("--max-percentage", type=_percentage, default=None)
        parser.add_argument(
            "--policy", choices=DepositPolicy.values, default=DepositPolicy.DOWNGRADE
        )
        parser.add_argument("--json", action="store_true", help="print one JSON line")

    def handle(self, *args: Any, **opts: Any) -> None:
        try:
            merchant, key = create_merchant(
                opts["name"],
                public_id=opts["public_id"],
                percentage=opts["percentage"],
                max_percentage=opts["max_percentage"],
                policy=opts["policy"],
                actor=Actor.command_line("create_merchant"),
            )
        except DomainError as exc:
            raise CommandError(exc.detail) from None
        if opts["json"]:
            self.stdout.write(json.dumps({"merchant_id": merchant.public_id, "api_key": key}))
        else:
            self.stdout.write(f"Merchant: {merchant.public_id}")
            self.stdout.write(f"API key (shown only now): {key}")
