"""`/metrics` and its route (included at the root by gateway.urls): every process's counters plus the cached database gauges, for Prometheus.

Access: with METRICS_TOKEN set, only `Authorization: Bearer <METRICS_TOKEN>`; without it,
only a direct connection from loopback (no proxy header), so a reverse proxy on the same
host does not publish the metrics by accident.
"""

from __future__ import annotations

import glob
import hmac
import ipaddress
import os
from collections.abc import Iterable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.http import require_GET
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from cashback.gauges import DatabaseCollector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_PROXY_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")


class _ProcessFiles(Collector):
    """Add up the samples that every process wrote into the metrics directories."""

    def __init__(self, directories: Iterable[str]) -> None:
        self.directories = [d for d in directories if d]

    def collect(self) -> Iterable[Metric]:
        files = [f for d in self.directories for f in sorted(glob.glob(os.path.join(d, "*.db")))]
        return MultiProcessCollector.merge(files, accumulate=True)


class _ThisProcess(Collector):
    """This process's own registry (no multiprocess directory: tests, runserver)."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


_DATABASE = DatabaseCollector()


def allowed(request: HttpRequest) -> bool:
    """Return whether `request` may read the metrics."""
    token = settings.METRICS_TOKEN
    if token:
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())
    if any(request.META.get(h) for h in _PROXY_HEADERS):
        return False
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Answer Prometheus' scrape in its text format."""
    if not allowed(request):
        response = JsonResponse({"detail": "Not allowed."}, status=403)
        if settings.METRICS_TOKEN:
            response.status_code = 401
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    registry = CollectorRegistry(auto_describe=False)
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if directory:
        registry.register(_ProcessFiles([directory, *settings.METRICS_EXTRA_DIRS]))
    else:
        registry.register(_ThisProcess())
    registry.register(_DATABASE)
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE)


urlpatterns = [
    path("metrics", metrics),
]
