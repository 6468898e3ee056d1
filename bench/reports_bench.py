"""Benchmark the payouts dashboard and the CSV report on 1,000,000 purchases (run by hand).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/reports_bench .venv/bin/python bench/reports_bench.py

Builds 1,000 merchants and 1,000,000 purchases in October 2026 with one INSERT … SELECT
over generate_series (kept between runs; --rebuild makes them again), then prints:

- the dashboard page (rendered through Django's test client, as an accountant sees it)
  against the single raw SQL aggregate it needs (best of --repeat runs each);
- the CSV detail export (the admin download's generator) against PostgreSQL's
  `COPY (…) TO STDOUT WITH CSV` of the same rows in the same order;
- the peak memory (max RSS) of `manage.py export_payouts` writing the CSV in a subprocess.

Targets: dashboard ≤ 2× raw, CSV ≤ 4× COPY, peak memory < 150 MB. The figures are also
written to bench/results/reports.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/reports_bench"
MERCHANTS = 1_000
PURCHASES = 1_000_000
START, END, ZONE = "2026-10-01", "2026-10-31", "Europe/Berlin"

ENV = {
    "DJANGO_SETTINGS_MODULE": "gateway.settings",
    "SECRET_KEY": "bench-only-secret-key-0123456789abcdefghijklmnop",
    "CASHBACK_SANDBOX": "on",
    "DEBUG": "off",
    "LOG_LEVEL": "WARNING",
    "STATIC_MANIFEST": "off",
    "ALLOWED_HOSTS": "testserver,localhost",
    "SECURE_COOKIES": "off",
    # One plain connection: a server-side cursor and COPY on the same footing.
    "DATABASE_POOL": "off",
}
# Parallel query workers are other processes, whose CPU time the benchmark cannot see.
PG_OPTIONS = "options=-c%20max_parallel_workers_per_gather%3D0"


def ensure_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def build(rebuild: bool) -> None:
    """Make 1,000 merchants and 1,000,000 purchases spread over October 2026 in Berlin."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM cashback_purchase")
        have = cur.fetchone()[0]
        if have == PURCHASES and not rebuild:
            print(f"data: {have:,} purchases already there (use --rebuild to make them again)")
            return
        started = time.perf_counter()
        cur.execute(
            "TRUNCATE cashback_purchase, merchants_balance, merchants_merchant RESTART IDENTITY CASCADE"
        )
        cur.execute(
            """
            INSERT INTO merchants_merchant (public_id, name, is_active, default_percentage,
                max_percentage, deposit_policy, webhook_url, webhook_secret, created_at, updated_at)
            SELECT 'm-' || lpad(i::text, 4, '0'), 'Merchant ' || i, true, 0, 10, 'downgrade',
                '', '', now(), now()
            FROM generate_series(1, %s) AS i
            """,
            [MERCHANTS],
        )
        # Every merchant has purchases in every currency on every day; 70 % are sent.
        cur.execute(
            """
            INSERT INTO cashback_purchase (id, merchant_id, order_id, customer, description,
                address, currency, amount_minor, requested_percentage, percentage, status,
                cashback_amount, unit, error, attempts, reserved_minor, hold, created_at,
                updated_at, sent_at)
            SELECT gen_random_uuid(), 1 + i %% %(m)s, 'o-' || i, 'customer-' || (i %% 50000), '',
                'WR5FPYE6LHBQ57ZCFUTJXDDNHWK5355S',
                (ARRAY['EUR','USD','GBYTE','BTC','RUR'])[1 + (i / %(m)s) %% 5],
                100 + (i::bigint * 7919) %% 100000, 5, 5, s.status,
                CASE WHEN s.status = 'sent' THEN 1000 + i %% 100000 END,
                CASE WHEN s.status = 'sent' THEN 'kYbc5KGKB/KnjynYePEF4cpumKmOz22xVKSVWbmtZ0M=' END,
                CASE WHEN s.status = 'rejected' THEN 'customer is not eligible' END,
                1, 5 + i %% 500, CASE WHEN s.status = 'sent' THEN 'captured' ELSE 'released' END,
                t.created, t.created, CASE WHEN s.status = 'sent' THEN t.created + interval '1 second' END
            FROM generate_series(1, %(n)s) AS i,
                LATERAL (SELECT timestamptz '2026-10-01 00:00:00+02'
                    + (i::bigint * 2681999 / %(n)s) * interval '1 second' AS created) AS t,
                LATERAL (SELECT (ARRAY['sent','sent','sent','sent','sent','sent','sent',
                    'rejected','pending','unknown'])[1 + i %% 10] AS status) AS s
            """,
            {"m": MERCHANTS, "n": PURCHASES},
        )
        cur.execute(
            """
            INSERT INTO merchants_balance (merchant_id, currency, available_minor, reserved_minor, updated_at)
            SELECT m.id, c, 1000000, 5000, now()
            FROM merchants_merchant m, unnest(ARRAY['EUR','USD']) AS c
            """
        )
        cur.execute("ANALYZE cashback_purchase")
        cur.execute("ANALYZE merchants_merchant")
        print(f"data: built {PURCHASES:,} purchases in {time.perf_counter() - started:.1f} s")


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def backend_cpu(pid: int) -> float:
    """Return the CPU seconds (user + system) a PostgreSQL backend on this host has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def best_of(repeat: int, fn: Any) -> tuple[float, float]:
    """Return the best wall time and the best CPU time (this process plus its database
    backend) of `repeat` runs. CPU time does not depend on what else the host runs."""
    from django.db import connection

    walls, cpus = [], []
    for _ in range(repeat):
        connection.ensure_connection()
        pid = connection.connection.info.backend_pid
        wall, cpu, db = time.perf_counter(), time.process_time(), backend_cpu(pid)
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu + backend_cpu(pid) - db)
    return min(walls), min(cpus)


def report(results: dict[str, Any], name: str, ours: str, base: str, target: float) -> None:
    wall = results[f"{ours}_s"] / results[f"{base}_s"]
    cpu = results[f"{ours}_cpu_s"] / results[f"{base}_cpu_s"]
    results[f"{name}_ratio_wall"], results[f"{name}_ratio_cpu"] = wall, cpu
    print(
        f"{name}: {results[f'{ours}_s']:.2f} s wall / {results[f'{ours}_cpu_s']:.2f} s CPU; "
        f"{base} {results[f'{base}_s']:.2f} s / {results[f'{base}_cpu_s']:.2f} s CPU "
        f"-> {wall:.2f}x wall, {cpu:.2f}x CPU (target <= {target:g}x)"
    )


def raw_aggregate_sql() -> tuple[str, list[Any]]:
    """Return the one aggregate the dashboard needs, hand-written, and its parameters."""
    from cashback import reports

    first, after = reports.Period(
        reports.parse_day(START, "start"), reports.parse_day(END, "end"), reports.parse_zone(ZONE)
    ).bounds()
    sql = """
        SELECT merchant_id, currency, (created_at AT TIME ZONE %s)::date AS day,
            count(*), count(*) FILTER (WHERE status = 'sent'),
            count(*) FILTER (WHERE status = 'rejected'),
            count(*) FILTER (WHERE status IN ('pending', 'unknown')),
            count(*) FILTER (WHERE status IN ('queued', 'sending')),
            count(*) FILTER (WHERE status = 'failed'),
            sum(amount_minor), sum(amount_minor) FILTER (WHERE status = 'sent'),
            sum(reserved_minor) FILTER (WHERE status = 'sent'),
            sum(cashback_amount) FILTER (WHERE status = 'sent')
        FROM cashback_purchase
        WHERE created_at >= %s AND created_at < %s
        GROUP BY 1, 2, 3
    """
    return sql, [ZONE, first, after]


COPY_SQL = """
    COPY (
        SELECT to_char(p.created_at AT TIME ZONE '{zone}', 'YYYY-MM-DD"T"HH24:MI:SS.US'),
            to_char(p.sent_at AT TIME ZONE '{zone}', 'YYYY-MM-DD"T"HH24:MI:SS.US'),
            m.public_id, m.name, p.order_id, p.customer, p.status, p.currency,
            p.amount_minor, p.requested_percentage, p.percentage,
            CASE WHEN p.status = 'sent' THEN p.reserved_minor ELSE 0 END,
            p.cashback_amount, p.cashback_amount / 1e9, p.unit, p.error
        FROM cashback_purchase p JOIN merchants_merchant m ON m.id = p.merchant_id
        WHERE p.created_at >= '{first}' AND p.created_at < '{after}'
        ORDER BY p.created_at, p.id
    ) TO STDOUT WITH CSV
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    url = os.environ.get("DATABASE_URL", DEFAULT_URL)
    if not url.startswith("postgres"):
        sys.exit("This benchmark needs PostgreSQL: set DATABASE_URL=postgres://…")
    ensure_database(url)
    os.environ.update(ENV | {"DATABASE_URL": url + ("&" if "?" in url else "?") + PG_OPTIONS})

    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    from cashback import reports
    from merchants.models import Merchant

    call_command("migrate", verbosity=0)
    build(args.rebuild)
    results: dict[str, Any] = {
        "purchases": PURCHASES,
        "merchants": MERCHANTS,
        "load_average_at_start": os.getloadavg()[0],
    }

    # --- Dashboard vs its raw aggregate ------------------------------------------------------
    user, _ = User.objects.get_or_create(
        username="bench", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(user)
    params = {"period": "custom", "start": START, "end": END, "tz": ZONE}
    response = client.get("/admin/payouts/", params)
    assert response.status_code == 200, response.status_code
    period = reports.Period(
        reports.parse_day(START, "start"), reports.parse_day(END, "end"), reports.parse_zone(ZONE)
    )
    flt = reports.ReportFilter(period)
    board = reports.dashboard(flt, Merchant.objects.all())
    assert board.totals.purchases == PURCHASES and len(board.rows) == MERCHANTS

    sql, sql_params = raw_aggregate_sql()

    def raw() -> None:
        with connection.cursor() as cur:
            cur.execute(sql, sql_params)
            cur.fetchall()

    raw()  # warm the cache
    results["raw_aggregate_s"], results["raw_aggregate_cpu_s"] = best_of(args.repeat, raw)
    results["dashboard_s"], results["dashboard_cpu_s"] = best_of(
        args.repeat, lambda: client.get("/admin/payouts/", params)
    )
    report(results, "dashboard", "dashboard", "raw_aggregate", 2)

    # --- CSV export vs COPY -------------------------------------------------------------------
    first, after = period.bounds()

    def export() -> None:
        size = 0
        for chunk in reports.csv_chunks("detail", flt):
            size += len(chunk.encode())
        results["csv_bytes"] = size

    def copy() -> None:
        size = 0
        with (
            connection.cursor() as cur,
            cur.connection.cursor().copy(
                COPY_SQL.format(zone=ZONE, first=first.isoformat(), after=after.isoformat())
            ) as stream,
        ):
            for block in stream:
                size += len(block)
        results["copy_bytes"] = size

    results["copy_s"], results["copy_cpu_s"] = best_of(args.repeat, copy)
    results["csv_s"], results["csv_cpu_s"] = best_of(max(1, args.repeat - 1), export)
    print(f"csv: {results['csv_bytes'] / 1e6:.0f} MB, COPY {results['copy_bytes'] / 1e6:.0f} MB")
    report(results, "csv", "csv", "copy", 4)

    # --- Peak memory of the command -----------------------------------------------------------
    # A small wrapper process starts the command and reports its children's max RSS: forked
    # from this big process, the command would count this process's pages as its own.
    command = [
        sys.executable, str(ROOT / "manage.py"), "export_payouts", f"--start={START}",
        f"--end={END}", f"--tz={ZONE}", "--output=/dev/null",
    ]  # fmt: skip
    wrapper = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        f"subprocess.run({command!r}, check=True); "
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    answer = subprocess.run(
        [sys.executable, "-c", wrapper],
        check=True,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
    ).stdout.split()
    results["command_s"] = float(answer[0])
    # ru_maxrss is in KiB on Linux.
    results["command_peak_mb"] = int(answer[1]) / 1024
    print(
        f"export_payouts command: {results['command_s']:.2f} s, peak RSS "
        f"{results['command_peak_mb']:.0f} MB (target < 150 MB)"
    )

    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "reports.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
