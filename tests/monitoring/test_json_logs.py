"""`LOG_FORMAT=json` on a real deployment: gunicorn (its error and access logs too) and a
worker print one JSON object per line, with the request's fields, and never a secret."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests

from cashback.models import Purchase, Status
from cashback.sandbox import start_in_thread
from merchants.services import create_merchant
from tests.conftest import purchase_body
from tests.monitoring.live import process_env
from tests.multihost.cluster import GUNICORN, MANAGE, Cluster, free_port, wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def wait_until(condition: Any, timeout: float = 20, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Parse every line of a log; fail on the first that is not one JSON object."""
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            record = json.loads(line)
        except ValueError:
            raise AssertionError(f"{path.name} line {number} is not JSON: {line!r}") from None
        assert isinstance(record, dict), line
        records.append(record)
    return records


def test_every_line_is_json_with_the_request_fields_and_no_secret(
    cluster: Cluster, settings: Any
) -> None:
    sandbox = start_in_thread(settings.CASHBACK_PARTNER, settings.CASHBACK_PARTNER_KEY)
    try:
        _, key = create_merchant("Json Shop", public_id="json-shop", percentage=Decimal(0))
        port = free_port("127.0.0.1")
        base = f"http://127.0.0.1:{port}"
        env = process_env(
            LOG_FORMAT="json",
            LOG_LEVEL="INFO",
            CASHBACK_SANDBOX_URL=sandbox.url,
            CASHBACK_RETRY_SCHEDULE="1",
            GUNICORN_BIND=f"127.0.0.1:{port}",
        )
        web = cluster.start("web", GUNICORN, env)
        wait_ready(f"{base}/healthz", web)
        cluster.start("worker", [*MANAGE, "cashback_worker"], env)
        api = requests.Session()
        api.headers["Authorization"] = f"Bearer {key}"

        patched = api.patch(
            f"{base}/api/v1/merchant", json={"webhook_url": "http://127.0.0.1:9/hooks"}, timeout=10
        )
        assert patched.status_code == 200, patched.text
        webhook_secret = patched.json()["webhook_secret"]
        assert webhook_secret.startswith("whsec_")

        sent_ids = {}
        for order_id, mode in [("j-sent", "ok"), ("j-rejected", "error"), ("j-pending", "503")]:
            sandbox.state.set_mode(mode, count=1)
            response = api.post(
                f"{base}/api/v1/purchases", json=purchase_body(order_id=order_id), timeout=10
            )
            assert response.status_code < 500, response.text
            sent_ids[order_id] = response.headers["X-Request-ID"]
        # Secrets where careless clients put them: in the URL and in a header.
        leaky = [
            f"{base}/api/v1/purchases?api_key={key}",
            f"{base}/api/v1/merchant?secret={webhook_secret}",
            f"{base}/new_purchase?partner_key={settings.CASHBACK_PARTNER_KEY}",
        ]
        for url in leaky:
            assert requests.get(url, timeout=10).status_code < 500
        assert (
            requests.get(
                f"{base}/api/v1/merchant", headers={"Authorization": f"Bearer {key}x"}, timeout=10
            ).status_code
            == 401
        )
        wait_until(
            lambda: Purchase.objects.get(order_id="j-pending").status == Status.SENT,
            what="the worker to retry the pending purchase",
        )
    finally:
        sandbox.shutdown()
        sandbox.server_close()
    cluster.kill_all()

    web_lines = json_lines(cluster.log_dir / "web.log")
    worker_lines = json_lines(cluster.log_dir / "worker.log")
    everything = (cluster.log_dir / "web.log").read_text() + (
        cluster.log_dir / "worker.log"
    ).read_text()
    for secret in (key, webhook_secret, settings.CASHBACK_PARTNER_KEY, key[4:], webhook_secret[6:]):
        assert secret not in everything
    assert everything.count("[redacted]") >= 3

    # gunicorn's own error log is JSON too.
    assert any(
        r["logger"] == "gunicorn.error" and "Booting worker" in r["message"] for r in web_lines
    )
    access = [r for r in web_lines if r["logger"] == "gunicorn.access"]
    post = next(r for r in access if r["request_id"] == sent_ids["j-sent"])
    assert (post["method"], post["path"], post["status"], post["merchant"]) == (
        "POST",
        "/api/v1/purchases",
        201,
        "json-shop",
    )
    assert isinstance(post["duration_ms"], float) and post["duration_ms"] > 0
    leaked = [
        r for r in access if r["path"] in ("/api/v1/purchases", "/new_purchase") and r["query"]
    ]
    assert sorted(r["query"] for r in leaked) == ["api_key=[redacted]", "partner_key=[redacted]"]

    # The upstream attempt of a request carries its request id, merchant, order and outcome.
    attempts = {
        r["order_id"]: r for r in web_lines + worker_lines if r["message"] == "upstream attempt"
    }
    sent = attempts["j-sent"]
    assert (sent["request_id"], sent["merchant"], sent["outcome"], sent["level"]) == (
        sent_ids["j-sent"],
        "json-shop",
        "ok",
        "INFO",
    )
    assert isinstance(sent["ms"], int)
    assert attempts["j-rejected"]["outcome"] == "rejected"
    # The worker's retry of the pending one: no request, so no request id.
    assert attempts["j-pending"]["outcome"] == "ok"
    assert attempts["j-pending"]["request_id"] == "-"
    assert all("time" in r and "level" in r for r in web_lines + worker_lines)
