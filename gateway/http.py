"""Outbound HTTP: the one place the gateway opens connections to other hosts.

Two transports, one set of rules (never follow a redirect, always a timeout, read answers
to a bound):

- `webhook_post()`, through `webhook_session()`: a requests-hardened session for merchant
  webhooks, which checks the address at connect time (the name is resolved once and the
  connection is made to that address) and refuses private, reserved and loopback ranges
  unless `WEBHOOK_ALLOW_PRIVATE`, the pattern of saleor's `core/http_client.py`. Its
  connections are the tracked ones below, so a delivery has one total deadline too
  (`WEBHOOK_TIMEOUT`, from connect to the status line).
- `UpstreamPool`: a kept-alive urllib3 pool for the upstream API (cheaper per call than a
  requests session), where every call has ONE total deadline (name lookup, connect, TLS,
  send and the whole answer) and records what the transport actually did, above all
  whether any byte of the request was written. The caller decides "surely not taken
  effect" from that record, never from an exception class.

The deadline is kept by a watchdog thread that shuts the socket down when it passes, so a
server that trickles its answer (each read within the socket timeout) cannot stretch a
call. Name lookups run on a small thread pool so that they are bounded too.
"""

from __future__ import annotations

import contextlib
import heapq
import ipaddress
import itertools
import os
import socket
import ssl
import sys
import threading
import time
import zlib
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import requests
import requests_hardened
import urllib3
from django.conf import settings
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

# Upstream's answers are a few hundred bytes; anything over this is not the documented one.
MAX_ANSWER_BYTES = 64 * 1024
# How long after its deadline a call may still return: the watchdog's wake-up and the
# unwinding of the cut connection. The lease of a sending purchase must cover it.
DEADLINE_SLACK = 0.25
USER_AGENT = "cashback-gateway/1.0"


@dataclass
class Exchange:
    """What the transport did during one call, filled in as it happens."""

    deadline: float
    connect_timeout: float
    # resolve → connect → tls → connected → sent → answered → done
    phase: str = "resolve"
    # Set just before the first byte of the request is handed to the socket: if False, no
    # byte of the request left this host.
    request_started: bool = False
    timed_out: bool = False  # the watchdog cut the connection at the deadline
    status: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""  # the answer (decoded), at most MAX_ANSWER_BYTES
    failure: str = ""  # "" when a whole answer was read; else why not (see UpstreamPool.post)
    detail: str = ""
    finished: bool = False
    watch: socket.socket | None = None

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


class _Watchdog:
    """Shut down the socket of every call whose deadline passed before it finished."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Exchange]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, exchange: Exchange) -> None:
        with self._cond:
            heapq.heappush(self._heap, (exchange.deadline, next(self._seq), exchange))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="upstream-deadlines", daemon=True
                )
                self._thread.start()
            if self._heap[0][2] is exchange:
                self._cond.notify()

    def attach(self, exchange: Exchange, sock: socket.socket | None) -> None:
        """Make `sock` the one to cut for `exchange` (cut at once if its time is up)."""
        with self._cond:
            if exchange.finished or exchange.watch is sock:
                return
            exchange.watch = sock
            if exchange.timed_out:
                _cut(sock)

    def release(self, exchange: Exchange) -> None:
        """Stop watching `exchange`; after this its socket is never cut."""
        with self._cond:
            exchange.finished = True
            exchange.watch = None

    def _run(self) -> None:
        with self._cond:
            while True:
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, _, exchange = self._heap[0]
                if exchange.finished:
                    # Done long before its deadline, as nearly every call is: dropped now, so
                    # the thread sleeps until the oldest call still running could time out
                    # (about one wake-up per CASHBACK_TIMEOUT), not until every finished
                    # call's deadline in turn (one wake-up per call).
                    heapq.heappop(self._heap)
                    continue
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                exchange.timed_out = True
                _cut(exchange.watch)


def _cut(sock: socket.socket | None) -> None:
    # shutdown() acts on the socket itself, so cutting our duplicate descriptor ends any
    # blocking read or write on the connection's own descriptor, TLS or not.
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


_WATCHDOG = _Watchdog()
_RESOLVER = ThreadPoolExecutor(max_workers=4, thread_name_prefix="upstream-dns")
_current = threading.local()


def _after_fork() -> None:
    # Threads do not survive fork(); a preloaded parent's watchdog and resolver are gone.
    global _WATCHDOG, _RESOLVER
    _WATCHDOG = _Watchdog()
    _RESOLVER = ThreadPoolExecutor(max_workers=4, thread_name_prefix="upstream-dns")


os.register_at_fork(after_in_child=_after_fork)


def _exchange() -> Exchange | None:
    return getattr(_current, "exchange", None)


def _resolve(host: str, port: int, timeout: float) -> list[Any]:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        future = _RESOLVER.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
        try:
            return future.result(timeout)
        except FutureTimeout:
            raise TimeoutError(f"name lookup of {host} took over {timeout:g} s") from None
    return socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)


class _TrackedConnection(HTTPConnection):
    """An HTTP connection that keeps its call's deadline and records when sending began."""

    _watch: socket.socket | None = None
    _tls = False

    def _new_conn(self) -> socket.socket:
        exchange = _exchange()
        if exchange is None:  # not inside UpstreamPool.post: plain urllib3 behaviour
            return super()._new_conn()
        timeout = min(exchange.connect_timeout, exchange.remaining())
        if timeout <= 0:
            raise ConnectTimeoutError(self, "the deadline passed before connecting")
        try:
            addresses = _resolve(self._dns_host, self.port, timeout)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        except TimeoutError as exc:
            raise ConnectTimeoutError(self, str(exc)) from exc
        exchange.phase = "connect"
        error: Exception | None = None
        for family, kind, proto, _, address in addresses:
            timeout = min(exchange.connect_timeout, exchange.remaining())
            if timeout <= 0:
                break
            sock = socket.socket(family, kind, proto)
            try:
                for option in self.socket_options or ():
                    sock.setsockopt(*option)
                self._close_watch()
                self._watch = sock.dup()
                _WATCHDOG.attach(exchange, self._watch)
                sock.settimeout(timeout)
                sock.connect(address)
            except OSError as exc:
                sock.close()
                error = exc
                continue
            sys.audit("http.client.connect", self, self.host, self.port)
            exchange.phase = "tls" if self._tls else "connected"
            return sock
        if error is None or isinstance(error, TimeoutError):
            raise ConnectTimeoutError(self, f"connection to {self.host} timed out")
        raise NewConnectionError(self, f"failed to establish a new connection: {error}")

    def connect(self) -> None:
        super().connect()
        exchange = _exchange()
        if exchange is not None:
            exchange.phase = "connected"

    def send(self, data: Any) -> None:
        if self.sock is None:
            self.connect()  # http.client would connect here; connecting sends no request byte
        exchange = _exchange()
        if exchange is not None and not exchange.request_started:
            _WATCHDOG.attach(exchange, self._watch)
            exchange.request_started = True
            exchange.phase = "sent"
        super().send(data)

    def getresponse(self) -> Any:
        response = super().getresponse()
        exchange = _exchange()
        if exchange is not None:
            exchange.phase = "answered"
        return response

    def close(self) -> None:
        super().close()
        self._close_watch()

    def _close_watch(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None


class _TrackedHTTPSConnection(_TrackedConnection, HTTPSConnection):
    _tls = True


class _Pool(urllib3.HTTPConnectionPool):
    ConnectionCls = _TrackedConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _TrackedHTTPSConnection


class UpstreamPool:
    """Kept-alive connections to one upstream URL; `post` never outlives its deadline."""

    def __init__(self, url: str, *, pool_size: int, ca_certs: str | None = None) -> None:
        parts = urllib3.util.parse_url(url)
        if parts.scheme not in ("http", "https") or not parts.host:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.path = parts.request_uri
        self.maxsize = pool_size
        common: dict[str, Any] = {"maxsize": pool_size, "block": False, "retries": False}
        self._pool: urllib3.HTTPConnectionPool
        if parts.scheme == "https":
            self._pool = _HTTPSPool(
                parts.host, parts.port, cert_reqs="CERT_REQUIRED", ca_certs=ca_certs, **common
            )
        else:
            self._pool = _Pool(parts.host, parts.port, **common)

    def close(self) -> None:
        self._pool.close()

    def post(
        self,
        body: bytes,
        headers: Mapping[str, str],
        *,
        timeout: float,
        connect_timeout: float,
    ) -> Exchange:
        """POST `body` and read the answer, all within `timeout` seconds from now.

        Return the Exchange. Its `failure` is "" for a whole answer (status, headers, body);
        otherwise one of "dns", "refused", "connect-timeout", "tls" (all before any request
        byte: `request_started` is False), "timeout", "lost" (the connection failed after
        sending began), "too-large" or "encoding" (an answer we did not read whole; `body`
        then holds its first bytes).
        """
        exchange = Exchange(time.monotonic() + timeout, connect_timeout)
        _current.exchange = exchange
        _WATCHDOG.watch(exchange)
        response = None
        try:
            response = self._pool.urlopen(
                "POST",
                self.path,
                body=body,
                headers={**headers, "Accept-Encoding": "identity", "User-Agent": USER_AGENT},
                redirect=False,
                assert_same_host=False,
                preload_content=False,
                decode_content=False,
                timeout=urllib3.Timeout(connect=connect_timeout, read=timeout),
            )
            exchange.status = response.status
            exchange.headers = response.headers
            raw, complete = _read_bounded(response, MAX_ANSWER_BYTES)
            if not complete:
                exchange.failure, exchange.body = "too-large", raw
                exchange.detail = f"over {MAX_ANSWER_BYTES // 1024} KiB"
            else:
                _decode(exchange, raw, response.headers.get("Content-Encoding", ""))
        except Exception as exc:  # classified from what `exchange` recorded, not the type
            _record_failure(exchange, exc)
        finally:
            _WATCHDOG.release(exchange)
            _current.exchange = None
            if response is not None:
                if exchange.failure or exchange.timed_out:
                    response.close()  # unread or cut: never reuse this connection
                response.release_conn()
        return exchange


def _read_bounded(response: Any, limit: int) -> tuple[bytes, bool]:
    """Return (up to `limit` bytes of the raw body, whether that is all of it)."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = response.read(min(16384, limit + 1 - size), decode_content=False)
        if not chunk:
            return b"".join(chunks), True
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)[:limit], False


def _decode(exchange: Exchange, raw: bytes, encoding: str) -> None:
    """Undo the answer's content codings (we asked for none), bounded like the raw read."""
    data = raw
    for coding in reversed([c.strip().lower() for c in encoding.split(",") if c.strip()]):
        if coding == "identity":
            continue
        if coding not in ("gzip", "x-gzip", "deflate"):
            exchange.failure, exchange.body = "encoding", raw
            exchange.detail = f"an answer in content coding {coding!r}"
            return
        try:
            data, complete = _inflate(data, coding, MAX_ANSWER_BYTES)
        except zlib.error:
            exchange.failure, exchange.body = "encoding", raw
            exchange.detail = f"a corrupt {coding} answer"
            return
        if not complete:
            exchange.failure, exchange.body = "too-large", data
            exchange.detail = f"over {MAX_ANSWER_BYTES // 1024} KiB when decompressed"
            return
    exchange.body = data
    exchange.phase = "done"


def _inflate(data: bytes, coding: str, limit: int) -> tuple[bytes, bool]:
    """Return (at most `limit` decompressed bytes, whether that is all), member by member."""
    out = bytearray()
    while data:
        # Servers send both zlib-wrapped and raw deflate as "deflate".
        wbits = 31 if coding != "deflate" else 15 if data[:1] == b"\x78" else -15
        inflater = zlib.decompressobj(wbits)
        out += inflater.decompress(data, limit + 1 - len(out))
        if len(out) > limit or inflater.unconsumed_tail:
            return bytes(out[:limit]), False
        if not inflater.eof:
            raise zlib.error("truncated stream")
        # A gzip answer may be several members one after another.
        data = inflater.unused_data if coding != "deflate" else b""
    return bytes(out), True


def _record_failure(exchange: Exchange, exc: BaseException) -> None:
    exchange.detail = type(exc).__name__
    if exchange.timed_out:
        exchange.failure = "timeout" if exchange.request_started else "connect-timeout"
        return
    if exchange.request_started:
        timed_out = isinstance(exc, (TimeoutError, urllib3.exceptions.ReadTimeoutError))
        exchange.failure = "timeout" if timed_out else "lost"
        if isinstance(exc, (ssl.SSLError, urllib3.exceptions.SSLError)):
            exchange.detail = "TLS stream broken"
        return
    # Nothing of the request was written: which step failed only changes the message.
    # (NewConnectionError is a subclass of ConnectTimeoutError, NameResolutionError of both.)
    if isinstance(exc, NameResolutionError):
        exchange.failure = "dns"
    elif isinstance(exc, NewConnectionError):
        exchange.failure = "refused"
    elif isinstance(exc, (ConnectTimeoutError, TimeoutError, urllib3.exceptions.TimeoutError)):
        exchange.failure = "connect-timeout"  # a slow TCP or TLS handshake
    else:
        exchange.failure = "refused" if exchange.phase in ("resolve", "connect") else "tls"


class DeadlineExceeded(requests.Timeout):
    """The whole delivery took longer than its deadline (however slowly the bytes came)."""


@cache
def _webhook_session(allow_private: bool, connect_timeout: float, timeout: float) -> Any:
    config = requests_hardened.Config(
        ip_filter_enable=not allow_private,
        ip_filter_allow_loopback_ips=False,
        never_redirect=True,
        default_timeout=(connect_timeout, timeout),
        user_agent_override="cashback-gateway-webhooks/1.0",
    )
    session = requests_hardened.Manager(config).get_session()
    for adapter in session.adapters.values():
        # The tracked connections: inside webhook_post they keep its deadline (the watchdog
        # cuts them when it passes); elsewhere they behave as urllib3's own.
        adapter.poolmanager.pool_classes_by_scheme = {"http": _Pool, "https": _HTTPSPool}
    return session


def webhook_session() -> Any:
    """Return this process's session for webhook deliveries (settings read on each call).

    The target's address is checked on the connection actually made: private, reserved and
    loopback addresses are refused (requests_hardened's InvalidIPAddress) unless
    `WEBHOOK_ALLOW_PRIVATE`. Redirects are never followed; every request has a timeout.
    """
    return _webhook_session(
        settings.WEBHOOK_ALLOW_PRIVATE,
        min(settings.CASHBACK_CONNECT_TIMEOUT, settings.WEBHOOK_TIMEOUT),
        settings.WEBHOOK_TIMEOUT,
    )


def webhook_post(url: str, body: bytes, headers: Mapping[str, str]) -> int:
    """POST a webhook and return the answer's status, within `WEBHOOK_TIMEOUT` from now.

    The deadline covers connecting, sending and the status line and headers (the body is
    never read). A receiver that trickles its answer, each byte within the socket timeout,
    is cut at the deadline: DeadlineExceeded. Other failures raise what requests raises
    (InvalidIPAddress for a refused address).
    """
    timeout = settings.WEBHOOK_TIMEOUT
    exchange = Exchange(time.monotonic() + timeout, min(settings.CASHBACK_CONNECT_TIMEOUT, timeout))
    _current.exchange = exchange
    _WATCHDOG.watch(exchange)
    try:
        # stream=True: the status is all we need, so the body is never read (nor bounded).
        with webhook_session().post(url, data=body, headers=headers, stream=True) as response:
            status: int = response.status_code
    except requests.RequestException as exc:
        if exchange.timed_out:
            raise DeadlineExceeded(f"no answer within {timeout:g} s") from exc
        raise
    finally:
        _WATCHDOG.release(exchange)
        _current.exchange = None
    if exchange.timed_out:  # cut just as the headers arrived: not an answer to trust
        raise DeadlineExceeded(f"no answer within {timeout:g} s")
    return status
