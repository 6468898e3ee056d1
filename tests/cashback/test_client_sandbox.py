"""The sandbox upstream takes no effect on a request whose credentials it refuses."""

from __future__ import annotations

from typing import Any

from cashback.client import CashbackClient
from cashback.models import Outcome

FIELDS = {
    "customer": "c-1",
    "order_id": "o-1",
    "merchant": "shop",
    "address": "WR5FPYE6LHBQ57ZCFUTJXDDNHWK5355S",
    "currency": "EUR",
    "currency_amount": "1",
}


def client(upstream: Any, partner: str, key: str) -> CashbackClient:
    return CashbackClient(upstream.url, partner, key, timeout=2, connect_timeout=1, pool_size=1)


def test_refused_credentials_do_not_register_the_order(upstream: Any, settings: Any) -> None:
    good = (settings.CASHBACK_PARTNER, settings.CASHBACK_PARTNER_KEY)
    for partner, key in [(good[0], "wrong-key"), ("someone-else", good[1])]:
        refused = client(upstream, partner, key).new_purchase(FIELDS)
        assert refused.outcome == Outcome.AUTH_FAILED
    assert upstream.state.sent_count("shop", "o-1") == 0

    result = client(upstream, *good).new_purchase(FIELDS)

    assert result.outcome == Outcome.OK
    assert upstream.state.sent_count("shop", "o-1") == 1
    assert upstream.state.duplicates == 0


def test_a_second_accepted_request_is_still_refused_as_registered(
    upstream: Any, settings: Any
) -> None:
    good = client(upstream, settings.CASHBACK_PARTNER, settings.CASHBACK_PARTNER_KEY)
    assert good.new_purchase(FIELDS).outcome == Outcome.OK

    again = good.new_purchase(FIELDS)

    assert again.outcome == Outcome.REJECTED
    assert again.error == "this order_id was already registered"
