"""Benchmark the purchase path against a floor, on PostgreSQL, and print the ratios.

    .venv/bin/python bench/run.py                 # every comparison (about 9 minutes)
    .venv/bin/python bench/run.py --only async    # Prefer: respond-async intake and drain
    .venv/bin/python bench/run.py --memory 100000 # RSS of the workers over many purchases

Each comparison starts the sandbox upstream with an added latency, the floor (bench/floor,
a bare Django view) and the gateway under the same gunicorn.conf.py, then alternates short
runs A B A B … A, so that a noisy machine moves both sides alike. Each B run is compared
with the mean of the A runs either side of it, which cancels a drift of the machine's speed
over the round; the median of those ratios is the result. Absolute numbers depend on the
machine; the ratios are the point.
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
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.load import Result, children_of, rss_kib, run_load, settle  # noqa: E402

PY = str(ROOT / ".venv" / "bin" / "python")
GUNICORN = str(ROOT / ".venv" / "bin" / "gunicorn")
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/cashback_bench"
BENCH_SECRET = "bench-only-secret-key-0123456789abcdefghijklmnopqrstuvwxyz"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, seconds: float = 180.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=15).close()
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


def load(
    server: Server, key: str, clients: int, seconds: float, tag: str, path: str = ""
) -> Result:
    return run_load(
        server.name,
        server.port,
        key,
        clients=clients,
        seconds=seconds,
        tag=tag,
        master_pid=server.process.pid,
        path=path or "/api/v1/purchases",
    )


def fmt(r: Result) -> str:
    extra = f" statuses={r.statuses}" if r.errors else ""
    return (
        f"{r.label:<16} {r.rps:8.1f}/s  p50 {r.percentile(50):7.1f} ms  "
        f"p99 {r.percentile(99):7.1f} ms  errors {r.errors:4d}  "
        f"cpu {r.cpu_ms_per_request:5.2f} ms/req{extra}"
    )


@dataclass
class Target:
    """One side of a comparison: a server and the path that takes the purchases."""

    label: str
    server: Server
    path: str = "/api/v1/purchases"


@dataclass
class Comparison:
    title: str
    labels: list[str]
    runs: list[list[Result]]  # runs[i][j]: round i, target j; target 0 is the baseline
    # The baseline run after the last round, which closes its bracket (none: the last round
    # is compared with its own baseline run alone).
    closing: list[Result] = field(default_factory=list)

    def _bracket(self, i: int) -> list[Result]:
        """The baseline runs either side of round i's targets."""
        after = self.runs[i + 1][:1] if i + 1 < len(self.runs) else self.closing
        return [self.runs[i][0], *after]

    def ratio(self, i: int, j: int) -> float:
        base = statistics.mean(b.rps for b in self._bracket(i))
        return self.runs[i][j].rps / base if base else 0.0

    def p50_ratio(self, i: int, j: int) -> float:
        base = statistics.mean(b.percentile(50) for b in self._bracket(i))
        return self.runs[i][j].percentile(50) / base

    def ratios(self, j: int) -> list[float]:
        return [self.ratio(i, j) for i in range(len(self.runs))]

    def p50_ratios(self, j: int) -> list[float]:
        return [self.p50_ratio(i, j) for i in range(len(self.runs))]

    def column(self, j: int) -> list[Result]:
        return [r[j] for r in self.runs]


# Set by main(): the bench database, settled before every run (see `settle_database`).
DATABASE_URL = ""


def settle_database() -> None:
    """Vacuum and checkpoint the bench database before a run (bench.load.settle says why)."""
    import psycopg

    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        settle(conn)


def compare(
    title: str, targets: list[Target], key: str, clients: int, seconds: float, rounds: int
) -> Comparison:
    """Warm every target up, alternate them (A B A B … A); print each run and ratio."""
    print(f"\n== {title}: {clients} clients, {rounds} rounds of {seconds:g} s each", flush=True)
    stamp = f"{int(time.time() * 1000):x}"
    for t in targets:
        load(t.server, key, clients, 2.0, f"warm-{t.label}-{stamp}", t.path)
    comparison = Comparison(title, [t.label for t in targets], [])

    def run(t: Target, name: str) -> Result:
        settle_database()
        r = load(t.server, key, clients, seconds, f"{t.label}-{stamp}-{name}", t.path)
        r.label = t.label
        print(f"  {fmt(r)}", flush=True)
        return r

    def print_round(i: int) -> None:
        c = comparison
        print(
            f"  round {i + 1} (to the mean of the {c.labels[0]} runs either side): "
            + "; ".join(
                f"{c.labels[j]} throughput {c.ratio(i, j):.2f}x, p50 {c.p50_ratio(i, j):.2f}x"
                for j in range(1, len(targets))
            ),
            flush=True,
        )

    for i in range(rounds):
        row = [run(targets[0], str(i))]
        comparison.runs.append(row)
        if i:
            print_round(i - 1)
        row += [run(t, str(i)) for t in targets[1:]]
    comparison.closing.append(run(targets[0], "closing"))
    print_round(rounds - 1)
    return comparison


def median_of(results: list[Result], attr: str) -> float:
    values = {
        "rps": [r.rps for r in results],
        "p50": [r.percentile(50) for r in results],
        "p99": [r.percentile(99) for r in results],
        "cpu": [r.cpu_ms_per_request for r in results],
    }[attr]
    return statistics.median(values)


def print_table(rows: list[tuple[Comparison, dict[str, str]]]) -> None:
    """Print the summary as a Markdown table: medians over the rounds, ratios to side A."""
    print(
        "\n| comparison | side | req/s | p50 ms | p99 ms | server CPU ms/req | errors "
        "| median ratio to A | target |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for c, targets in rows:
        for j, label in enumerate(c.labels):
            results = c.column(j)
            ratio = (
                f"throughput {statistics.median(c.ratios(j)):.2f}x, "
                f"p50 {statistics.median(c.p50_ratios(j)):.2f}x"
                if j
                else ""
            )
            print(
                f"| {c.title if j == 0 else ''} | {'AB'[min(j, 1)]}{j if j > 1 else ''} {label} "
                f"| {median_of(results, 'rps'):.0f} | {median_of(results, 'p50'):.1f} "
                f"| {median_of(results, 'p99'):.1f} | {median_of(results, 'cpu'):.2f} "
                f"| {sum(r.errors for r in results)} | {ratio} | {targets.get(label, '')} |"
            )
    print("\nPer-round throughput ratios to A:")
    for c, _ in rows:
        for j, label in enumerate(c.labels[1:], start=1):
            print(f"  {c.title}, {label}: " + ", ".join(f"{r:.2f}" for r in c.ratios(j)))


def run_comparisons(bench: Bench, key: str, args: argparse.Namespace) -> None:
    rows: list[tuple[Comparison, dict[str, str]]] = []
    if args.only in ("all", "0ms"):
        run_0ms(bench, key, args, rows)
    if args.only in ("all", "50ms", "sync"):
        run_50ms(bench, key, args, rows)
    if args.only in ("all", "async"):
        run_async(bench, key, args, rows)
    if args.only in ("all", "c1"):
        run_c1(bench, key, args, rows)
    if args.only == "gunicorn":
        run_gunicorn(bench, key, args, rows)
    print_table(rows)


def run_async(
    bench: Bench, key: str, args: argparse.Namespace, rows: list[tuple[Comparison, dict[str, str]]]
) -> None:
    """`Prefer: respond-async` intake and the worker's drain against the floor (async_intake)."""
    from bench import async_intake

    runs, closing = async_intake.measure(
        bench,
        key,
        bench.env["DATABASE_URL"],
        floor_app=FLOOR_APP,
        gateway_app=GATEWAY_APP,
        clients=32,
        seconds=args.seconds,
        rounds=args.rounds,
        fmt=fmt,
    )
    c = Comparison("respond-async, 0 ms", async_intake.LABELS, runs, [closing])
    for i in range(len(runs)):
        print(
            f"  round {i + 1} (to the mean of the floor runs either side): "
            + ", ".join(f"{c.labels[j]} {c.ratio(i, j):.2f}x" for j in range(1, len(c.labels))),
            flush=True,
        )
    rows.append((c, async_intake.TARGETS))


def run_0ms(
    bench: Bench, key: str, args: argparse.Namespace, rows: list[tuple[Comparison, dict[str, str]]]
) -> None:
    with (
        bench.sandbox(0),
        bench.gunicorn("floor", FLOOR_APP) as floor,
        bench.gunicorn("gateway", GATEWAY_APP) as gateway,
    ):
        targets = [Target("floor", floor), Target("gateway", gateway)]
        if args.orm_floor:
            targets.insert(1, Target("floor-orm", floor, "/orm/purchases"))
        c = compare("upstream 0 ms", targets, key, 32, args.seconds, args.rounds)
        rows.append((c, {"gateway": "≥ 0.80x, p50 ≤ 1.25x"}))


def run_c1(
    bench: Bench, key: str, args: argparse.Namespace, rows: list[tuple[Comparison, dict[str, str]]]
) -> None:
    """One client at a time, 0 ms: the latency a lone point of sale sees."""
    with (
        bench.sandbox(0),
        bench.gunicorn("floor", FLOOR_APP) as floor,
        bench.gunicorn("gateway", GATEWAY_APP) as gateway,
    ):
        targets = [Target("floor", floor), Target("gateway", gateway)]
        c = compare("0 ms, concurrency 1", targets, key, 1, args.seconds, args.rounds)
        rows.append((c, {"gateway": "p50 ≤ 1.30x"}))


def run_gunicorn(
    bench: Bench, key: str, args: argparse.Namespace, rows: list[tuple[Comparison, dict[str, str]]]
) -> None:
    """The gateway under 4 workers × 8 threads against 2 × 16 and 2 × 8 (0 ms, 32 clients)."""
    with (
        bench.sandbox(0),
        bench.gunicorn("gw-4x8", GATEWAY_APP, GUNICORN_WORKERS="4", GUNICORN_THREADS="8") as a,
        bench.gunicorn("gw-2x16", GATEWAY_APP, GUNICORN_WORKERS="2", GUNICORN_THREADS="16") as b,
        bench.gunicorn("gw-2x8", GATEWAY_APP, GUNICORN_WORKERS="2", GUNICORN_THREADS="8") as c2,
    ):
        targets = [Target("gw-4x8", a), Target("gw-2x16", b), Target("gw-2x8", c2)]
        c = compare("gunicorn, 0 ms", targets, key, 32, args.seconds, args.rounds)
        rows.append((c, {}))


def run_50ms(
    bench: Bench, key: str, args: argparse.Namespace, rows: list[tuple[Comparison, dict[str, str]]]
) -> None:
    with bench.sandbox(50):
        if args.only != "sync":
            with (
                bench.gunicorn("floor", FLOOR_APP) as floor,
                bench.gunicorn("gateway", GATEWAY_APP) as gateway,
            ):
                targets = [Target("floor", floor), Target("gateway", gateway)]
                c = compare("upstream 50 ms", targets, key, 64, args.seconds, args.rounds)
                rows.append((c, {"gateway": "≥ 0.80x"}))
        with (
            bench.gunicorn(
                "gateway-sync", GATEWAY_APP, GUNICORN_WORKER_CLASS="sync", GUNICORN_THREADS="1"
            ) as sync,
            bench.gunicorn("gateway", GATEWAY_APP) as gateway,
        ):
            targets = [Target("gateway-sync", sync), Target("gateway", gateway)]
            c = compare("50 ms: sync vs gthread", targets, key, 64, args.seconds, args.rounds)
            rows.append((c, {"gateway": "≥ 3x"}))


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
            live = [rss_kib(pid) for pid in workers if Path(f"/proc/{pid}").exists()]
            mean = sum(live) / len(live) / 1024 if live else 0.0
            print(
                f"  {sent} purchases, {r.rps:.0f}/s, errors {errors}, "
                f"mean worker RSS {mean:.1f} MiB",
                flush=True,
            )
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
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each run")
    parser.add_argument("--rounds", type=int, default=5, help="A B rounds per comparison")
    parser.add_argument(
        "--no-orm-floor",
        dest="orm_floor",
        action="store_false",
        help="at 0 ms, skip the floor's ORM variant (it shows how much of the gap is the ORM)",
    )
    parser.add_argument(
        "--only",
        choices=("all", "0ms", "50ms", "sync", "async", "c1", "gunicorn"),
        default="all",
        help="one comparison",
    )
    parser.add_argument(
        "--memory", type=int, default=0, metavar="N", help="instead: RSS over N purchases"
    )
    args = parser.parse_args()
    database_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB)
    global DATABASE_URL
    DATABASE_URL = database_url
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
