"""The ledger check: balances against their entries, and each purchase's hold against both.

It spans both apps (merchant balances and the purchases that reserve from them), so it lives
on the purchase side, which may import the ledger but not the other way round. How each kind
counts comes from ENTRY_EFFECTS, the table the writes and the constraint use too.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Sum

from cashback.models import OPEN_STATUSES, Hold, Purchase, Status
from merchants.models import ENTRY_EFFECTS, Balance, EntryKind, LedgerEntry


def ledger_problems() -> list[str]:
    """Return every disagreement between balances, entries and purchases (empty if none)."""
    return balance_problems() + hold_problems()


def balance_problems() -> list[str]:
    """Return every balance that disagrees with the sums of its entries."""
    problems: list[str] = []
    sums: dict[tuple[int, str], list[int]] = {}
    rows = LedgerEntry.objects.values("merchant_id", "currency", "kind").annotate(
        total=Sum("amount_minor")
    )
    for row in rows:
        effect = ENTRY_EFFECTS[row["kind"]]
        sides = sums.setdefault((row["merchant_id"], row["currency"]), [0, 0])
        sides[0] += row["total"] * effect.available
        sides[1] += row["total"] * effect.reserved
    balances = {(b.merchant_id, b.currency): b for b in Balance.objects.all()}
    for key in sums.keys() | balances.keys():
        expected = sums.get(key, [0, 0])
        balance = balances.get(key)
        actual = [balance.available_minor, balance.reserved_minor] if balance else [0, 0]
        if expected != actual:
            problems.append(
                f"merchant {key[0]} {key[1]}: balance available/reserved {actual} "
                f"but entries sum to {expected} (minor units)"
            )
        if expected[0] < 0 or expected[1] < 0:
            problems.append(f"merchant {key[0]} {key[1]}: negative sums {expected}")
    return problems


def hold_problems() -> list[str]:
    """Return every purchase whose hold disagrees with its status or its ledger entries."""
    counts: dict[Any, dict[str, int]] = {}
    for row in (
        LedgerEntry.objects.filter(purchase__isnull=False)
        .values("purchase_id", "kind")
        .annotate(n=Count("id"))
    ):
        counts.setdefault(row["purchase_id"], {})[row["kind"]] = row["n"]
    problems = []
    for p in (
        Purchase.objects.filter(reserved_minor__gt=0)
        .only("id", "order_id", "status", "hold")
        .iterator()
    ):
        # Reservations − releases − captures is 1 while it holds, else 0.
        c = counts.get(p.id, {})
        net = c.get(EntryKind.RESERVATION, 0) - c.get(EntryKind.RELEASE, 0)
        net -= c.get(EntryKind.CAPTURE, 0)
        should_hold = p.status in OPEN_STATUSES
        if net != (1 if should_hold else 0) or (p.hold == Hold.HELD) != should_hold:
            problems.append(
                f"purchase {p.order_id} ({p.status}): hold {p.hold}, {net} reservation(s) open"
            )
        if p.status == Status.SENT and c.get(EntryKind.CAPTURE, 0) != 1:
            problems.append(
                f"purchase {p.order_id} is sent but captured {c.get(EntryKind.CAPTURE, 0)} times"
            )
    return problems
