"""Profile purchase POSTs in one process with pyinstrument, against a sandbox thread.

    .venv/bin/python bench/profiling.py [N] [--sql] [--cpu | --quick] [--async]

The requests go through the WSGI application gunicorn serves (`gateway.wsgi.application`:
the API's middleware chain, DRF, the service, the client), called with the environ a
server would pass, on the bench database (BENCH_DATABASE_URL). With --sql it also
prints the SQL of one purchase; with --async the POSTs ask `Prefer: respond-async` (stored
and answered 202, nothing sent: the intake alone).
"""

from __future__ import annotations

import cProfile
import io
import json
import os
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

os.environ.setdefault("DATABASE_URL", os.environ.get("BENCH_DATABASE_URL", "") or "x")
if os.environ["DATABASE_URL"] == "x":
    os.environ["DATABASE_URL"] = "postgres://postgres@127.0.0.1:5432/cashback_bench"
os.environ.setdefault("SECRET_KEY", "bench-only-secret-key-0123456789abcdefghijklmnopqrstuvwxyz")
os.environ.update(
    CASHBACK_SANDBOX="on", API_THROTTLE_RATE="off", API_IP_THROTTLE_RATE="off", DEBUG="off"
)
os.environ.setdefault("LOG_LEVEL", "INFO")
os.environ["DJANGO_SETTINGS_MODULE"] = "gateway.settings"

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection, reset_queries  # noqa: E402
from pyinstrument import Profiler  # noqa: E402

from cashback.sandbox import start_in_thread  # noqa: E402
from gateway.wsgi import application  # noqa: E402
from merchants.services import create_merchant  # noqa: E402


def wsgi_post(path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    """POST `body` through the WSGI application as a server would; return status, body."""
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        **headers,
    }
    status: list[str] = []
    result = application(environ, lambda line, headers, exc_info=None: status.append(line))
    try:
        content = b"".join(result)
    finally:
        result.close()  # type: ignore[attr-defined]
    return int(status[0].split()[0]), content


def main() -> None:
    n = int(next((a for a in sys.argv[1:] if a.isdigit()), "500"))
    server = start_in_thread(settings.CASHBACK_PARTNER, settings.CASHBACK_PARTNER_KEY)
    settings.CASHBACK_API_URL = server.url
    _, key = create_merchant(f"Profile {time.time()}")
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    if "--async" in sys.argv:
        headers["HTTP_PREFER"] = "respond-async"
    expected = 202 if "--async" in sys.argv else 201
    stamp = f"{int(time.time() * 1000):x}"

    def post(i: int) -> None:
        body = {
            "customer": "c-42",
            "order_id": f"prof-{stamp}-{i}",
            "description": "coffee",
            "address": "WR5FPYE6LHBQ57ZCFUTJXDDNHWK5355S",
            "currency": "EUR",
            "currency_amount": "12.50",
        }
        status, content = wsgi_post("/api/v1/purchases", json.dumps(body).encode(), headers)
        assert status == expected, content

    for i in range(20):  # warm-up: imports, connections, the key's last-used stamp
        post(-i - 1)
    if "--sql" in sys.argv:
        settings.DEBUG = True
        reset_queries()
        post(-100)
        for q in connection.queries:
            print(f"{q['time']}  {q['sql'][:300]}")
        print(f"{len(connection.queries)} queries")
        settings.DEBUG = False
    if "--quick" in sys.argv:
        pass  # no profile: only the CPU measurement below
    elif "--cpu" in sys.argv:
        # CPU time only: a loaded machine's waits on PostgreSQL would hide the costs.
        profile = cProfile.Profile(time.process_time)
        cpu = time.process_time()
        profile.enable()
        for i in range(n):
            post(i)
        profile.disable()
        cpu = time.process_time() - cpu
        print(f"{n} purchases: {cpu / n * 1000:.2f} ms CPU each (profiled)")
        stats = pstats.Stats(profile)
        stats.sort_stats("cumulative").print_stats(60)
        stats.sort_stats("tottime").print_stats(30)
    else:
        profiler = Profiler(interval=0.0005)
        started = time.perf_counter()
        profiler.start()
        for i in range(n):
            post(i)
        profiler.stop()
        elapsed = time.perf_counter() - started
        print(f"{n} purchases in {elapsed:.2f} s: {elapsed / n * 1000:.2f} ms each (profiled)")
        print(profiler.output_text(unicode=True, color=False, show_all=False))
    # This thread's CPU only: the sandbox answers on other threads of this process.
    samples = []
    for round_ in range(1, 4):
        cpu = time.thread_time()
        for i in range(round_ * n, (round_ + 1) * n):
            post(i)
        samples.append((time.thread_time() - cpu) / n * 1000)
    print(f"unprofiled: {min(samples):.2f} ms CPU per purchase (best of 3 × {n}: {samples})")
    server.shutdown()


if __name__ == "__main__":
    main()
