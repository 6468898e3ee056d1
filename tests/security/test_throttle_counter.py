"""The throttle counter: atomic under a burst, and open when the cache is down."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from gateway.throttling import ApiKeyThrottle, parse_rate


def test_rates_parse_like_drfs() -> None:
    assert parse_rate("20/s") == (20, 1)
    assert parse_rate("10/min") == (10, 60)
    assert parse_rate("5/hour") == (5, 3600)
    assert parse_rate("off") is None


@pytest.mark.parametrize(
    "backend",
    [
        {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "burst"},
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:6379/14",
            "KEY_PREFIX": "burst-test",
        },
    ],
)
def test_a_burst_of_simultaneous_requests_passes_exactly_the_limit(
    settings: Any, backend: dict[str, str]
) -> None:
    settings.CACHES = {"default": backend}
    settings.API_THROTTLE_RATE = "10/m"
    from django.core.cache import cache

    cache.delete("throttle:api_key:burst")
    barrier = threading.Barrier(30)
    allowed: list[bool] = []

    def hit() -> None:
        throttle = ApiKeyThrottle()
        barrier.wait()
        allowed.append(throttle.count("burst", add=1) <= 10)

    threads = [threading.Thread(target=hit) for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert allowed.count(True) == 10
    cache.delete("throttle:api_key:burst")


def test_an_unreachable_cache_lets_requests_through(settings: Any, caplog: Any) -> None:
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens on port 1
        }
    }
    settings.API_THROTTLE_RATE = "1/m"

    throttle = ApiKeyThrottle()
    assert [throttle.count("down", add=1) for _ in range(3)] == [0, 0, 0]
    assert "throttle store unavailable; request allowed" in caplog.text


def test_an_unusable_host_store_lets_requests_through(
    settings: Any, caplog: Any, tmp_path: Any
) -> None:
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "x"}
    }
    settings.THROTTLE_HOST_DB = str(tmp_path / "no-such-directory" / "throttle.sqlite3")
    settings.API_THROTTLE_RATE = "1/m"

    throttle = ApiKeyThrottle()
    assert [throttle.count("down", add=1) for _ in range(3)] == [0, 0, 0]
    assert "throttle store unavailable; request allowed" in caplog.text


def test_the_host_store_counts_in_one_file_for_every_process(settings: Any, tmp_path: Any) -> None:
    """Two interpreters (as two gunicorn workers would) share one counter through the file."""
    path = tmp_path / "throttle.sqlite3"
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "y"}
    }
    settings.THROTTLE_HOST_DB = str(path)
    settings.API_THROTTLE_RATE = "5/m"
    code = (
        "from gateway.throttling import host_store; import sys; "
        f"print(host_store.hit({str(path)!r}, 'throttle:api_key:k', 1, 60)[0])"
    )
    import subprocess
    import sys

    other = [
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(3)
    ]
    here = ApiKeyThrottle()
    counts = [here.count("k", add=1) for _ in range(3)]

    assert other == ["1", "2", "3"]
    assert counts == [4, 5, 6]
    assert 55 <= here.wait() <= 60  # type: ignore[operator]


def test_requests_with_a_wrong_key_count_toward_the_address_rate(
    make_merchant: Any, settings: Any
) -> None:
    from rest_framework.test import APIClient

    settings.API_IP_THROTTLE_RATE = "3/m"
    shop = make_merchant()
    guesser = APIClient()
    guesser.credentials(HTTP_AUTHORIZATION="Bearer cbk_guess")

    answers = [guesser.get("/api/v1/balance").status_code for _ in range(2)]
    answers += [shop.client.get("/api/v1/balance").status_code for _ in range(2)]

    # The address sent four requests: the fourth is over its rate, whoever sent it.
    assert answers == [401, 401, 200, 429]


def test_simultaneous_first_hits_on_a_fresh_host_counter_file_all_count(tmp_path: Any) -> None:
    # Thirty processes' first requests on a new file: SQLite answered "database is locked"
    # to some of them without waiting (switching the file to WAL), and those failed open.
    from gateway.throttling import HostStore

    for trial in range(100):
        store, path = HostStore(), str(tmp_path / f"{trial}.sqlite3")
        barrier = threading.Barrier(30)
        counts: list[int] = []

        def hit(
            store: HostStore = store, path: str = path, barrier: Any = barrier, counts: Any = counts
        ) -> None:
            barrier.wait()
            counts.append(store.hit(path, "k", 1, 60)[0])

        threads = [threading.Thread(target=hit) for _ in range(30)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        assert sorted(counts) == list(range(1, 31)), f"trial {trial}"
