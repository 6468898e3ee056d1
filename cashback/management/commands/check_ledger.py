"""Verify that every balance equals its entries and every reservation is settled right."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from cashback.ledger import ledger_problems
from gateway.db import report_timeout


class Command(BaseCommand):
    help = "Exit non-zero if a balance disagrees with its ledger or a reservation is wrong."

    @report_timeout()
    def handle(self, *args: Any, **options: Any) -> None:
        problems = ledger_problems()
        for problem in problems:
            self.stderr.write(problem)
        if problems:
            raise CommandError(f"{len(problems)} ledger problem(s) found.")
        self.stdout.write("Ledger OK: every balance equals the sum of its entries.")
