"""URL routes: the merchant API, the drop-in endpoint, admin, docs, health."""

from __future__ import annotations

import logging

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect, JsonResponse
from django.templatetags.static import static
from django.urls import include, path
from django.views import defaults
from django.views.decorators.http import require_GET
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Answer while the process serves requests (liveness)."""
    return JsonResponse({"status": "ok"})


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Answer an unrouted API path (e.g. an order id with a newline) as JSON, like the API."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    if request.path.startswith("/admin/"):
        # Styled like the back office, not Django's bare page.
        return defaults.page_not_found(request, exception, template_name="admin/404.html")
    return defaults.page_not_found(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Answer a refused back-office page in the back office's style (accountants see these)."""
    if request.path.startswith("/admin/"):
        return defaults.permission_denied(request, exception, template_name="admin/403.html")
    return defaults.permission_denied(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    """Answer a crash as JSON to API clients; drop-in clients read only `result`."""
    if request.path == "/new_purchase":
        return JsonResponse(
            {
                "result": "error",
                "error": "internal error in the gateway; the purchase may be stored, so do not "
                "request cashback for this order_id anywhere else",
            },
            status=500,
        )
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Internal server error."}, status=500)
    if request.path.startswith("/admin/"):
        try:
            return defaults.server_error(request, template_name="admin/500.html")
        except Exception:
            # The plain page below must still answer.
            logging.getLogger(__name__).exception("The styled 500 page failed")
    return defaults.server_error(request)


@require_GET
def favicon(request: HttpRequest) -> HttpResponse:
    """Point browsers that ask for /favicon.ico at the back office's icon (no 404 per page)."""
    return HttpResponsePermanentRedirect(static("backoffice/favicon.svg"))


handler403 = permission_denied
handler404 = not_found
handler500 = server_error


urlpatterns = [
    # First: Django tries the routes in order, and these take nearly every request.
    path("api/v1/", include("cashback.urls")),
    path("healthz", healthz),
    path("", include("monitoring.urls")),  # readyz
    path("", include("cashback.metrics_endpoint")),  # metrics
    path("favicon.ico", favicon),
    # The payouts dashboard and reports live inside admin; before admin's own routes.
    path("admin/payouts/", include("cashback.dashboard")),
    path("admin/2fa/", include("accounts.urls")),  # the second factor, before admin's routes
    path("admin/", admin.site.urls),
    path("", include("cashback.dropin_urls")),
    path("api/v1/", include("merchants.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
]
