"""Benchmark the purchase path against a floor, on PostgreSQL, and print the ratios.

    .venv/bin/python bench/run.py                 # the three comparisons (a few minutes)
    .venv/bin/python bench/run.py --memory 100000 # RSS of the workers over many purchases

Each comparison starts the sandbox upstream with an added latency, the floor (bench/floor,
a bare Django view) and the gateway under the same gunicorn.conf.py, then alternates short
runs A B A B … so that a noisy machine moves both sides alike; the median of the per-pair
ratios is the result. Absolute numbers depend on the machine; the ratios are the point.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.load import Result, children_of, rss_kib, run_load  # noqa: E402

PY = str(ROOT / ".venv" / "bin" / "python")
GUNICORN = str(ROOT / ".venv" / "bin" / "gunicorn")
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/cashback_bench"
BENCH_SECRET = "bench-only-secret-key-0123456789abcdefghijklmnopqrstuvwxyz"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"{url} did not answer within {seconds:g} s") from None
            time.sleep(0.2)


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]


class Bench:
    """Processes of one benchmark invocation, and the environment they share."""

    def __init__(self, database_url: str, logdir: Path) -> None:
        self.logdir = logdir
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "SECRET_KEY": os.environ.get("SECRET_KEY", BENCH_SECRET),
            "DEBUG": "off",
            "CASHBACK_SANDBOX": "on",
            "API_THROTTLE_RATE": "off",
            "API_IP_THROTTLE_RATE": "off",
            "GUNICORN_ACCESSLOG": os.environ.get("GUNICORN_ACCESSLOG", "-"),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        self.env.pop("DJANGO_SETTINGS_MODULE", None)

    def manage(self, *args: str, env: dict[str, str] | None = None) -> str:
        return subprocess.run(
            [PY, "manage.py", *args],
            cwd=ROOT,
            env=env or self.env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def prepare_database(self, database_url: str) -> str:
        """Create (if needed) and migrate the bench database; return a new merchant's key."""
        import psycopg

        name = database_url.rsplit("/", 1)[1]
        admin_url = database_url.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin_url, autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
                conn.execute(f'CREATE DATABASE "{name}"')
        self.manage("migrate", "--noinput", "-v0")
        line = self.manage("create_merchant", f"Bench {int(time.time())}", "--json")
        return json.loads(line)["api_key"]

    @contextmanager
    def process(self, name: str, args: list[str], env: dict[str, str]) -> Iterator[Server]:
        port = int(env["GUNICORN_BIND"].rsplit(":", 1)[1])
        log = open(self.logdir / f"{name}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield Server(name, port, proc)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()

    @contextmanager
    def sandbox(self, latency_ms: float) -> Iterator[str]:
        port = free_port()
        env = {**self.env, "GUNICORN_BIND": f"127.0.0.1:{port}"}
        args = [PY, "manage.py", "cashback_sandbox", "--port", str(port)]
        args += ["--latency-ms", str(latency_ms)]
        with self.process(f"sandbox-{latency_ms:g}ms", args, env):
            wait_for(f"http://127.0.0.1:{port}/healthz")
            self.env["CASHBACK_SANDBOX_URL"] = f"http://127.0.0.1:{port}/new_purchase"
            yield self.env["CASHBACK_SANDBOX_URL"]

    @contextmanager
    def gunicorn(self, name: str, app: str, **overrides: str) -> Iterator[Server]:
        port = free_port()
        env = {**self.env, "GUNICORN_BIND": f"127.0.0.1:{port}", **overrides}
        args = [GUNICORN, "-c", str(ROOT / "gunicorn.conf.py"), app]
        with self.process(name, args, env) as server:
            wait_for(f"http://127.0.0.1:{port}/healthz")
            yield server


FLOOR_APP = "bench.floor.wsgi:application"
GATEWAY_APP = "gateway.wsgi:application"


def load(server: Server, key: str, clients: int, seconds: float, tag: str) -> Result:
    return run_load(
        server.name,
        server.port,
        key,
        clients=clients,
        seconds=seconds,
        tag=tag,
        master_pid=server.process.pid,
    )


def fmt(r: Result) -> str:
    extra = f" statuses={r.statuses}" if r.errors else ""
    return (
        f"{r.label:<16} {r.rps:8.1f}/s  p50 {r.percentile(50):7.1f} ms  "
        f"p99 {r.percentile(99):7.1f} ms  errors {r.errors:4d}  "
        f"cpu {r.cpu_ms_per_request:5.2f} ms/req{extra}"
    )


@dataclass
class Comparison:
    title: str
    a: list[Result]
    b: list[Result]

    def ratios(self) -> list[float]:
        return [b.rps / a.rps if a.rps else 0.0 for a, b in zip(self.a, self.b, strict=True)]

    def p50_ratios(self) -> list[float]:
        return [b.percentile(50) / a.percentile(50) for a, b in zip(self.a, self.b, strict=True)]


def compare(
    title: str, a: Server, b: Server, key: str, clients: int, seconds: float, pairs: int
) -> Comparison:
    """Warm both up, then alternate A B A B …; print each run and each pair's ratio."""
    print(f"\n== {title}: {clients} clients, {pairs} pairs of {seconds:g} s", flush=True)
    stamp = f"{int(time.time() * 1000):x}"
    for server in (a, b):
        load(server, key, clients, 2.0, f"warm-{server.name}-{stamp}")
    comparison = Comparison(title, [], [])
    for i in range(pairs):
        ra = load(a, key, clients, seconds, f"{a.name}-{stamp}-{i}")
        rb = load(b, key, clients, seconds, f"{b.name}-{stamp}-{i}")
        comparison.a.append(ra)
        comparison.b.append(rb)
        print(f"  {fmt(ra)}\n  {fmt(rb)}", flush=True)
        print(
            f"  pair {i + 1}: {b.name}/{a.name} throughput {rb.rps / ra.rps:.2f}x, "
            f"p50 {rb.percentile(50) / ra.percentile(50):.2f}x",
            flush=True,
        )
    return comparison


def median_result(results: list[Result], attr: str) -> float:
    values = {
        "rps": [r.rps for r in results],
        "p50": [r.percentile(50) for r in results],
        "p99": [r.percentile(99) for r in results],
        "cpu": [r.cpu_ms_per_request for r in results],
        "errors": [float(r.errors) for r in results],
    }[attr]
    return statistics.median(values)


def print_table(rows: list[tuple[Comparison, str]]) -> None:
    """Print the summary as a Markdown table (medians over the pairs)."""
    print(
        "\n| comparison | side | req/s | p50 ms | p99 ms | CPU ms/req | errors | "
        "median ratio (B/A) | target |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for c, target in rows:
        for side, results in (("A " + c.a[0].label, c.a), ("B " + c.b[0].label, c.b)):
            is_b = results is c.b
            ratio = (
                f"throughput {statistics.median(c.ratios()):.2f}x, "
                f"p50 {statistics.median(c.p50_ratios()):.2f}x"
                if is_b
                else ""
            )
            print(
                f"| {c.title if not is_b else ''} | {side} | {median_result(results, 'rps'):.0f} | "
                f"{median_result(results, 'p50'):.1f} | {median_result(results, 'p99'):.1f} | "
                f"{median_result(results, 'cpu'):.2f} | {sum(r.errors for r in results)} | "
                f"{ratio} | {target if is_b else ''} |"
            )
    print(
        "\nPer-pair throughput ratios: "
        + "; ".join(f"{c.title}: " + ", ".join(f"{r:.2f}" for r in c.ratios()) for c, _ in rows)
    )


def run_comparisons(bench: Bench, key: str, args: argparse.Namespace) -> None:
    rows: list[tuple[Comparison, str]] = []
    with (
        bench.sandbox(0),
        bench.gunicorn("floor", FLOOR_APP) as floor,
        bench.gunicorn("gateway", GATEWAY_APP) as gateway,
    ):
        c = compare("upstream 0 ms", floor, gateway, key, 32, args.seconds, args.pairs)
        rows.append((c, "≥ 0.80x, p50 ≤ 1.25x"))
    with bench.sandbox(50):
        with (
            bench.gunicorn("floor", FLOOR_APP) as floor,
            bench.gunicorn("gateway", GATEWAY_APP) as gateway,
        ):
            c = compare("upstream 50 ms", floor, gateway, key, 64, args.seconds, args.pairs)
            rows.append((c, "≥ 0.80x"))
        with (
            bench.gunicorn("gateway-sync", GATEWAY_APP, GUNICORN_WORKER_CLASS="sync") as sync,
            bench.gunicorn("gateway", GATEWAY_APP) as gateway,
        ):
            c = compare("50 ms: sync vs threads", sync, gateway, key, 64, args.seconds, args.pairs)
            rows.append((c, "≥ 3x"))
    print_table(rows)


def run_memory(bench: Bench, key: str, args: argparse.Namespace) -> None:
    """Send `args.memory` purchases and print each worker's RSS after warm-up and at the end."""
    with bench.sandbox(0), bench.gunicorn("gateway", GATEWAY_APP) as gateway:
        stamp = f"{int(time.time() * 1000):x}"
        warm = load(gateway, key, 32, 5.0, f"mem-warm-{stamp}")
        # Warm-up until every worker has served a fair share, so imports and pools are done.
        warmed = warm.ok
        while warmed < min(5000, args.memory // 10):
            warmed += load(gateway, key, 32, 5.0, f"mem-warm-{stamp}-{warmed}").ok
        workers = children_of(gateway.process.pid)
        before = {pid: rss_kib(pid) for pid in workers}
        print(f"after {warmed} warm-up purchases: RSS per worker (KiB) {before}", flush=True)
        sent, errors, i = 0, 0, 0
        started = time.monotonic()
        while sent < args.memory:
            r = load(gateway, key, 32, 10.0, f"mem-{stamp}-{i}")
            sent, errors, i = sent + r.ok, errors + r.errors, i + 1
            print(f"  {sent} purchases, {r.rps:.0f}/s, errors {errors}", flush=True)
        after = {pid: rss_kib(pid) for pid in workers if Path(f"/proc/{pid}").exists()}
        print(f"\n{sent} purchases in {time.monotonic() - started:.0f} s, errors {errors}")
        print("| worker | RSS after warm-up (MiB) | RSS at end (MiB) | growth |")
        print("| --- | ---: | ---: | ---: |")
        for pid in workers:
            if pid in after:
                growth = (after[pid] - before[pid]) / before[pid] * 100
                print(
                    f"| {pid} | {before[pid] / 1024:.1f} | {after[pid] / 1024:.1f} | "
                    f"{growth:+.1f} % |"
                )
            else:
                print(f"| {pid} | {before[pid] / 1024:.1f} | (restarted) | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run")
    parser.add_argument("--pairs", type=int, default=3, help="A B pairs per comparison")
    parser.add_argument(
        "--memory", type=int, default=0, metavar="N", help="instead: RSS over N purchases"
    )
    args = parser.parse_args()
    database_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB)
    with tempfile.TemporaryDirectory(prefix="cashback-bench-") as tmp:
        bench = Bench(database_url, Path(tmp))
        key = bench.prepare_database(database_url)
        print(f"database {database_url.rsplit('@', 1)[-1]}; server logs in {tmp}")
        try:
            if args.memory:
                run_memory(bench, key, args)
            else:
                run_comparisons(bench, key, args)
        except BaseException:
            for log in sorted(Path(tmp).glob("*.log")):
                print(f"--- tail of {log.name}:\n" + "\n".join(log.read_text().splitlines()[-15:]))
            raise


if __name__ == "__main__":
    main()
