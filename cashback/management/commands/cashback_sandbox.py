"""Run the local sandbox upstream (for `make run`, demos and benchmarks)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from cashback.sandbox import SandboxServer, SandboxState


class Command(BaseCommand):
    help = "Run a local upstream that speaks the cashback API (deterministic, keep-alive)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8900)
        parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every answer")
        parser.add_argument(
            "--state-file",
            default="",
            help="keep per-order counts in this file, so they survive a restart",
        )

    def handle(
        self, *args: Any, host: str, port: int, latency_ms: float, state_file: str, **options: Any
    ) -> None:
        state = SandboxState(
            settings.SANDBOX_PARTNER, settings.SANDBOX_PARTNER_KEY, latency=latency_ms / 1000
        )
        if state_file:
            state.open_journal(state_file)
        server = SandboxServer((host, port), state)
        self.stdout.write(f"Cashback sandbox upstream on {server.url} (partner {state.partner!r})")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
            if state.journal is not None:
                state.journal.close()
