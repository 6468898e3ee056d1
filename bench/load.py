"""A small load driver: N asyncio clients over raw HTTP/1.1 keep-alive sockets.

Each client POSTs purchases with unique order ids back to back for a fixed time; the run
reports requests/s, p50, p99, errors and the server's CPU per request (utime + stime of the
gunicorn master and its workers, read from /proc before and after). No dependencies.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ADDRESS = "WR5FPYE6LHBQ57ZCFUTJXDDNHWK5355S"


def settle(conn: Any) -> None:
    """Vacuum the tables purchases churn, then checkpoint, on an autocommit psycopg connection.

    In production autovacuum does the first; where it is off (this machine's PostgreSQL runs
    with `autovacuum = off`, as CI configures it) dead row versions pile up run after run, and
    the worker's claim and the lease sweep walk index entries of rows long sent: a measurement
    of the bench database's age, not of the code. The CHECKPOINT writes out what the runs
    before dirtied, so no run pays for another's pages: a timed checkpoint (every
    `checkpoint_timeout`, spread over most of it) would otherwise land its writes on whichever
    runs it overlaps. The benchmarks call it before every run.
    """
    conn.execute("VACUUM (ANALYZE) cashback_purchase, cashback_attempt, merchants_apikey")
    conn.execute("CHECKPOINT")


def children_of(pid: int) -> list[int]:
    """Return the pids of the direct children of `pid` (gunicorn's workers)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces; fields after it are fixed.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """Return utime + stime of `pids` in seconds (processes that are gone count 0)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the name: state is fields[0], so utime (14th) is [11] and stime [12].
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def rss_kib(pid: int) -> int:
    """Return the resident set size of `pid` in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def server_pids(master: int) -> list[int]:
    return [master, *children_of(master)]


@dataclass
class Result:
    label: str
    seconds: float
    ok: int = 0
    errors: int = 0
    reconnects: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    cpu: float = 0.0

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        """Return the p-th percentile latency in ms (nearest rank)."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
        return ordered[rank] * 1000

    @property
    def cpu_ms_per_request(self) -> float:
        return self.cpu * 1000 / self.ok if self.ok else float("nan")


def purchase_body(order_id: str) -> bytes:
    return json.dumps(
        {
            "customer": "c-42",
            "order_id": order_id,
            "description": "coffee",
            "address": ADDRESS,
            "currency": "EUR",
            "currency_amount": "12.50",
        }
    ).encode()


class Connection:
    """One keep-alive HTTP/1.1 connection; reconnects when the server closes it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        """Send one request and return (status, body); close if the server says so."""
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(raw)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(chunk[:-2])
            body = b"".join(parts)
        else:
            body = await self.reader.read()
            headers["connection"] = "close"
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, body


async def _client(
    n: int,
    host: str,
    port: int,
    path: str,
    api_key: str,
    tag: str,
    deadline: float,
    result: Result,
    timeout: float,
) -> None:
    conn = Connection(host, port)
    i = 0
    while time.perf_counter() < deadline:
        i += 1
        body = purchase_body(f"{tag}-{n}-{i}")
        raw = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {api_key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        started = time.perf_counter()
        try:
            status, _ = await asyncio.wait_for(conn.request(raw), timeout)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            conn.close()
            result.errors += 1
            result.reconnects += 1
            await asyncio.sleep(0.01)
            continue
        elapsed = time.perf_counter() - started
        result.statuses[status] = result.statuses.get(status, 0) + 1
        if 200 <= status < 300:
            result.ok += 1
            result.latencies.append(elapsed)
        else:
            result.errors += 1
    conn.close()


async def _run(
    label: str,
    host: str,
    port: int,
    path: str,
    api_key: str,
    clients: int,
    seconds: float,
    tag: str,
    master_pid: int | None,
    timeout: float,
) -> Result:
    pids = server_pids(master_pid) if master_pid else []
    cpu_before = cpu_seconds(pids)
    started = time.perf_counter()
    result = Result(label, seconds)
    await asyncio.gather(
        *(
            _client(n, host, port, path, api_key, tag, started + seconds, result, timeout)
            for n in range(clients)
        )
    )
    # Requests in flight at the deadline finish late; count the time they took.
    result.seconds = time.perf_counter() - started
    if master_pid:
        result.cpu = cpu_seconds(server_pids(master_pid)) - cpu_before
    return result


def run_load(
    label: str,
    port: int,
    api_key: str,
    *,
    clients: int,
    seconds: float,
    tag: str,
    master_pid: int | None = None,
    host: str = "127.0.0.1",
    path: str = "/api/v1/purchases",
    timeout: float = 30.0,
) -> Result:
    """Keep `clients` clients busy for `seconds` and return what they measured."""
    return asyncio.run(
        _run(label, host, port, path, api_key, clients, seconds, tag, master_pid, timeout)
    )
