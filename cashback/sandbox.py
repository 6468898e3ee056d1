"""A local upstream that speaks `cashback-api.md`, for demos, tests and benchmarks.

It is deterministic: `cashback_amount` is 10 % of the purchase at a fixed demo rate, plus
the partner percentage and the program's equal match; the unit is derived from the order.
It speaks HTTP/1.1 with keep-alive and counts connections and requests, and it can be told
(over `/_sandbox/…` or in-process) to misbehave the ways a real upstream does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO
from urllib.parse import parse_qsl

logger = logging.getLogger(__name__)

# Demo exchange rates: bytes per unit of each currency (1 GBYTE = 10^9 bytes = 20 USD).
DEMO_RATES = {
    "USD": Decimal(50_000_000),
    "EUR": Decimal(55_000_000),
    "RUR": Decimal(500_000),
    "BTC": Decimal(3_000_000_000_000),
    "GBYTE": Decimal(1_000_000_000),
}
REQUIRED = ("customer", "order_id", "address", "currency", "currency_amount")
MODES = ("ok", "error", "auth", "429", "503", "500", "garbage", "slow", "drop")


def demo_cashback(currency: str, amount: Decimal, percentage: Decimal) -> int:
    """Return the sandbox's cashback in bytes: 10 % plus the partner percentage, matched."""
    rate = DEMO_RATES[currency]
    return int(amount * rate * (Decimal(10) + 2 * percentage) / 100)


def demo_unit(partner: str, merchant: str, order_id: str) -> str:
    """Return a well-formed, deterministic unit id (44 chars of base64) for an order."""
    digest = hashlib.sha256(f"{partner}\n{merchant}\n{order_id}".encode()).digest()
    return base64.b64encode(digest).decode()


@dataclass
class SandboxState:
    """What the sandbox saw, and how it should answer next. Shared by its threads."""

    partner: str
    partner_key: str
    latency: float = 0.0
    mode: str = "ok"
    mode_count: int | None = None  # answers left in `mode` before it returns to "ok"
    slow_seconds: float = 30.0
    requests: int = 0
    connections: int = 0
    duplicates: int = 0
    orders: dict[tuple[str, str], int] = field(default_factory=dict)
    log: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Append-only record of counted orders, so per-order counts survive a restart (or a kill).
    journal: TextIO | None = None

    def open_journal(self, path: str) -> None:
        """Load the order counts recorded in `path`, then append every new one to it."""
        try:
            with open(path, encoding="utf-8") as existing:
                for line in existing:
                    if line.strip():
                        merchant, order_id = json.loads(line)
                        self.count_order(merchant, order_id)
        except FileNotFoundError:
            pass
        self.journal = open(path, "a", encoding="utf-8")  # noqa: SIM115 (open while serving)

    def count_order(self, merchant: str, order_id: str) -> None:
        """Count one received order (call with the lock held, or before serving)."""
        key = (merchant, order_id)
        self.orders[key] = self.orders.get(key, 0) + 1
        if self.orders[key] > 1:
            self.duplicates += 1

    def next_mode(self) -> str:
        with self.lock:
            mode = self.mode
            if self.mode_count is not None:
                self.mode_count -= 1
                if self.mode_count <= 0:
                    self.mode, self.mode_count = "ok", None
            return mode

    def set_mode(
        self, mode: str, count: int | None = None, slow_seconds: float | None = None
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        with self.lock:
            self.mode, self.mode_count = mode, count
            if slow_seconds is not None:
                self.slow_seconds = slow_seconds

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": self.requests,
                "connections": self.connections,
                "orders": len(self.orders),
                "duplicates": self.duplicates,
                "mode": self.mode,
            }

    def order_counts(self) -> list[dict[str, Any]]:
        """Return how many times each order was received, as JSON-ready rows."""
        with self.lock:
            return [
                {"merchant": merchant, "order_id": order_id, "count": count}
                for (merchant, order_id), count in self.orders.items()
            ]

    def sent_count(self, merchant: str, order_id: str) -> int:
        """Return how many times an order was received (whatever the answer was)."""
        with self.lock:
            return self.orders.get((merchant, order_id), 0)


class SandboxHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle's algorithm on, the second waits for
    # the client's delayed ACK (~40 ms per call), so a "0 ms" sandbox was really 44 ms.
    disable_nagle_algorithm = True
    server: SandboxServer

    def setup(self) -> None:
        super().setup()
        with self.server.state.lock:
            self.server.state.connections += 1

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("sandbox: " + format, *args)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send_json(self, data: Any, status: int = 200) -> None:
        self._send_raw(json.dumps(data).encode(), status, "application/json")

    def _send_raw(self, body: bytes, status: int, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/_sandbox/stats":
            self._send_json(self.server.state.stats())
        elif self.path == "/_sandbox/orders":
            self._send_json({"orders": self.server.state.order_counts()})
        elif self.path == "/healthz":
            self._send_json({"status": "ok"})
        else:
            self._send_json({"result": "error", "error": "not found"}, 404)

    def do_POST(self) -> None:
        body = self._body()
        state = self.server.state
        if self.path == "/_sandbox/mode":
            try:
                data = json.loads(body or b"{}")
                state.set_mode(data.get("mode", "ok"), data.get("count"), data.get("slow_seconds"))
            except (ValueError, TypeError, AttributeError) as exc:
                self._send_json({"error": str(exc)}, 400)
                return
            self._send_json(state.stats())
            return
        if self.path.rstrip("/").rsplit("/", 1)[-1] != "new_purchase":
            self._send_json({"result": "error", "error": "not found"}, 404)
            return
        fields = self._parse_fields(body)
        if state.latency:
            time.sleep(state.latency)
        mode = state.next_mode()
        # Refused credentials take no effect, as busy answers: the order is not registered,
        # so a retry with good credentials succeeds.
        self._record(fields, counted=mode not in ("429", "503", "auth") and self._authentic(fields))
        if mode == "drop":
            # Read the request, then hang up without a word: the client cannot know.
            self.close_connection = True
            self.connection.close()
            return
        if mode == "slow":
            time.sleep(state.slow_seconds)
        answers: dict[str, tuple[int, bytes, str]] = {
            "429": (429, b'{"error": "too many requests"}', "application/json"),
            "503": (503, b"<html>maintenance</html>", "text/html"),
            "500": (500, b"<html>internal error</html>", "text/html"),
            "garbage": (200, b"<html>this is not json</html>", "text/html"),
        }
        if mode in answers:
            status, raw, content_type = answers[mode]
            self._send_raw(raw, status, content_type)
            return
        if mode == "auth":
            self._send_json({"result": "error", "error": "authentication failed"})
            return
        if mode == "error":
            self._send_json({"result": "error", "error": "purchase refused by the sandbox"})
            return
        self._send_json(self._answer(fields))

    def _parse_fields(self, body: bytes) -> dict[str, str]:
        if "json" in (self.headers.get("Content-Type") or ""):
            try:
                data = json.loads(body)
                return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
            except ValueError:
                return {}
        return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))

    def _record(self, fields: dict[str, str], *, counted: bool) -> None:
        state = self.server.state
        with state.lock:
            state.requests += 1
            state.log.append(
                {k: v for k, v in fields.items() if k != "partner_key"}
                | {"partner_key_ok": str(fields.get("partner_key") == state.partner_key)}
            )
            if counted and "order_id" in fields:
                state.count_order(fields.get("merchant", ""), fields["order_id"])
                if state.journal is not None:
                    # Written before the answer, so a sandbox killed after this line still
                    # remembers that the order arrived.
                    merchant_order = [fields.get("merchant", ""), fields["order_id"]]
                    state.journal.write(json.dumps(merchant_order) + "\n")
                    state.journal.flush()

    def _authentic(self, fields: dict[str, str]) -> bool:
        state = self.server.state
        return fields.get("partner") == state.partner and hmac.compare_digest(
            fields.get("partner_key", "").encode(), state.partner_key.encode()
        )

    def _answer(self, fields: dict[str, str]) -> dict[str, Any]:
        state = self.server.state
        if not self._authentic(fields):
            return {"result": "error", "error": "authentication failed"}
        missing = [name for name in REQUIRED if not fields.get(name)]
        if missing:
            return {"result": "error", "error": f"missing {', '.join(missing)}"}
        currency = fields["currency"]
        if currency not in DEMO_RATES:
            return {"result": "error", "error": f"unsupported currency {currency}"}
        try:
            amount = Decimal(fields["currency_amount"])
            percentage = Decimal(fields.get("partner_cashback_percentage") or "0")
        except InvalidOperation:
            return {
                "result": "error",
                "error": "currency_amount and partner_cashback_percentage must be numbers",
            }
        if not amount.is_finite() or amount <= 0:
            return {"result": "error", "error": "currency_amount must be positive"}
        if not percentage.is_finite() or not 0 <= percentage <= 100:
            return {
                "result": "error",
                "error": "partner_cashback_percentage must be between 0 and 100",
            }
        if state.sent_count(fields.get("merchant", ""), fields["order_id"]) > 1:
            return {"result": "error", "error": "this order_id was already registered"}
        return {
            "result": "ok",
            "cashback_amount": demo_cashback(currency, amount, percentage),
            "unit": demo_unit(fields["partner"], fields.get("merchant", ""), fields["order_id"]),
        }


class SandboxServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], state: SandboxState) -> None:
        self.state = state
        super().__init__(address, SandboxHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/new_purchase"


def start_in_thread(
    partner: str, partner_key: str, *, host: str = "127.0.0.1", port: int = 0, latency: float = 0.0
) -> SandboxServer:
    """Start a sandbox on a background thread (port 0: any free port); return the server."""
    server = SandboxServer((host, port), SandboxState(partner, partner_key, latency=latency))
    # A short poll interval: shutdown() waits for it, once per test that starts a sandbox.
    threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name="cashback-sandbox",
        daemon=True,
    ).start()
    return server
