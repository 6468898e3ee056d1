"""Many hosts, one truth: two gateway hosts and two workers on one PostgreSQL and one Redis.

Every process is real and started with the commands of docs/deploy.md: gunicorn with
gunicorn.conf.py on 127.0.0.2 and 127.0.0.3 (Linux routes all of 127.0.0.0/8 to loopback),
`manage.py cashback_worker` twice, and `manage.py cashback_sandbox` as upstream. They share
the pytest-django test database, which is why the tests run with `transaction=True`.
"""

from __future__ import annotations

import collections
import io
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
import requests
from django.conf import settings
from django.core.management import call_command
from django.db import connection

from cashback.models import Attempt, Hold, Outcome, Purchase, Status
from cashback.worker import LEASE_EXPIRED
from tests.multihost.cluster import GUNICORN, MANAGE, Cluster, free_port, wait_ready

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

HOST_A, HOST_B = "127.0.0.2", "127.0.0.3"
ADDRESS = "WR5FPYE6LHBQ57ZCFUTJXDDNHWK5355S"
SHOP = "multihost-shop"
MAX_ORDERS = 2000  # the load runs until the faults are over; this only bounds it
RACED_EVERY = 3  # every third order goes to both hosts at the same moment
ORDERS_PER_SECOND = 40
OPEN = (Status.QUEUED, Status.SENDING, Status.PENDING)
# Why a purchase may end `unknown` here: a killed sender, or an answer lost to a killed upstream.
AMBIGUOUS = {
    LEASE_EXPIRED,
    "connection lost after the request was sent",
    "no answer within 5 s (read timeout)",
}


def database_url() -> str:
    """Return a DATABASE_URL for the test database this test runs on."""
    s = connection.settings_dict
    auth = quote(s["USER"] or "postgres", safe="")
    if s["PASSWORD"]:
        auth += ":" + quote(s["PASSWORD"], safe="")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def redis_url() -> str:
    """Return a CACHE_URL whose keys no other test run can share."""
    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=2).ping()
    except redis.RedisError:
        if os.environ.get("REQUIRE_POSTGRES"):  # CI: the multi-host test must run there
            pytest.fail("Redis does not answer at 127.0.0.1:6379")
        pytest.skip("Redis does not answer at 127.0.0.1:6379")
    return f"redis://127.0.0.1:6379/0?key_prefix=multihost-{uuid.uuid4().hex[:12]}"


def host_env(**overrides: str) -> dict[str, str]:
    """Return the environment every host of the deployment gets (docs/deploy.md)."""
    env = dict(os.environ)
    env.update(
        {
            # The same on every host, and the same as this process's, which creates the keys.
            "SECRET_KEY": settings.SECRET_KEY,
            "API_KEY_HMAC_SECRET": settings.API_KEY_HMAC_SECRET,
            "DATABASE_URL": database_url(),
            "DATABASE_POOL_MIN": "1",
            # Small pools: other test runs share this PostgreSQL and its 100 connections.
            "DATABASE_POOL_MAX": "4",
            "ALLOWED_HOSTS": f"{HOST_A},{HOST_B},127.0.0.1,localhost",
            "CASHBACK_SANDBOX": "on",
            "API_THROTTLE_RATE": "off",
            "API_IP_THROTTLE_RATE": "off",
            "SECURE_COOKIES": "off",
            "DEBUG": "off",
            "LOG_LEVEL": "WARNING",
            "GUNICORN_WORKERS": "1",
            "GUNICORN_THREADS": "4",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(overrides)
    return env


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """A cluster whose processes are all killed at the end, logs printed if the test failed.

    Set MULTIHOST_LOG_DIR to keep the logs somewhere that outlives pytest's tmp_path.
    """
    logs = Path(os.environ.get("MULTIHOST_LOG_DIR") or tmp_path) / request.node.name
    logs.mkdir(parents=True, exist_ok=True)
    c = Cluster(logs, {})
    try:
        yield c
    finally:
        c.kill_all()
        report = getattr(request.node, "report_call", None)
        if report is None or report.failed:
            c.dump_logs()


def start_gateway(cluster: Cluster, name: str, host: str, port: int) -> None:
    cluster.start(name, GUNICORN, {"GUNICORN_BIND": f"{host}:{port}"})


def manage(*args: str) -> str:
    """Run a management command here (one more host of the deployment); return its output."""
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=out)
    return out.getvalue()


def create_merchant(name: str, public_id: str, *extra: str) -> str:
    """Create a merchant with the documented command; return its API key."""
    out = manage("create_merchant", name, "--id", public_id, *extra, "--json")
    return json.loads(out.strip().splitlines()[-1])["api_key"]


# --- The client: an integration behind a load balancer ------------------------------------


@dataclass(frozen=True)
class Answer:
    order_id: str
    host: str
    status: int | None  # None: no answer at all (the host was gone)
    body: dict[str, Any] | None


class Client:
    """POST purchases to the hosts; on no answer or a 5xx, try the next host, as an LB would."""

    def __init__(self, hosts: list[str], key: str) -> None:
        self.hosts = hosts
        self.headers = {"Authorization": f"Bearer {key}"}
        self.answers: list[Answer] = []
        self.orders = 0  # orders started, numbered 0 … orders - 1
        self._lock = threading.Lock()
        self._local = threading.local()

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def purchase(self, body: dict[str, str], first: int, barrier: threading.Barrier | None) -> None:
        if barrier is not None:
            barrier.wait(timeout=10)
        for attempt in range(8):
            host = self.hosts[(first + attempt) % len(self.hosts)]
            try:
                response = self._session().post(
                    f"{host}/api/v1/purchases", json=body, headers=self.headers, timeout=20
                )
            except requests.RequestException:
                self._record(Answer(body["order_id"], host, None, None))
                self._local.session = requests.Session()  # drop the dead keep-alive pool
                time.sleep(0.2)
                continue
            try:
                data = response.json()
            except ValueError:
                data = {"not_json": response.text[:500]}
            self._record(Answer(body["order_id"], host, response.status_code, data))
            if response.status_code < 500:
                return
            time.sleep(0.2)

    def _record(self, answer: Answer) -> None:
        with self._lock:
            self.answers.append(answer)


def purchase_body(i: int) -> dict[str, str]:
    return {
        "order_id": f"MH-{i:04d}",
        "customer": f"c-{i % 17}",
        "description": "multihost",
        "address": ADDRESS,
        "currency": "EUR",
        "currency_amount": f"{10 + i % 40}.{i % 100:02d}",
    }


def run_load(client: Client, stop: threading.Event) -> None:
    """Send purchases at a steady pace until `stop`; every RACED_EVERY-th to both hosts at once."""

    def one(i: int) -> None:
        body = purchase_body(i)
        if i % RACED_EVERY:
            client.purchase(body, i % 2, None)
            return
        barrier = threading.Barrier(2)
        pair = [
            threading.Thread(target=client.purchase, args=(body, first, barrier))
            for first in (0, 1)
        ]
        for thread in pair:
            thread.start()
        for thread in pair:
            thread.join()

    started = time.monotonic()
    futures = []
    with ThreadPoolExecutor(32, thread_name_prefix="client") as pool:
        while not stop.is_set() and client.orders < MAX_ORDERS:
            time.sleep(max(0.0, started + client.orders / ORDERS_PER_SECOND - time.monotonic()))
            futures.append(pool.submit(one, client.orders))
            client.orders += 1
    for future in futures:
        future.result()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def wait_until_settled(timeout: float) -> None:
    """Wait until no purchase is queued, sending or pending (the workers finished)."""
    deadline = time.monotonic() + timeout
    while Purchase.objects.filter(status__in=OPEN).exists():
        if time.monotonic() > deadline:
            left = collections.Counter(
                Purchase.objects.filter(status__in=OPEN).values_list("status", flat=True)
            )
            raise AssertionError(f"still open after {timeout:g} s: {dict(left)}")
        time.sleep(0.25)


# --- The tests ----------------------------------------------------------------------------


def test_two_hosts_and_two_workers_lose_nothing_and_send_nothing_twice(
    cluster: Cluster, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    port = free_port(HOST_A, HOST_B)
    sandbox_port = free_port("127.0.0.1")
    sandbox = f"http://127.0.0.1:{sandbox_port}"
    cluster.env = host_env(
        CACHE_URL=redis_url(),
        CASHBACK_SANDBOX_URL=f"{sandbox}/new_purchase",
        CASHBACK_RETRY_SCHEDULE="1,1,2",
        CASHBACK_QUEUED_GRACE="1",
        CASHBACK_WORKER_IDLE_SLEEP="0.2",
        CASHBACK_WORKER_THREADS="3",
        # Short leases, so `sending` rows of the killed processes turn `unknown` quickly.
        CASHBACK_TIMEOUT="5",
        CASHBACK_CONNECT_TIMEOUT="1",
        CASHBACK_LEASE_MARGIN="1",
        LOG_LEVEL="INFO",
    )
    state_file = tmp_path / "sandbox-orders.jsonl"
    sandbox_cmd = [
        *MANAGE,
        *("cashback_sandbox", "--port", str(sandbox_port), "--latency-ms", "30"),
        *("--state-file", str(state_file)),
    ]
    cluster.start("sandbox", sandbox_cmd)
    start_gateway(cluster, "gateway-a", HOST_A, port)
    start_gateway(cluster, "gateway-b", HOST_B, port)
    cluster.start("worker-1", [*MANAGE, "cashback_worker"])
    cluster.start("worker-2", [*MANAGE, "cashback_worker"])
    key = create_merchant("Multihost shop", SHOP, "--percentage", "2")
    manage("record_deposit", SHOP, "100.00", "EUR")
    hosts = [f"http://{HOST_A}:{port}", f"http://{HOST_B}:{port}"]
    wait_ready(f"{sandbox}/healthz", cluster.procs["sandbox"])
    for name, url in zip(("gateway-a", "gateway-b"), hosts, strict=True):
        wait_ready(f"{url}/readyz", cluster.procs[name])

    client = Client(hosts, key)
    stop = threading.Event()
    started = time.monotonic()
    load = threading.Thread(target=run_load, args=(client, stop), name="load")
    load.start()
    # Faults follow the load's progress, not the clock, so a slow machine cannot push them
    # past the end of the load.
    faults = []
    try:
        wait_for(lambda: len(client.answers) >= 40, "the first 40 answers")
        mode = requests.post(f"{sandbox}/_sandbox/mode", json={"mode": "503", "count": 15})
        assert mode.status_code == 200
        faults.append("upstream answered 503 to 15 requests")
        time.sleep(1)
        cluster.kill("sandbox")
        down = time.monotonic()
        time.sleep(1.5)
        cluster.start("sandbox", sandbox_cmd)
        time.sleep(0.5)
        cluster.kill("gateway-b")
        faults.append(f"gateway host {HOST_B} killed (SIGKILL)")
        time.sleep(0.5)
        cluster.kill("worker-1")
        faults.append("worker-1 killed (SIGKILL)")
        time.sleep(1)
    finally:
        stop.set()
        load.join(timeout=120)
    assert not load.is_alive()
    wait_ready(f"{sandbox}/healthz", cluster.procs["sandbox"], timeout=60)
    faults.append(f"upstream killed (SIGKILL), back {time.monotonic() - down:.1f} s later")
    wait_until_settled(timeout=60)
    elapsed = time.monotonic() - started

    purchases = {p.order_id: p for p in Purchase.objects.filter(merchant__public_id=SHOP)}
    counts = {
        row["order_id"]: row["count"]
        for row in requests.get(f"{sandbox}/_sandbox/orders", timeout=5).json()["orders"]
        if row["merchant"] == SHOP
    }
    stats = requests.get(f"{sandbox}/_sandbox/stats", timeout=5).json()
    answered = [a for a in client.answers if a.status is not None]
    ok = [a for a in answered if 200 <= a.status < 300]  # type: ignore[operator]
    lost = [
        a.order_id
        for a in ok
        if a.order_id not in purchases or str(purchases[a.order_id].id) != a.body["id"]  # type: ignore[index]
    ]
    sent_twice = sorted(order_id for order_id, n in counts.items() if n > 1)
    statuses = collections.Counter(p.status for p in purchases.values())
    ledger = manage("check_ledger")
    not_sent = Attempt.objects.filter(purchase__merchant__public_id=SHOP, outcome=Outcome.NOT_SENT)
    retried_503 = not_sent.filter(http_status=503).values("purchase").distinct().count()
    retried_refused = not_sent.filter(http_status=None).values("purchase").distinct().count()
    summary = (
        f"multihost: {client.orders} purchases, {len(client.answers)} requests, "
        f"{len(range(0, client.orders, RACED_EVERY))} duplicates raced over 2 hosts, "
        f"{len(faults)} faults injected ({'; '.join(faults)}), "
        f"{retried_503} purchases pending on 503 and {retried_refused} on a refused "
        f"connection, final {dict(sorted(statuses.items()))}, upstream saw {len(counts)} orders, "
        f"lost {len(lost)}, sent twice {len(sent_twice)}, settled in {elapsed:.1f} s"
    )
    print("\n" + summary)
    # Shown at the end of every run, xdist included (tests/conftest.py prints "summary").
    record_property("summary", summary)

    # Every answer came from a live host and was one the API promises for a new or replay.
    assert [a for a in answered if a.status not in (200, 201, 202)] == []
    assert {a.host for a in client.answers if a.status is None} == {hosts[1]}
    # The upstream faults took effect: purchases went `pending` on 503 and on a refused
    # connection, and were retried by the workers.
    assert retried_503 > 0
    assert retried_refused > 0
    # Every purchase that got a 2xx is stored, under the id it was answered with.
    assert {a.order_id for a in ok} == {f"MH-{i:04d}" for i in range(client.orders)}
    assert lost == []
    assert len(purchases) == client.orders
    # A 201 said `sent`: the database agrees, down to the cashback amount.
    for a in ok:
        if a.status == 201:
            p = purchases[a.order_id]
            assert (p.status, p.cashback_amount) == (Status.SENT, a.body["cashback_amount"])  # type: ignore[index]
    # Upstream saw each order at most once, exactly once if it ended `sent`, and nothing else.
    assert sent_twice == []
    assert stats["duplicates"] == 0
    assert set(counts) <= set(purchases)
    assert [o for o, p in purchases.items() if p.status == Status.SENT and counts.get(o) != 1] == []
    # Nothing was rejected or failed: only `sent`, or `unknown` where a kill hid the answer.
    assert set(statuses) <= {Status.SENT, Status.UNKNOWN}
    assert statuses[Status.SENT] > 0
    unexplained = [
        (o, p.error)
        for o, p in purchases.items()
        if p.status == Status.UNKNOWN
        and p.error not in AMBIGUOUS
        # A body cut short by the killed upstream (requests' ChunkedEncodingError and kin).
        and not (p.error or "").startswith("request failed (")
    ]
    assert unexplained == []
    # The ledger was exercised both ways: reservations captured, and downgrades once it ran dry.
    assert any(p.hold == Hold.CAPTURED for p in purchases.values())
    assert any(p.percentage == 0 and p.reserved_minor == 0 for p in purchases.values())
    assert "Ledger OK" in ledger


def test_an_api_key_limit_is_shared_by_every_host_and_process(cluster: Cluster) -> None:
    port = free_port(HOST_A, HOST_B)
    cluster.env = host_env(CACHE_URL=redis_url(), API_THROTTLE_RATE="10/m")
    start_gateway(cluster, "gateway-a", HOST_A, port)
    start_gateway(cluster, "gateway-b", HOST_B, port)
    key = create_merchant("Throttled shop", "throttled-shop")
    hosts = [f"http://{HOST_A}:{port}", f"http://{HOST_B}:{port}"]
    for name, url in zip(("gateway-a", "gateway-b"), hosts, strict=True):
        wait_ready(f"{url}/readyz", cluster.procs[name])

    answers = [
        requests.get(
            f"{hosts[i % 2]}/api/v1/balance",
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        for i in range(15)
    ]

    # Each host saw at most 8 requests: counted per host, all 15 would pass.
    assert [r.status_code for r in answers] == [200] * 10 + [429] * 5
    assert all(int(r.headers["Retry-After"]) > 0 for r in answers[10:])
    assert {r.url.split("/api/")[0] for r in answers[10:]} == set(hosts)
