"""Record a deposit for a merchant."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db.models import CharField

from audit.services import Actor
from gateway.exceptions import DomainError
from gateway.money import AmountError, Currency, parse_decimal
from merchants.models import EntryKind, LedgerEntry, Merchant
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
            # The API's parser: no NaN or infinity, no exponent that overflows the context.
            value = parse_decimal(amount)
        except AmountError as exc:
            raise CommandError(f"amount {amount!r} {exc}.") from None
        column = LedgerEntry._meta.get_field("memo")
        assert isinstance(column, CharField) and column.max_length is not None
        memo_length = column.max_length
        if len(memo) > memo_length:
            raise CommandError(f"--memo has {len(memo)} characters; at most {memo_length}.")
        try:
            entry = record_entry(
                m,
                EntryKind.DEPOSIT,
                value,
                currency,
                memo=memo or "deposit (command line)",
                actor=Actor.command_line("record_deposit"),
            )
        except DomainError as exc:
            raise CommandError(exc.detail) from None
        self.stdout.write(
            f"Recorded deposit {entry.amount} {currency} for {m.public_id} (entry {entry.pk})."
        )
