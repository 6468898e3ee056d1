"""`/metrics` of a real deployment: gunicorn with two workers and a `cashback_worker`, each
writing its own samples, added up in one scrape after purchases of every outcome."""

from __future__ import annotations

import glob
import time
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import requests

from cashback.models import Purchase, Status, WebhookDelivery
from cashback.sandbox import start_in_thread
from gateway.money import partner_cost_minor
from merchants.models import EntryKind
from merchants.services import create_merchant, record_entry
from tests.conftest import purchase_body
from tests.monitoring.live import Receiver, process_env, scrape
from tests.multihost.cluster import GUNICORN, MANAGE, Cluster, free_port, wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TOKEN = "metrics-token-for-the-test-0123456789"


def wait_until(condition: Any, timeout: float = 20, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_one_scrape_adds_up_every_gunicorn_worker_and_the_worker_process(
    cluster: Cluster, tmp_path: Path, settings: Any
) -> None:
    sandbox = start_in_thread(settings.CASHBACK_PARTNER, settings.CASHBACK_PARTNER_KEY)
    receiver = Receiver()
    try:
        merchant, key = create_merchant(
            "Metrics Shop", public_id="metrics-shop", percentage=Decimal(1)
        )
        record_entry(merchant, EntryKind.DEPOSIT, Decimal("100.00"), "EUR", memo="test")
        merchant.webhook_url = receiver.url
        merchant.rotate_webhook_secret()
        merchant.save()

        web_dir, worker_dir = tmp_path / "metrics-web", tmp_path / "metrics-worker"
        web_dir.mkdir()
        worker_dir.mkdir()
        port = free_port("127.0.0.1")
        base = f"http://127.0.0.1:{port}"
        common = {
            "CASHBACK_SANDBOX_URL": sandbox.url,
            "CASHBACK_QUEUED_GRACE": "30",
            "CASHBACK_RETRY_SCHEDULE": "1",
            "METRICS_TOKEN": TOKEN,
            "METRICS_CACHE_SECONDS": "0",
            "METRICS_RUNWAY_CACHE_SECONDS": "0",
            # Counted in a file cache shared by both gunicorn workers, so the limit is exact.
            "CACHE_URL": f"filecache://{tmp_path / 'cache'}",
        }
        web = cluster.start(
            "web",
            GUNICORN,
            process_env(
                **common,
                GUNICORN_BIND=f"127.0.0.1:{port}",
                PROMETHEUS_MULTIPROC_DIR=str(web_dir),
                METRICS_EXTRA_DIRS=str(worker_dir),
                API_THROTTLE_RATE="6/m",
            ),
        )
        wait_ready(f"{base}/healthz", web)
        api = requests.Session()
        api.headers["Authorization"] = f"Bearer {key}"

        def buy(order_id: str, mode: str) -> str:
            sandbox.state.set_mode(mode, count=1)
            response = api.post(
                f"{base}/api/v1/purchases", json=purchase_body(order_id=order_id), timeout=10
            )
            return f"{response.status_code} {response.json()['status']}"

        assert buy("m-sent", "ok") == "201 sent"
        assert buy("m-rejected", "error") == "422 rejected"
        assert buy("m-pending", "503") == "202 pending"
        assert buy("m-unknown", "500") == "202 unknown"
        # Requests 5 and 6 of the key's 6 a minute pass; 7 and 8 are throttled.
        statuses = [api.get(f"{base}/api/v1/merchant", timeout=10).status_code for _ in range(4)]
        assert statuses == [200, 200, 429, 429]
        wrong = requests.get(
            f"{base}/api/v1/merchant", headers={"Authorization": "Bearer cbk_wrong"}, timeout=10
        )
        assert wrong.status_code == 401

        # The worker retries the pending purchase (sandbox answers ok again) and delivers
        # the webhooks of the three final purchases.
        cluster.start(
            "worker",
            [*MANAGE, "cashback_worker"],
            process_env(**common, PROMETHEUS_MULTIPROC_DIR=str(worker_dir)),
        )
        wait_until(
            lambda: Purchase.objects.get(order_id="m-pending").status == Status.SENT,
            what="the worker to send the pending purchase",
        )
        wait_until(
            lambda: (
                WebhookDelivery.objects.filter(state=WebhookDelivery.State.DELIVERED).count() == 3
            ),
            what="three webhooks delivered",
        )

        denied = requests.get(f"{base}/metrics", timeout=10)
        assert (denied.status_code, denied.headers["WWW-Authenticate"]) == (
            401,
            'Bearer realm="metrics"',
        )
        wrong_token = requests.get(
            f"{base}/metrics", headers={"Authorization": "Bearer nope"}, timeout=10
        )
        assert wrong_token.status_code == 401

        # Counter files of the gunicorn workers and of the worker process, in their own dirs.
        assert glob.glob(str(worker_dir / "counter_*.db"))
        assert glob.glob(str(web_dir / "counter_*.db")) and glob.glob(
            str(web_dir / "histogram_*.db")
        )

        def settled() -> bool:
            s = scrape(f"{base}/metrics", TOKEN)
            return s.get(("cashback_webhook_deliveries_total", (("result", "delivered"),))) == 3

        wait_until(settled, what="the worker's webhook counter")
        s = scrape(f"{base}/metrics", TOKEN)
        assert value(s, "cashback_purchases_total", outcome="sent") == 2  # web 1, worker 1
        assert value(s, "cashback_purchases_total", outcome="rejected") == 1
        assert value(s, "cashback_purchases_total", outcome="pending") == 1
        assert value(s, "cashback_purchases_total", outcome="unknown") == 1
        assert ("cashback_purchases_total", (("outcome", "failed"),)) not in s
        assert value(s, "cashback_upstream_calls_total", outcome="ok") == 2
        assert value(s, "cashback_upstream_calls_total", outcome="rejected") == 1
        assert value(s, "cashback_upstream_calls_total", outcome="not_sent") == 1
        assert value(s, "cashback_upstream_calls_total", outcome="ambiguous") == 1
        assert value(s, "cashback_upstream_call_duration_seconds_count") == 5
        assert value(s, "cashback_upstream_call_duration_seconds_bucket", le="+Inf") == 5
        assert value(s, "cashback_webhook_deliveries_total", result="delivered") == 3
        assert value(s, "cashback_throttled_requests_total", scope="api_key") == 2
        assert value(s, "cashback_api_auth_failures_total") == 1
        assert value(s, "cashback_worker_passes_total") >= 1

        for status, count in [
            ("queued", 0),
            ("sending", 0),
            ("pending", 0),
            ("unknown", 1),
            ("failed", 0),
        ]:
            assert value(s, "cashback_purchases_in_status", status=status) == count, status
        unknown = Purchase.objects.get(order_id="m-unknown")
        assert 0 < value(s, "cashback_oldest_unknown_age_seconds") < 60
        assert value(s, "cashback_oldest_due_age_seconds", status="pending") == 0
        assert value(s, "cashback_webhook_backlog", state="pending") == 0
        assert value(s, "cashback_webhook_backlog", state="delivering") == 0
        assert value(s, "cashback_workers_live") == 1
        assert 0 <= value(s, "cashback_worker_heartbeat_age_seconds") < 10
        assert value(s, "cashback_alerts_open", kind="auth_failed") == 0

        # Four reservations of 1 % of 12.50 EUR, one released (the rejected purchase).
        cost = partner_cost_minor(1250, Decimal(1))
        assert unknown.reserved_minor == cost
        runway = value(s, "cashback_deposit_runway_days", merchant="metrics-shop", currency="EUR")
        assert runway == float(Fraction((10000 - 3 * cost) * 7, 3 * cost))
        # Bounded labels: a merchant and a currency, nothing of an order or a customer.
        runway_labels = [dict(k[1]) for k in s if k[0] == "cashback_deposit_runway_days"]
        assert runway_labels == [{"merchant": "metrics-shop", "currency": "EUR"}]
    finally:
        sandbox.shutdown()
        sandbox.server_close()
        receiver.stop()
