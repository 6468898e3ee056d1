"""Processes killed at the worst moments lose nothing and send nothing twice.

Each test runs a real process (SIGKILL, no cleanup) against the test database.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from cashback import worker
from cashback.models import Purchase, Status

ROOT = Path(__file__).resolve().parents[2]

STORE_THEN_DIE = """
import os, signal, django
django.setup()
from cashback.serializers import PurchaseRequestSerializer
from cashback.services import submit_purchase
from merchants.models import Merchant
s = PurchaseRequestSerializer(data={
    "customer": "c-1", "order_id": "killed-1", "address": "WR5FPYE6LHBQ57ZCFUTJXDDNHWK5355S",
    "currency": "EUR", "currency_amount": "3.00"})
s.is_valid(raise_exception=True)
submit_purchase(Merchant.objects.get(public_id=os.environ["MERCHANT"]), s.to_input(), send=False)
os.kill(os.getpid(), signal.SIGKILL)  # dies after storing, before claiming
"""


def database_url() -> str:
    """Return a DATABASE_URL for the test database, for the processes a test starts."""
    name = connection.settings_dict["NAME"]
    if connection.vendor == "sqlite":
        return f"sqlite:///{name}"
    s = connection.settings_dict
    return f"postgres://{s['USER'] or 'postgres'}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{name}"


def child_env(**extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DJANGO_SETTINGS_MODULE": "gateway.settings",
    }
    env.update(extra)
    return env


@pytest.mark.django_db(transaction=True)
def test_a_process_killed_after_storing_leaves_a_queued_purchase_the_worker_sends_once(
    make_merchant: Any, upstream: Any
) -> None:
    shop = make_merchant()
    done = subprocess.run(
        [sys.executable, "-c", STORE_THEN_DIE],
        cwd=ROOT,
        env=child_env(MERCHANT=shop.merchant.public_id),
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    purchase = Purchase.objects.get()
    assert purchase.status == Status.QUEUED
    assert upstream.state.requests == 0

    worker.run_once(now=timezone.now() + timedelta(seconds=6))
    worker.run_once(now=timezone.now() + timedelta(hours=30))

    purchase.refresh_from_db()
    assert purchase.status == Status.SENT
    assert upstream.state.sent_count(shop.merchant.public_id, "killed-1") == 1
    assert upstream.state.requests == 1


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_call_leaves_unknown_that_is_never_resent(
    make_merchant: Any, upstream: Any
) -> None:
    shop = make_merchant()
    upstream.state.set_mode("slow", slow_seconds=30)
    from cashback.serializers import PurchaseRequestSerializer
    from cashback.services import submit_purchase
    from tests.conftest import purchase_body

    s = PurchaseRequestSerializer(data=purchase_body())
    s.is_valid(raise_exception=True)
    submit_purchase(shop.merchant, s.to_input(), send=False)
    Purchase.objects.update(next_attempt_at=timezone.now() - timedelta(seconds=1))

    proc = subprocess.Popen(
        [sys.executable, "manage.py", "cashback_worker"],
        cwd=ROOT,
        env=child_env(
            CASHBACK_SANDBOX_URL=upstream.url,
            CASHBACK_TIMEOUT="60",
            CASHBACK_WORKER_IDLE_SLEEP="0.1",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while upstream.state.requests == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert upstream.state.requests == 1, "the worker never called upstream"
    finally:
        proc.kill()
        proc.wait(10)

    purchase = Purchase.objects.get()
    assert purchase.status == Status.SENDING
    upstream.state.set_mode("ok")
    worker.run_once(now=purchase.lease_until + timedelta(seconds=1))
    purchase.refresh_from_db()
    assert purchase.status == Status.UNKNOWN

    for hours in (1, 25, 100):
        worker.run_once(now=timezone.now() + timedelta(hours=hours))
    purchase.refresh_from_db()
    assert purchase.status == Status.UNKNOWN
    assert upstream.state.requests == 1


def started_worker(**env: str) -> tuple[subprocess.Popen[bytes], bytes]:
    """Start `cashback_worker` (INFO logs); return it and its log up to "worker started"."""
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "cashback_worker"],
        cwd=ROOT,
        env=child_env(CASHBACK_WORKER_IDLE_SLEEP="0.1", LOG_LEVEL="INFO", **env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    assert proc.stderr is not None
    started = b""
    while b"worker started" not in started and time.monotonic() < deadline:
        started += proc.stderr.readline()
    return proc, started


@pytest.mark.django_db(transaction=True)
def test_the_worker_exits_cleanly_on_sigterm() -> None:
    proc, _ = started_worker()
    try:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert proc.stderr is not None
        assert b"worker stopped" in proc.stderr.read()
    finally:
        proc.kill()


def niceness(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[16])  # field 19: nice


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("nice", ["7", "0"])
def test_the_worker_lowers_its_cpu_priority_by_cashback_worker_nice(nice: str) -> None:
    proc, started = started_worker(CASHBACK_WORKER_NICE=nice)
    try:
        assert f"nice={int(nice) + os.nice(0)}".encode() in started
        assert niceness(proc.pid) == int(nice) + os.nice(0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        proc.kill()


def test_a_worker_niceness_outside_0_to_19_is_refused_at_start() -> None:
    done = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=child_env(CASHBACK_WORKER_NICE="20"),
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert "CASHBACK_WORKER_NICE must be between 0 and 19." in done.stderr
