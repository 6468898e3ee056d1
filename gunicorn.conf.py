"""Gunicorn settings. Threaded workers: a purchase request spends most of its life waiting
on upstream, and sync workers would cap a host at a handful of purchases in flight."""

import atexit
import multiprocessing
import os
import shutil
import tempfile
from typing import Any

# Metrics (docs/operations.md): every worker process writes its samples into this directory
# and /metrics adds them up. It must be set before prometheus_client is first imported, which
# is why it is set here, in the master, before the app loads. Without one configured, a
# private directory is made for this master and removed when it exits; it is always empty at
# start, as the multiprocess mode requires.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _metrics_dir = tempfile.mkdtemp(prefix="cashback-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir
    _master = os.getpid()
    atexit.register(lambda: os.getpid() == _master and shutil.rmtree(_metrics_dir, True))

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
# One process per core (at most 4) with 16 threads: on 2 cores, 2 × 16 served 1.84× the
# purchases of 4 × 8 at 0.82× the CPU each, with half the database connections
# (docs/performance.md, "gunicorn"). A sync worker serves one request at a time.
workers = int(os.environ.get("GUNICORN_WORKERS", min(4, multiprocessing.cpu_count())))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
# Gunicorn silently turns sync workers into gthread ones when threads > 1: default to 1 there.
threads = int(os.environ.get("GUNICORN_THREADS", 16 if worker_class == "gthread" else 1))
# Longer than the upstream timeout, so a slow upstream is answered as `unknown`, not killed.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", 60))
graceful_timeout = 30
keepalive = 5
accesslog = os.environ.get("GUNICORN_ACCESSLOG", "-")
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%({x-request-id}o)s"'
errorlog = "-"
# Redact API keys and the partner key from gunicorn's own logs too (gateway/logging.py).
logger_class = "gateway.logging.RedactingGunicornLogger"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


def post_worker_init(worker: Any) -> None:
    """Keep the collector off what the app loaded (modules, URL routes, settings, admin).

    Those objects live as long as the worker; frozen, the occasional full collection walks
    only what requests made since. (Measured: a worker spent about 0.3 ms of every purchase
    in the collector, mostly re-walking the app.)
    """
    import gc

    gc.freeze()


def child_exit(server: object, worker: Any) -> None:
    """Forget a dead worker's live gauges; its counters stay in the sum."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
