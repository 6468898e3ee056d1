"""Prometheus counters and histograms of the request path, the worker and the upstream.

In production every gunicorn worker and every `cashback_worker` is a separate process, so
prometheus-client runs in its multiprocess mode: each process writes its samples to files in
`PROMETHEUS_MULTIPROC_DIR` (set before the first import of prometheus_client; gunicorn.conf.py,
the Makefile and the systemd units do it), and `/metrics` adds them up. Without that variable
(tests in one process, `runserver`) the samples live in this process's default registry.

Updating a sample costs a lock and a memory-mapped write: nothing here touches the database.
The gauges read from the database are computed by `monitoring.collector`, at most every few
seconds, when `/metrics` is scraped.

Labels are bounded sets only (outcomes, statuses, scopes): never an order id or a customer.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

PURCHASES = Counter(
    "cashback_purchases",
    "Purchases by the status an upstream attempt (or the retry window) left them in.",
    ["outcome"],
)
UPSTREAM_CALLS = Counter(
    "cashback_upstream_calls",
    "Calls of upstream new_purchase, by the class of their outcome.",
    ["outcome"],
)
UPSTREAM_LATENCY = Histogram(
    "cashback_upstream_call_duration_seconds",
    "Duration of upstream new_purchase calls, connection included.",
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0),
)
WEBHOOK_DELIVERIES = Counter(
    "cashback_webhook_deliveries",
    "Merchant webhook delivery attempts by result (delivered, retry, failed).",
    ["result"],
)
THROTTLED = Counter(
    "cashback_throttled_requests",
    "API requests refused with 429 by a throttle, by throttle scope.",
    ["scope"],
)
API_AUTH_FAILURES = Counter(
    "cashback_api_auth_failures",
    "API requests refused because their API key was missing, wrong, expired or revoked.",
)
ADMIN_LOGIN_FAILURES = Counter(
    "cashback_admin_login_failures",
    "Failed admin sign-ins, by step (password or second factor).",
    ["step"],
)
WORKER_PASSES = Counter(
    "cashback_worker_passes",
    "Completed passes of the background worker.",
)
