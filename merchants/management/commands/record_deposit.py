"""Record a deposit for a merchant."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from gateway.exceptions import DomainError
from gateway.money import Currency
from merchants.models import EntryKind, Merchant
from merchants.services import record_entry


class Command(BaseCommand):
    help = "Add a deposit entry to a merchant's ledger."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("merchant", help="the merchant's public id")
        parser.add_argument("amount")
        parser.add_argument("currency", choices=Currency.values)
        parser.add_argument("--memo", default="")

    def handle(
        self, *args: Any, merchant: str, amount: str, currency: str, memo: str, **opts: Any
    ) -> None:
        try:
            m = Merchant.objects.get(public_id=merchant)
        except Merchant.DoesNotExist:
            raise CommandError(f"No merchant with public id {merchant!r}.") from None
        try:
            value = Decimal(amount)
        except InvalidOperation:
            raise CommandError(f"{amount!r} is not a number.") from None
        try:
            entry = record_entry(
                m, EntryKind.DEPOSIT, value, currency, memo=memo or "deposit (command line)"
            )
        except DomainError as exc:
            raise CommandError(exc.detail) from None
        self.stdout.write(
            f"Recorded deposit {entry.amount} {currency} for {m.public_id} (entry {entry.pk})."
        )
