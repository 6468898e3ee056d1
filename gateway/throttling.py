"""Request throttles that hold across every process of a host, and across hosts with Redis.

Each throttle counts requests per identity in a window that starts with the identity's first
request, with one atomic step per check, in a store every process shares:

- `CACHE_URL=redis://…` (several hosts): one Lua script per check (INCRBY, PEXPIRE on the
  first hit, PTTL), so every process of every host counts in one Redis counter.
- The default local-memory cache (one host): a SQLite file shared by the host's processes
  (`THROTTLE_HOST_DB`), one `INSERT … ON CONFLICT DO UPDATE … RETURNING` per check. The
  cache itself is per process, so gunicorn's four workers would each have let the whole
  rate through.
- Any other cache backend: the cache's own atomic `add` and `incr`.

Rates are read from settings on each request (`API_THROTTLE_RATE`, `API_IP_THROTTLE_RATE`;
`off` disables). If the store is down, requests are let through and the error is logged:
an outage of Redis must not become an outage of the gateway.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
import time
from typing import Any

from django.conf import settings
from django.core.cache import cache, caches
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache
from rest_framework.throttling import BaseThrottle

from gateway import metrics

logger = logging.getLogger(__name__)

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(value: str) -> tuple[int, int] | None:
    """Return (requests, seconds) of a DRF rate such as "20/s" or "10/m"; None for off."""
    if value.strip().lower() in ("", "off", "none"):
        return None
    count, period = value.split("/")
    return int(count), _PERIODS[period.strip()[0]]


# --- Stores: hits([(key, add, seconds), …]) -> [(count in the window, when it ends), …] ----

# For each counter i: KEYS[i], ARGV[2i-1] what to add (0: only read), ARGV[2i] the window in
# ms. Returns each count and the milliseconds left in its window (0 when there is none).
_REDIS_HITS = """
local out = {}
for i, key in ipairs(KEYS) do
  local add = tonumber(ARGV[2 * i - 1])
  local window = tonumber(ARGV[2 * i])
  local n
  if add > 0 then
    n = redis.call('INCRBY', key, add)
    if n == add then redis.call('PEXPIRE', key, window) end
  else
    n = tonumber(redis.call('GET', key) or '0')
  end
  local ttl = redis.call('PTTL', key)
  if ttl == -1 and n > 0 then
    redis.call('PEXPIRE', key, window)
    ttl = window
  end
  out[2 * i - 1] = n
  out[2 * i] = math.max(ttl, 0)
end
return out
"""

_scripts: dict[int, Any] = {}

Hit = tuple[str, int, int]  # (counter, what to add, window in seconds)


def _redis_hits(backend: RedisCache, items: list[Hit]) -> list[tuple[int, float]]:
    """Count in Redis with one EVALSHA (EVAL once, the first time a server sees it)."""
    keys = [backend.make_and_validate_key(key) for key, _, _ in items]
    # Django's Redis backend writes to its first server whatever the key: one client.
    client = backend._cache.get_client(keys[0], write=True)  # type: ignore[attr-defined]
    script = _scripts.get(id(client))
    if script is None:
        script = _scripts[id(client)] = client.register_script(_REDIS_HITS)
    args = [value for _, add, seconds in items for value in (add, seconds * 1000)]
    flat = script(keys=keys, args=args)
    now = time.time()
    return [(int(flat[i]), now + int(flat[i + 1]) / 1000) for i in range(0, len(flat), 2)]


class HostStore:
    """Counters in a SQLite file that every process of the host opens (WAL, no fsync).

    Each check is one statement; SQLite's file lock makes it atomic across processes, and a
    counter needs no durability (a lost window only lets one window through again).
    """

    _UPSERT = (
        "INSERT INTO hits (key, n, window_end) VALUES (:key, :add, :end) "
        "ON CONFLICT (key) DO UPDATE SET "
        "n = CASE WHEN hits.window_end <= :now THEN excluded.n ELSE hits.n + excluded.n END, "
        "window_end = CASE WHEN hits.window_end <= :now THEN excluded.window_end "
        "ELSE hits.window_end END "
        "RETURNING n, window_end"
    )
    _READ = "SELECT n, window_end FROM hits WHERE key = ? AND window_end > ?"
    _PURGE_EVERY = 1000

    def __init__(self) -> None:
        self._local = threading.local()

    def _connect(self, path: str) -> sqlite3.Connection:
        local = self._local
        if getattr(local, "key", None) == (os.getpid(), path):
            conn: sqlite3.Connection = local.conn
            return conn
        conn = sqlite3.connect(path, timeout=2.0, isolation_level=None, check_same_thread=False)
        if os.stat(path).st_uid != os.getuid():
            conn.close()
            # Another user made the file first (a shared /tmp): it could forge the counts.
            raise PermissionError(f"{path} belongs to another user; set THROTTLE_HOST_DB")
        os.chmod(path, 0o600)
        _busy_retried(conn.execute, "PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        _busy_retried(
            conn.execute,
            "CREATE TABLE IF NOT EXISTS hits "
            "(key TEXT PRIMARY KEY, n INTEGER NOT NULL, window_end REAL NOT NULL) WITHOUT ROWID",
        )
        local.key, local.conn, local.calls = (os.getpid(), path), conn, 0
        return conn

    def hit(self, path: str, key: str, add: int, seconds: int) -> tuple[int, float]:
        conn = self._connect(path)
        now = time.time()
        if not add:
            row = conn.execute(self._READ, (key, now)).fetchone()
            return (int(row[0]), float(row[1])) if row else (0, now + seconds)
        n, end = _busy_retried(
            conn.execute, self._UPSERT, {"key": key, "add": add, "end": now + seconds, "now": now}
        ).fetchone()
        self._local.calls += 1
        if self._local.calls % self._PURGE_EVERY == 0:
            conn.execute("DELETE FROM hits WHERE window_end <= ?", (now,))
        return int(n), float(end)


host_store = HostStore()


def _busy_retried(execute: Any, *args: Any) -> Any:
    """Run `execute(*args)`, retrying while SQLite answers "database is locked".

    SQLite skips its busy handler for some lock changes (switching a new file to WAL, a
    write that meets a newer snapshot): without this, the first burst of simultaneous
    processes on a fresh counter file failed open and let a request too many through.
    """
    for attempt in range(20):
        try:
            return execute(*args)
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            time.sleep(0.002 * (attempt + 1))
    return execute(*args)


def _cache_hit(key: str, add: int, seconds: int) -> tuple[int, float]:
    """Count with the cache's own atomic add and incr (memcached, the database cache…)."""
    if not add:
        return int(cache.get(key, 0)), cache.get(f"{key}:end") or time.time() + seconds
    if cache.add(key, 0, seconds):
        cache.set(f"{key}:end", time.time() + seconds, seconds)
    try:
        n = int(cache.incr(key, add))
    except ValueError:  # the window ended between add and incr
        cache.add(key, add, seconds)
        n = add
    return n, cache.get(f"{key}:end") or time.time() + seconds


def hits(items: list[Hit]) -> list[tuple[int, float]]:
    """Add to each counter and return (its count, when its window ends), in one round trip."""
    backend = caches["default"]
    if isinstance(backend, RedisCache):
        return _redis_hits(backend, items)
    if isinstance(backend, LocMemCache):
        path = settings.THROTTLE_HOST_DB
        return [host_store.hit(path, key, add, seconds) for key, add, seconds in items]
    return [_cache_hit(key, add, seconds) for key, add, seconds in items]


def hit(key: str, add: int, seconds: int) -> tuple[int, float]:
    """Add `add` to the counter `key` and return (its count, when its window ends)."""
    return hits([(key, add, seconds)])[0]


# --- Throttles -----------------------------------------------------------------------------


class CountingThrottle(BaseThrottle):
    """Allow `n` requests per identity in each window of the configured rate."""

    scope = ""

    def __init__(self) -> None:
        self.rate = parse_rate(self.get_rate())
        self.window_end = 0.0  # when the identity's window ends, once it is near its limit

    def get_rate(self) -> str:
        raise NotImplementedError

    def identity(self, request: Any) -> str | None:
        raise NotImplementedError

    def key(self, ident: str) -> str:
        """Return the store's name of the counter of `ident`."""
        return f"throttle:{self.scope}:{ident}"

    def count(self, ident: str, *, add: int = 0) -> int:
        """Return the requests of `ident` in its current window, after adding `add`.

        A window starts with an identity's first request and lasts the rate's period, so
        there is no shared boundary where a burst could pass twice the limit.
        """
        assert self.rate is not None
        limit, duration = self.rate
        try:
            n, end = hit(self.key(ident), add, duration)
        except Exception:
            logger.warning("throttle store unavailable; request allowed", exc_info=True)
            return 0
        if n >= limit:
            self.window_end = end
        return n

    def allow_request(self, request: Any, view: Any) -> bool:
        if self.rate is None:
            return True
        ident = self.identity(request)
        if ident is None or self.count(ident, add=1) <= self.rate[0]:
            return True
        metrics.THROTTLED.labels(scope=self.scope).inc()
        return False

    def wait(self) -> float | None:
        return max(1, math.ceil(self.window_end - time.time())) if self.window_end else None


class ApiKeyThrottle(CountingThrottle):
    """Limit each API key to `API_THROTTLE_RATE`."""

    scope = "api_key"

    def get_rate(self) -> str:
        return settings.API_THROTTLE_RATE

    def identity(self, request: Any) -> str | None:
        key = getattr(request, "auth", None)
        return str(key.pk) if key is not None and hasattr(key, "pk") else None


class ClientIpThrottle(CountingThrottle):
    """Limit each client address to `API_IP_THROTTLE_RATE`, authenticated or not."""

    scope = "client_ip"

    def get_rate(self) -> str:
        return settings.API_IP_THROTTLE_RATE

    def identity(self, request: Any) -> str | None:
        return self.get_ident(request)

    def allow_request(self, request: Any, view: Any) -> bool:
        counted = getattr(request, "client_ip_count", None)
        if counted is None or self.rate is None:
            return super().allow_request(request, view)
        # FailedAuthThrottle.blocked counted this request already, in its round trip.
        n, end = counted
        if n >= self.rate[0]:
            self.window_end = end
        if n <= self.rate[0]:
            return True
        metrics.THROTTLED.labels(scope=self.scope).inc()
        return False


class FailedAuthThrottle(ClientIpThrottle):
    """Limit each client address to `API_IP_THROTTLE_RATE` failed API key checks.

    DRF checks throttles after authentication, so without this a wrong key would be
    refused (401) without ever being counted, and key guessing would cost the gateway a
    lookup and an HMAC per request without limit.
    """

    scope = "failed_auth"

    def blocked(self, request: Any) -> bool:
        """Return whether this address used up its failures.

        The same round trip counts the request for ClientIpThrottle, which then reads the
        result from the request instead of asking the store again.
        """
        if self.rate is None:
            return False
        self.ident = self.identity(request) or "-"
        by_address = ClientIpThrottle()
        if by_address.rate is None:
            if self.count(self.ident) < self.rate[0]:
                return False
            metrics.THROTTLED.labels(scope=self.scope).inc()
            return True
        items = [(self.key(self.ident), 0, self.rate[1])]
        items.append((by_address.key(self.ident), 1, by_address.rate[1]))
        try:
            (failed, end), counted = hits(items)
        except Exception:
            logger.warning("throttle store unavailable; request allowed", exc_info=True)
            return False
        request.client_ip_count = counted
        if failed < self.rate[0]:
            return False
        self.window_end = end
        metrics.THROTTLED.labels(scope=self.scope).inc()
        return True

    def record_failure(self) -> bool:
        """Count one failure of the address `blocked` was last asked about.

        Return whether it went over the limit: simultaneous requests can all pass `blocked`,
        and those whose failure is counted past the limit are answered as throttled, so an
        address gets exactly the limit's worth of answers to its guesses per window.
        """
        if self.rate is None:
            return False
        over = self.count(self.ident, add=1) > self.rate[0]
        if over:
            metrics.THROTTLED.labels(scope=self.scope).inc()
        return over
