"""Start and kill the processes of a multi-host deployment on loopback addresses.

Each process runs in its own session (process group), so killing a "host" kills a gunicorn
master and its workers at once, as a lost machine would. Output goes to one log file per
process, printed when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import requests

BASE_DIR = Path(__file__).resolve().parent.parent.parent
BIN = Path(sys.executable).parent
# The commands of docs/deploy.md, exactly.
GUNICORN = [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "gateway.wsgi:application"]
MANAGE = [sys.executable, "manage.py"]


def free_port(*hosts: str) -> int:
    """Return a TCP port that is free on every one of `hosts` right now."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = probe.getsockname()[1]
        try:
            for host in hosts:
                with socket.socket() as other:
                    other.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no port free on all of {hosts}")


def wait_ready(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30) -> None:
    """Poll `url` until it answers 200; fail early if `proc` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {proc.returncode}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:g} s")


class Cluster:
    """The processes a test started, by name, with their logs under `log_dir`."""

    def __init__(self, log_dir: Path, env: Mapping[str, str]) -> None:
        self.log_dir = log_dir
        self.env = dict(env)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: list[Path] = []

    def start(
        self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start `argv` in the project directory with the cluster's env plus `env`."""
        log = self.log_dir / f"{name}.log"
        if log not in self.logs:
            self.logs.append(log)
        with log.open("ab") as out:
            proc = subprocess.Popen(
                list(argv),
                cwd=BASE_DIR,
                env={**self.env, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def run(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
        """Run a command to its end; return its stdout, or fail with its output."""
        done = subprocess.run(
            list(argv),
            cwd=BASE_DIR,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        (self.log_dir / f"{name}.log").write_text(done.stdout + done.stderr)
        if done.returncode:
            raise AssertionError(
                f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
            )
        return done.stdout

    def kill(self, name: str) -> None:
        """SIGKILL the process group of `name`: no handler runs, nothing is flushed."""
        proc = self.procs.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def kill_all(self) -> None:
        for name in list(self.procs):
            self.kill(name)

    def dump_logs(self, lines: int = 80) -> None:
        """Print the end of every log, for a failed run."""
        for log in self.logs:
            if log.exists():
                tail = log.read_text(errors="replace").splitlines()[-lines:]
                print(f"\n===== {log.name} (last {len(tail)} lines) =====")
                print("\n".join(tail))
