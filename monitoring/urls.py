"""The readiness route, included at the root by gateway.urls."""

from __future__ import annotations

from django.urls import path

from monitoring.views import readyz

urlpatterns = [
    path("readyz", readyz),
]
