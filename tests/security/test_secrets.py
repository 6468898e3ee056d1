"""Secrets: the partner key and API keys appear in no response, no log line (ours or
gunicorn's) and no attempt record, through every upstream outcome."""

from __future__ import annotations

import io
import logging
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote_plus

import pytest
import requests
from django.conf import settings as django_settings

from cashback.models import Attempt, Purchase
from cashback.sandbox import SandboxServer, start_in_thread
from gateway.logging import REDACTED, RedactSecretsFilter
from tests.conftest import purchase_body

# Every way an upstream answer can end, as the sandbox plays them.
OUTCOMES = ("ok", "error", "auth", "429", "503", "500", "garbage", "drop", "slow")


@pytest.fixture
def secret_upstream(settings: Any) -> Iterator[SandboxServer]:
    """A sandbox that expects a distinctive partner key, which the gateway is given."""
    # With characters that URL encoding changes, as real keys may have.
    settings.CASHBACK_PARTNER_KEY = "pk-" + secrets.token_urlsafe(24) + "/+="
    settings.CASHBACK_TIMEOUT = 0.5  # the "slow" outcome times out quickly
    server = start_in_thread(settings.CASHBACK_PARTNER, settings.CASHBACK_PARTNER_KEY)
    server.state.slow_seconds = 1.0
    settings.CASHBACK_API_URL = server.url
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def root_output() -> Iterator[io.StringIO]:
    """Capture what the root handler (the one production writes with) prints, at DEBUG."""
    root = logging.getLogger()
    handler = next(
        h
        for h in root.handlers
        if any(isinstance(f, RedactSecretsFilter) for f in getattr(h, "filters", []))
    )
    assert isinstance(handler, logging.StreamHandler)
    buffer = io.StringIO()
    old_stream, old_level = handler.setStream(buffer), root.level
    root.setLevel(logging.DEBUG)
    yield buffer
    root.setLevel(old_level)
    handler.setStream(old_stream)


def test_no_secret_in_responses_logs_or_attempts_through_every_outcome(
    shop: Any, secret_upstream: SandboxServer, root_output: io.StringIO
) -> None:
    partner_key = django_settings.CASHBACK_PARTNER_KEY
    bodies: list[bytes] = []
    for outcome in OUTCOMES:
        secret_upstream.state.set_mode(outcome, count=1)
        response = shop.post_purchase(order_id=f"O-{outcome}")
        assert response.status_code in (201, 202, 422), (outcome, response.content)
        bodies.append(response.content)
    for path in ("/api/v1/purchases", "/api/v1/purchases/O-auth", "/api/v1/ledger"):
        bodies.append(shop.client.get(path).content)
    # What a careless line of code would print: each must come out redacted.
    log = logging.getLogger("tests.security")
    webhook_secret = shop.merchant.rotate_webhook_secret()
    log.warning("keys %s %s %s", partner_key, shop.key, webhook_secret, extra={"k": shop.key})
    log.warning("GET /x?auth=Bearer%%20%s&p=%s", shop.key, quote_plus(partner_key))
    try:
        raise ValueError(f"upstream refused {partner_key}")
    except ValueError:
        log.exception("failed")

    output = root_output.getvalue()
    statuses = dict(Purchase.objects.values_list("order_id", "status"))
    assert statuses == {
        "O-ok": "sent",
        "O-error": "rejected",
        "O-auth": "pending",
        "O-429": "pending",
        "O-503": "pending",
        "O-500": "unknown",
        "O-garbage": "unknown",
        "O-drop": "unknown",
        "O-slow": "unknown",
    }
    assert output.count("upstream attempt") == len(OUTCOMES)
    assert f"keys {REDACTED} {REDACTED} {REDACTED} k={REDACTED}" in output
    assert f"ValueError: upstream refused {REDACTED}" in output
    assert f"GET /x?auth=Bearer%20{REDACTED}&p={REDACTED}" in output
    for secret in (partner_key, quote_plus(partner_key), shop.key, webhook_secret):
        assert secret not in output
        assert not [b for b in bodies if secret.encode() in b]
    attempts = list(Attempt.objects.values_list("error", "worker"))
    assert len(attempts) == len(OUTCOMES)
    assert not [a for a in attempts if partner_key in "".join(a)]
    assert not Purchase.objects.filter(error__contains=partner_key).exists()


def test_no_secret_in_a_real_server_log_or_any_answer(
    start_gateway: Any, shop: Any, tmp_path: Any
) -> None:
    partner, partner_key = "acme-processor", "pk-" + secrets.token_urlsafe(24)
    upstream = start_in_thread(partner, partner_key)
    try:
        server = start_gateway(
            CASHBACK_SANDBOX="off",
            CASHBACK_PARTNER=partner,
            CASHBACK_PARTNER_KEY=partner_key,
            CASHBACK_API_URL=upstream.url,
            LOG_LEVEL="DEBUG",
        )
        answers = _walk(server.url, shop.key, upstream)
    finally:
        upstream.shutdown()
        upstream.server_close()

    log = server.log()
    assert [status for _, status, _ in answers] == [
        201, 422, 202, 202, 200, 200, 200, 200, 200, 200, 200, 200, 200, 401, 404, 404, 400,
        405, 413,
    ]  # fmt: skip
    # The gateway really sent the key upstream and really logged the walk.
    assert upstream.state.log[0]["partner_key_ok"] == "True"
    assert log.count("upstream attempt") == 4
    assert f"/no-such-page/{REDACTED}" in log  # the access log line of the key in a URL
    for secret in (partner_key, shop.key):
        assert secret not in log
        assert not [(p, s) for p, s, body in answers if secret.encode() in body]


def _walk(base: str, key: str, upstream: SandboxServer) -> list[tuple[str, int, bytes]]:
    """Call every kind of endpoint and error once; return (path, status, body) of each."""
    auth = {"Authorization": f"Bearer {key}"}
    answers: list[tuple[str, int, bytes]] = []

    def call(method: str, path: str, **kw: Any) -> None:
        response = requests.request(method, base + path, timeout=10, **kw)
        answers.append((path, response.status_code, response.content))

    for n, mode in enumerate(("ok", "error", "auth", "garbage")):
        upstream.state.set_mode(mode, count=1)
        call("POST", "/api/v1/purchases", json=purchase_body(order_id=f"W-{n}"), headers=auth)
    call("POST", "/api/v1/purchases", json=purchase_body(order_id="W-0"), headers=auth)
    for path in (
        "/api/v1/purchases/W-2",
        "/api/v1/purchases?status=sent",
        "/api/v1/balance",
        "/api/v1/ledger",
        "/api/v1/merchant",
        "/api/schema/",
        "/api/docs/",
        "/admin/login/",
    ):
        call("GET", path, headers=auth)
    call("GET", "/api/v1/balance", headers={"Authorization": f"Bearer {key}x"})
    call("GET", "/api/v1/purchases/nope", headers=auth)
    call("GET", f"/no-such-page/{key}", headers=auth)
    json_auth = auth | {"Content-Type": "application/json"}
    call("POST", "/api/v1/purchases", data=b"{not json", headers=json_auth)
    call("PUT", "/api/v1/balance", headers=auth)
    call("POST", "/api/v1/purchases", data=b"x" * 70_000, headers=auth)
    return answers
