"""The upstream client against misbehaving real local servers: every transport fault, and
answers outside the documented shape, end in the outcome SPEC.md and docs/faults.md state."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from cashback.client import classify_response, get_client
from cashback.models import Outcome
from tests.cashback.upstreams import ScriptedServer, answer, read_request

FIELDS = {"customer": "c-1", "order_id": "o-1", "currency": "EUR", "currency_amount": "1"}


@pytest.fixture
def servers() -> Iterator[list[ScriptedServer]]:
    started: list[ScriptedServer] = []
    yield started
    for server in started:
        server.close()


def serve(servers: list[ScriptedServer], script: Any, **kwargs: Any) -> ScriptedServer:
    server = ScriptedServer(script, **kwargs)
    servers.append(server)
    return server


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_unknown_and_never_followed(
    settings: Any, servers: list[ScriptedServer], status: int
) -> None:
    elsewhere = serve(servers, lambda conn, s: conn.sendall(answer(200, b'{"result": "ok"}')))

    def redirect(conn: Any, server: ScriptedServer) -> None:
        server.requests.append(read_request(conn))
        conn.sendall(answer(status, b"moved", {"Location": elsewhere.url()}))

    upstream = serve(servers, redirect)
    settings.CASHBACK_API_URL = upstream.url()

    result = get_client().new_purchase(FIELDS)

    assert result.outcome == Outcome.AMBIGUOUS
    assert result.http_status == status
    assert result.error == (
        f"upstream answered a redirect (HTTP {status} to {elsewhere.url()}), not followed"
    )
    assert len(upstream.requests) == 1
    assert elsewhere.connections == 0


@pytest.mark.parametrize(
    "message",
    [
        "authentication failed",
        "Authentication failed",
        "AUTHENTICATION FAILED",
        "authentication failed ",
        " authentication failed.",
        "authentication failed!",
        "authentication failed\n",
        "authentication  \t failed",
        "Authentication failed.\r\n",
    ],
)
def test_authentication_failed_is_matched_as_a_person_reads_it(message: str) -> None:
    body = json.dumps({"result": "error", "error": message}).encode()
    result = classify_response(200, body)
    assert result.outcome == Outcome.AUTH_FAILED
    assert result.error == "authentication failed"


@pytest.mark.parametrize(
    "message", ["authentication failed for order 7", "no authentication failed", "auth failed"]
)
def test_other_errors_that_mention_authentication_are_rejections(message: str) -> None:
    body = json.dumps({"result": "error", "error": message}).encode()
    assert classify_response(200, body).outcome == Outcome.REJECTED
