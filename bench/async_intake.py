"""`Prefer: respond-async` against the floor: intake throughput, and the worker's drain end to end.

Each round runs the floor (every purchase sent within its request), then the gateway with
`Prefer: respond-async` twice: once with the `cashback_worker` processes paused (SIGSTOP),
as if they ran on a host of their own, then resumed to drain that backlog alone; and once
with them draining on the same cores while the intake runs. A last floor run closes the
bracket: each round's rows are compared with the mean of the floor runs either side of them.
Results per round:

- `floor`: purchases sent per second (each request stores, calls upstream, records).
- `gateway`: the gateway's own POST without the header (sent within the request), to tell
  what the header buys from what the gateway's request path costs.
- `intake-alone`: 202 answers per second with the workers paused: what the web tier takes
  when the sends are not on its cores.
- `backlog-drain`: purchases sent per second by the resumed workers from that backlog, with
  nothing else running: how fast a queue empties after, say, an upstream outage.
- `async-intake`: 202 answers per second while the workers drain on the same cores;
  target ≥ 1.5×.
- `async-drained`: purchases *sent* per second, from the first request of that run to the
  worker's last `sent_at`, with p50/p99 of each purchase's `sent_at − created_at` and the CPU
  of gunicorn and the workers together per purchase; target ≥ 0.8×.

Pausing a worker is safe here: it is idle (the previous run was drained), waiting on its
LISTEN connection, whose NOTIFYs wait in the socket until it resumes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.load import (
    Connection,
    Result,
    cpu_seconds,
    purchase_body,
    run_load,
    server_pids,
    settle,
)

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python")
WORKERS = int(os.environ.get("BENCH_ASYNC_WORKERS", "2"))
TARGETS = {"async-intake": "≥ 1.50x", "async-drained": "≥ 0.80x"}
LABELS = ["floor", "gateway", "intake-alone", "backlog-drain", "async-intake", "async-drained"]


async def _client(n: int, port: int, key: str, tag: str, deadline: float, result: Result) -> None:
    conn = Connection("127.0.0.1", port)
    i = 0
    while time.perf_counter() < deadline:
        i += 1
        body = purchase_body(f"{tag}-{n}-{i}")
        raw = (
            f"POST /api/v1/purchases HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
            f"Prefer: respond-async\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        started = time.perf_counter()
        try:
            status, _ = await asyncio.wait_for(conn.request(raw), 30)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            conn.close()
            result.errors += 1
            await asyncio.sleep(0.01)
            continue
        result.statuses[status] = result.statuses.get(status, 0) + 1
        if status == 202:
            result.ok += 1
            result.latencies.append(time.perf_counter() - started)
        else:
            result.errors += 1
    conn.close()


async def _intake(port: int, key: str, clients: int, seconds: float, tag: str) -> Result:
    result = Result("async-intake", seconds)
    started = time.perf_counter()
    await asyncio.gather(
        *(_client(n, port, key, tag, started + seconds, result) for n in range(clients))
    )
    result.seconds = time.perf_counter() - started
    return result


@contextmanager
def workers(env: dict[str, str], logdir: Path, count: int) -> Iterator[list[int]]:
    """Run `count` cashback_worker processes; yield their pids; SIGTERM them on the way out."""
    procs = []
    for n in range(count):
        log = open(logdir / f"worker-{n}.log", "ab")  # noqa: SIM115
        procs.append(
            (
                subprocess.Popen(
                    [PY, "manage.py", "cashback_worker"],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                ),
                log,
            )
        )
    try:
        yield [p.pid for p, _ in procs]
    finally:
        for p, _ in procs:
            p.terminate()
        for p, log in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            log.close()


def _drained(conn: Any, tag: str, since: float, timeout: float = 300.0) -> Result:
    """Wait until the worker sent every purchase of `tag`; return the sent-per-second result.

    Its time runs from `since` to the last `sent_at`; its latencies are `sent_at − created_at`.
    """
    sql_open = (
        "SELECT count(*) FROM cashback_purchase WHERE created_at >= to_timestamp(%s) "
        "AND order_id LIKE %s AND status IN ('queued', 'sending', 'pending')"
    )
    sql_sent = (
        "SELECT extract(epoch FROM sent_at), extract(epoch FROM sent_at - created_at) "
        "FROM cashback_purchase WHERE created_at >= to_timestamp(%s) AND order_id LIKE %s "
        "AND status = 'sent'"
    )
    like = f"{tag}-%"
    # Stored before `since` (a backlog): look back far enough to find them all.
    after = since - 600
    deadline = time.monotonic() + timeout
    while True:
        row = conn.execute(sql_open, [after, like]).fetchone()
        if not row or not row[0]:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"the worker did not drain {row[0]} purchases in {timeout:g} s")
        time.sleep(0.05)
    sent = conn.execute(sql_sent, [after, like]).fetchall()
    result = Result("async-drained", 0.0)
    if sent:
        result.ok = len(sent)
        result.seconds = max(float(s) for s, _ in sent) - since
        result.latencies = [float(lag) for _, lag in sent]
    return result


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        os.kill(pid, sig)


def measure(
    bench: Any,
    key: str,
    database_url: str,
    *,
    floor_app: str,
    gateway_app: str,
    clients: int,
    seconds: float,
    rounds: int,
    fmt: Callable[[Result], str],
) -> tuple[list[list[Result]], Result]:
    """Alternate floor, gateway and respond-async runs, then the floor once more.

    Return the results per round, and that closing floor run.
    """
    print(
        f"\n== Prefer: respond-async: {clients} clients, {rounds} rounds of {seconds:g} s, "
        f"{WORKERS} cashback_worker processes draining",
        flush=True,
    )
    import psycopg

    runs = []
    with (
        # Opened first: on a shared server the connections may run out once ours are up.
        psycopg.connect(database_url, autocommit=True) as conn,
        bench.sandbox(0),
        bench.gunicorn("floor", floor_app) as floor,
        bench.gunicorn("gateway", gateway_app) as gateway,
        workers({**bench.env}, bench.logdir, WORKERS) as worker_pids,
    ):
        stamp = f"{int(time.time() * 1000):x}"
        run_load("floor", floor.port, key, clients=clients, seconds=2.0, tag=f"aw-f-{stamp}")
        warm = f"aw-g-{stamp}"
        asyncio.run(_intake(gateway.port, key, clients, 2.0, warm))
        _drained(conn, warm, time.time() - 60)

        def measured(label: str, server: Any, tag: str) -> Result:
            settle(conn)
            return run_load(
                label,
                server.port,
                key,
                clients=clients,
                seconds=seconds,
                tag=tag,
                master_pid=server.process.pid,
            )

        for i in range(rounds):
            base = measured("floor", floor, f"af-{stamp}-{i}")
            sync = measured("gateway", gateway, f"as-{stamp}-{i}")

            settle(conn)
            tag = f"ab-{stamp}-{i}"
            gateway_cpu = cpu_seconds(server_pids(gateway.process.pid))
            _signal(worker_pids, signal.SIGSTOP)
            try:
                alone = asyncio.run(_intake(gateway.port, key, clients, seconds, tag))
            finally:
                _signal(worker_pids, signal.SIGCONT)
            resumed = time.time()
            alone.cpu = cpu_seconds(server_pids(gateway.process.pid)) - gateway_cpu
            worker_cpu = cpu_seconds(worker_pids)
            backlog = _drained(conn, tag, resumed)
            backlog.cpu = cpu_seconds(worker_pids) - worker_cpu
            alone.label, backlog.label = "intake-alone", "backlog-drain"

            settle(conn)
            tag = f"aa-{stamp}-{i}"
            gateway_cpu = cpu_seconds(server_pids(gateway.process.pid))
            worker_cpu = cpu_seconds(worker_pids)
            since = time.time()
            intake = asyncio.run(_intake(gateway.port, key, clients, seconds, tag))
            # Intake: gunicorn's CPU per 202; drained: gunicorn's and the workers' per sent.
            intake.cpu = cpu_seconds(server_pids(gateway.process.pid)) - gateway_cpu
            drained = _drained(conn, tag, since)
            drained.cpu = (
                cpu_seconds(server_pids(gateway.process.pid))
                - gateway_cpu
                + cpu_seconds(worker_pids)
                - worker_cpu
            )
            row = [base, sync, alone, backlog, intake, drained]
            for r in row:
                print(f"  {fmt(r)}", flush=True)
            runs.append(row)
        # The floor once more: each round is compared with the floor runs either side of it.
        closing = measured("floor", floor, f"af-{stamp}-closing")
        print(f"  {fmt(closing)}", flush=True)
    return runs, closing
