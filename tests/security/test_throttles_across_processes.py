"""Throttles hold across the processes of a host with the defaults (a live gunicorn with three
workers), and cost one Redis round trip per check with `CACHE_URL=redis://…`."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
import requests
from django.core.cache import cache

REDIS = "redis://127.0.0.1:6379/15"


def _burst(url: str, headers: dict[str, str], n: int) -> list[int]:
    """Send `n` requests on fresh connections from 16 threads, so every worker takes some."""

    def one(_: int) -> int:
        with requests.Session() as session:
            return session.get(
                url, headers=headers | {"Connection": "close"}, timeout=20
            ).status_code

    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(one, range(n)))


def test_the_key_limit_holds_across_three_gunicorn_workers(
    start_gateway: Any, make_merchant: Any
) -> None:
    shop = make_merchant()
    # The default cache (local memory, per process): each worker alone would let 20 through.
    server = start_gateway(GUNICORN_WORKERS="3", GUNICORN_THREADS="2", API_THROTTLE_RATE="20/m")

    codes = _burst(f"{server.url}/api/v1/balance", {"Authorization": f"Bearer {shop.key}"}, 80)

    assert (codes.count(200), codes.count(429)) == (20, 60), server.log()


def test_the_failed_key_limit_holds_across_three_gunicorn_workers(
    start_gateway: Any, shop: Any
) -> None:
    server = start_gateway(GUNICORN_WORKERS="3", GUNICORN_THREADS="2", API_IP_THROTTLE_RATE="20/m")
    url = f"{server.url}/api/v1/balance"

    guesses = _burst(url, {"Authorization": "Bearer cbk_guess"}, 80)
    right_key_there = requests.get(url, headers={"Authorization": f"Bearer {shop.key}"}, timeout=20)

    assert (guesses.count(401), guesses.count(429)) == (20, 60), server.log()
    # The address used up its failures: even a right key waits for the window to end.
    assert right_key_there.status_code == 429


@pytest.fixture
def redis_prefix(settings: Any) -> Iterator[str]:
    prefix = f"roundtrip-{uuid.uuid4().hex}"
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS,
            "KEY_PREFIX": prefix,
        }
    }
    try:
        cache.set("ping", 1, 5)
    except Exception as exc:  # the CI starts Redis; a laptop may not have it
        pytest.skip(f"Redis does not answer at {REDIS}: {exc}")
    yield prefix


class RedisMonitor:
    """The commands other clients send that name `marker`, seen through MONITOR."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.commands: list[str] = []
        self.client = redis.Redis.from_url(REDIS)
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        while not self.ready.wait(0.05):
            self.client.echo(f"{marker}-ready")

    def _watch(self) -> None:
        with self.client.monitor() as monitor:
            for entry in monitor.listen():
                command = str(entry["command"])
                if command == f"ECHO {self.marker}-ready":
                    self.ready.set()
                elif command == f"ECHO {self.marker}-end":
                    return
                elif (
                    self.ready.is_set()
                    and entry.get("client_type") != "lua"
                    and self.marker in command
                ):
                    self.commands.append(command)

    def stop(self) -> list[str]:
        self.client.echo(f"{self.marker}-end")
        self.thread.join(timeout=10)
        return self.commands


def test_a_request_costs_two_redis_round_trips_for_its_three_checks(
    make_merchant: Any, settings: Any, redis_prefix: str
) -> None:
    settings.API_THROTTLE_RATE = "100/m"
    settings.API_IP_THROTTLE_RATE = "100/m"
    shop = make_merchant()
    assert shop.client.get("/api/v1/balance").status_code == 200  # Redis learns the script

    monitor = RedisMonitor(redis_prefix)
    answered = shop.client.get("/api/v1/balance")
    commands = monitor.stop()
    sha = commands[0].split()[1] if commands else ""

    assert answered.status_code == 200
    # Before the key lookup, one script reads the address's failed checks and counts the
    # address; after it, one counts the key: two round trips, three checks.
    assert [c.split()[:3] for c in commands] == [["EVALSHA", sha, "2"], ["EVALSHA", sha, "1"]]
    names = [key.rsplit(":", 2)[-2] for c in commands for key in c.split()[3:] if ":" in key]
    assert names == ["failed_auth", "client_ip", "api_key"], commands
    assert cache.get(f"throttle:api_key:{answered.wsgi_request.auth.pk}") == 2
