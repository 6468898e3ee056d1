"""The ledger check: balances against their entries, and each purchase's hold against both.

It spans both apps (merchant balances and the purchases that reserve from them), so it lives
on the purchase side, which may import the ledger but not the other way round.
"""

from __future__ import annotations

from django.db.models import Count, Sum

from cashback.models import Hold, Purchase, Status
from merchants.models import Balance, EntryKind, LedgerEntry


def ledger_problems() -> list[str]:
    """Return every disagreement between balances, entries and purchases (empty if none)."""
    problems: list[str] = []
    sums: dict[tuple[int, str], list[int]] = {}
    rows = LedgerEntry.objects.values("merchant_id", "currency", "kind").annotate(
        total=Sum("amount_minor")
    )
    for row in rows:
        available, reserved = sums.setdefault((row["merchant_id"], row["currency"]), [0, 0])
        kind, total = row["kind"], row["total"]
        if kind in (EntryKind.DEPOSIT, EntryKind.WITHDRAWAL, EntryKind.ADJUSTMENT):
            available += total
        elif kind in (EntryKind.RESERVATION, EntryKind.RELEASE):
            available += total
            reserved -= total
        elif kind == EntryKind.CAPTURE:
            reserved += total
        sums[(row["merchant_id"], row["currency"])] = [available, reserved]
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

    # Each purchase: reservations − releases − captures is 1 while it holds, else 0.
    counts: dict[object, dict[str, int]] = {}
    for row in (
        LedgerEntry.objects.filter(purchase__isnull=False)
        .values("purchase_id", "kind")
        .annotate(n=Count("id"))
    ):
        counts.setdefault(row["purchase_id"], {})[row["kind"]] = row["n"]
    open_statuses = {Status.QUEUED, Status.SENDING, Status.PENDING, Status.UNKNOWN}
    for p in (
        Purchase.objects.filter(reserved_minor__gt=0)
        .only("id", "order_id", "status", "hold")
        .iterator()
    ):
        c = counts.get(p.id, {})
        net = c.get("reservation", 0) - c.get("release", 0) - c.get("capture", 0)
        should_hold = p.status in open_statuses
        if net != (1 if should_hold else 0) or (p.hold == Hold.HELD) != should_hold:
            problems.append(
                f"purchase {p.order_id} ({p.status}): hold {p.hold}, {net} reservation(s) open"
            )
        if p.status == Status.SENT and c.get("capture", 0) != 1:
            problems.append(
                f"purchase {p.order_id} is sent but captured {c.get('capture', 0)} times"
            )
    return problems
