"""The transition table of cashback.lifecycle, walked: every allowed change is reachable
through the lifecycle's functions, and every other one is refused (the status stays)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from itertools import count
from typing import Any

import pytest
from django.utils import timezone

from cashback import lifecycle
from cashback.client import UpstreamResult
from cashback.lifecycle import Actor
from cashback.models import Attempt, Outcome, Purchase, Status
from gateway.exceptions import DomainError
from tests.conftest import ADDRESS

NOW = timezone.now()
_numbers = count()


def make(merchant: Any, status: str, *, deadline_passed: bool = False) -> Purchase:
    """Store a purchase in `status` whose lease and next attempt time are past."""
    return Purchase.objects.create(
        merchant=merchant,
        order_id=f"walk-{next(_numbers)}",
        customer="c-1",
        address=ADDRESS,
        currency="EUR",
        amount_minor=1250,
        requested_percentage=Decimal(0),
        percentage=Decimal(0),
        status=status,
        attempts=1,
        lease_until=NOW - timedelta(seconds=1),
        next_attempt_at=NOW - timedelta(seconds=1),
        retry_deadline=NOW + timedelta(seconds=-1 if deadline_passed else 3600),
    )


def record(outcome: str) -> Callable[[Purchase], bool]:
    def run(p: Purchase) -> bool:
        result = UpstreamResult(
            Outcome(outcome),
            200,
            cashback_amount=1000 if outcome == Outcome.OK else None,
            unit="u" * 44 if outcome == Outcome.OK else None,
            error="" if outcome == Outcome.OK else "upstream said no",
        )
        lifecycle.record_outcome(p.pk, p.attempts, result, started_at=NOW, now=NOW)
        return Attempt.objects.get(purchase=p, number=p.attempts).applied

    return run


def admin(fn: Callable[[Purchase], Any]) -> Callable[[Purchase], bool]:
    def run(p: Purchase) -> bool:
        try:
            fn(p)
        except DomainError:
            return False
        return True

    return run


# (actor, name, needs a passed retry deadline, action returning whether it acted)
ACTIONS: list[tuple[str, str, bool, Callable[[Purchase], bool]]] = [
    (Actor.REQUEST, "claim", False, lambda p: lifecycle.claim(p, Actor.REQUEST, NOW)),
    (Actor.ADMIN, "claim", False, lambda p: lifecycle.claim(p, Actor.ADMIN, NOW)),
    (
        Actor.WORKER,
        "claim_due",
        False,
        lambda p: p.pk in {c.pk for c in lifecycle.claim_due(NOW, limit=100)},
    ),
    (Actor.WORKER, "expire_leases", False, lambda p: lifecycle.expire_leases(NOW) > 0),
    (Actor.WORKER, "fail_expired", True, lambda p: lifecycle.fail_expired(NOW) > 0),
    (Actor.ADMIN, "retry", False, admin(lambda p: lifecycle.retry(p.pk, None))),
    (Actor.ADMIN, "mark_sent", False, admin(lambda p: lifecycle.mark_sent(p.pk, None, 5, "u1"))),
    (
        Actor.ADMIN,
        "mark_rejected",
        False,
        admin(lambda p: lifecycle.mark_rejected(p.pk, None, "no")),
    ),
]
# The sender records its own answer, whoever it is (request, worker or admin).
RECORDINGS: list[tuple[str, bool, Callable[[Purchase], bool]]] = [
    ("ok", False, record(Outcome.OK)),
    ("rejected", False, record(Outcome.REJECTED)),
    ("not_sent", False, record(Outcome.NOT_SENT)),
    ("not_sent past the window", True, record(Outcome.NOT_SENT)),
    ("auth_failed", False, record(Outcome.AUTH_FAILED)),
    ("ambiguous", False, record(Outcome.AMBIGUOUS)),
]


def test_every_allowed_transition_is_reachable_and_every_other_is_refused(
    shop: Any,
) -> None:
    seen: set[tuple[str, str, str]] = set()
    for from_status in Status.values:
        for actor, name, passed, action in ACTIONS:
            purchase = make(shop.merchant, from_status, deadline_passed=passed)
            acted = action(purchase)
            after = Purchase.objects.get(pk=purchase.pk).status
            step = (from_status, after, actor)
            if acted:
                assert step in lifecycle.TRANSITIONS, (name, step)
                seen.add(step)
            else:
                assert after == from_status, (name, step)
            Purchase.objects.filter(pk=purchase.pk).update(status=Status.SENT)  # out of the way
        for name, passed, action in RECORDINGS:
            purchase = make(shop.merchant, from_status, deadline_passed=passed)
            acted = action(purchase)
            after = Purchase.objects.get(pk=purchase.pk).status
            if acted:
                for actor in Actor.ALL:
                    assert (from_status, after, actor) in lifecycle.TRANSITIONS, (name, after)
                    seen.add((from_status, after, actor))
            else:
                assert after == from_status, (name, from_status, after)
            Purchase.objects.filter(pk=purchase.pk).update(status=Status.SENT)

    assert seen == lifecycle.TRANSITIONS


def test_the_table_names_who_may_claim() -> None:
    assert lifecycle.sources(Status.SENDING, Actor.REQUEST) == (Status.QUEUED,)
    assert lifecycle.sources(Status.SENDING, Actor.WORKER) == (Status.QUEUED, Status.PENDING)
    assert lifecycle.sources(Status.SENDING, Actor.ADMIN) == (Status.PENDING,)
    assert not lifecycle.allowed(Status.SENT, Status.PENDING, Actor.ADMIN)
    assert not any(lifecycle.allowed(Status.SENDING, Status.QUEUED, a) for a in Actor.ALL)
    assert not any(lifecycle.allowed(Status.SENT, s, a) for s in Status.values for a in Actor.ALL)


def test_the_lease_covers_the_whole_call_and_its_margin(settings: Any) -> None:
    settings.CASHBACK_TIMEOUT, settings.CASHBACK_CONNECT_TIMEOUT = 4.0, 3.0
    settings.CASHBACK_LEASE_MARGIN = 1.5

    # The connect timeout is inside the total deadline: it adds nothing to the lease.
    assert lifecycle.lease_seconds() == 5.5


@pytest.mark.parametrize("actor", [Actor.REQUEST, Actor.WORKER])
def test_a_claim_is_refused_once_another_owns_the_purchase(shop: Any, actor: str) -> None:
    purchase = make(shop.merchant, Status.QUEUED)
    stale = Purchase.objects.get(pk=purchase.pk)

    assert lifecycle.claim(purchase, Actor.REQUEST, NOW)
    assert not lifecycle.claim(stale, actor, NOW)
    assert Purchase.objects.get(pk=purchase.pk).attempts == 2
