"""The worker's heartbeat: a real `cashback_worker` keeps readiness green when it is required;
stopped (by SIGTERM) or killed (SIGKILL) it turns readiness red and raises the admin banner."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from monitoring.heartbeat import Heartbeat, worker_status
from monitoring.models import WorkerHeartbeat
from tests.monitoring.live import process_env
from tests.multihost.cluster import MANAGE, Cluster

pytestmark = pytest.mark.django_db(transaction=True)

SILENT_AFTER = 1.5


def wait_until(condition: Any, timeout: float = 20, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def readyz() -> tuple[int, dict[str, str]]:
    response = Client().get("/readyz")
    return response.status_code, response.json()


@pytest.fixture
def staff_client(settings: Any) -> Client:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    user = User.objects.create_superuser("ops", "ops@example.com", "pw-for-ops-0123")
    client = Client()
    client.force_login(user)
    return client


def banner(client: Client) -> bool:
    return "WORKER SILENT:" in client.get("/admin/").content.decode()


def test_readiness_and_banner_follow_a_real_worker(
    cluster: Cluster, settings: Any, staff_client: Client
) -> None:
    settings.READYZ_REQUIRE_WORKER = True
    settings.WORKER_SILENT_AFTER = SILENT_AFTER
    assert readyz() == (503, {"status": "unavailable", "database": "ok", "worker": "silent"})
    assert banner(staff_client)

    env = process_env(WORKER_HEARTBEAT_INTERVAL="0.2", CASHBACK_WORKER_IDLE_SLEEP="0.1")
    worker = cluster.start("worker", [*MANAGE, "cashback_worker"], env)
    wait_until(lambda: readyz()[0] == 200, what="the worker's first heartbeat")
    assert readyz() == (200, {"status": "ok", "database": "ok", "worker": "ok"})
    assert not banner(staff_client)
    beat = WorkerHeartbeat.objects.get()
    assert (beat.pid, beat.version, beat.stopped_at) == (worker.pid, "1.0.0", None)
    assert beat.worker == f"{beat.host}:{worker.pid}"

    # SIGTERM: the worker says it stopped, so readiness turns red at once.
    os.kill(worker.pid, signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
    cluster.procs.pop("worker")
    assert readyz()[0] == 503
    assert banner(staff_client)
    assert WorkerHeartbeat.objects.get().stopped_at is not None

    # SIGKILL: nothing is recorded; readiness turns red once the heartbeat is too old.
    worker = cluster.start("worker2", [*MANAGE, "cashback_worker"], env)
    wait_until(lambda: readyz()[0] == 200, what="the second worker's heartbeat")
    killed_at = time.monotonic()
    cluster.kill("worker2")
    wait_until(lambda: readyz()[0] == 503, what="readiness to turn red")
    assert time.monotonic() - killed_at >= SILENT_AFTER - 0.5
    assert banner(staff_client)
    assert worker_status().live == 0


def test_readiness_ignores_the_worker_unless_required(settings: Any) -> None:
    settings.READYZ_REQUIRE_WORKER = False
    assert readyz() == (200, {"status": "ok", "database": "ok"})


def test_a_heartbeat_writes_at_most_once_per_interval(settings: Any) -> None:
    settings.WORKER_HEARTBEAT_INTERVAL = 60
    beat = Heartbeat()
    beat.beat()
    first = WorkerHeartbeat.objects.get().last_pass_at
    beat.beat()
    assert WorkerHeartbeat.objects.get().last_pass_at == first
    beat.beat(force=True)
    assert WorkerHeartbeat.objects.get().last_pass_at > first
    assert worker_status(timezone.now()).live == 1
