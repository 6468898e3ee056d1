"""The payouts dashboard and the payout report downloads, inside Django admin.

Both need staff status (admin's own login) and the `cashback.export_payouts` permission,
which accountants get through their group and superusers have anyway. The figures and
files come from cashback.reports, the code path the `export_payouts` command uses too.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode
from zoneinfo import available_timezones

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    JsonResponse,
    QueryDict,
    StreamingHttpResponse,
)
from django.http.response import HttpResponseBase
from django.template.response import TemplateResponse
from django.urls import path
from django.views.decorators.http import require_GET

from cashback import reports
from cashback.reports import Dashboard, ReportError, ReportFilter
from gateway.money import bytes_to_gbyte
from merchants.models import Merchant

logger = logging.getLogger(__name__)

PERMISSION = "cashback.export_payouts"
DEFAULT_PRESET = "this_month"

# The chart's drawing area in SVG user units.
CHART_WIDTH, CHART_HEIGHT = 720, 160


@functools.cache
def zone_names() -> list[str]:
    """Return the IANA zone names for the zone field's suggestions (read from disk once)."""
    return sorted(available_timezones())


def _require_permission(request: HttpRequest) -> None:
    if not request.user.has_perm(PERMISSION):
        raise PermissionDenied("You need the export payouts permission.")


@dataclass(frozen=True)
class Selection:
    """The filters a page was asked for, as parsed from its query string."""

    preset: str
    filter: ReportFilter

    def query(self, **extra: str) -> str:
        """Return the query string that selects the same figures."""
        p = self.filter.period
        params = {"period": self.preset, "tz": p.zone}
        if self.preset == "custom":
            params |= {"start": p.start.isoformat(), "end": p.end.isoformat()}
        if self.filter.merchant is not None:
            params["merchant"] = self.filter.merchant.public_id
        return urlencode(params | extra)


def parse_selection(params: QueryDict) -> Selection:
    """Return the period and merchant the query string asks for, or raise ReportError."""
    preset = params.get("period") or ("custom" if params.get("start") else DEFAULT_PRESET)
    if preset not in reports.PRESETS:
        raise ReportError(f"Unknown period {preset!r}; choose one of {', '.join(reports.PRESETS)}.")
    tz = reports.parse_zone(params.get("tz"))
    if preset == "custom":
        start = reports.parse_day(params.get("start"), "Start date")
        end = reports.parse_day(params.get("end") or params.get("start"), "End date")
        period = reports.make_period(start, end, tz)
    else:
        period = reports.preset_period(preset, tz)
    merchant = reports.find_merchant(params.get("merchant"))
    return Selection(preset, ReportFilter(period, merchant))


def _chart_svg_bars(board: Dashboard) -> dict[str, Any]:
    """Return the chart's bars as SVG coordinates, computed with integers only."""
    points = board.chart
    peak = max((v for _, v in points), default=0)
    slot = CHART_WIDTH // max(len(points), 1)
    bars = []
    for i, (day, value) in enumerate(points):
        height = value * CHART_HEIGHT // peak if peak else 0
        label = day.strftime("%Y-%m") if board.chart_unit == "month" else day.isoformat()
        bars.append(
            {
                "x": i * slot + 1,
                "y": CHART_HEIGHT - height,
                "width": max(slot - 2, 1),
                "height": height,
                "label": label,
                "gbyte": bytes_to_gbyte(value),
            }
        )
    return {
        "bars": bars,
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "peak": bytes_to_gbyte(peak),
        "unit": board.chart_unit,
        "first": bars[0]["label"] if bars else "",
        "last": bars[-1]["label"] if bars else "",
    }


@require_GET
def dashboard_view(request: HttpRequest) -> HttpResponse:
    """Show payouts per merchant for the chosen period, with totals, a chart and exports."""
    _require_permission(request)
    merchants = list(Merchant.objects.only("id", "public_id", "name").order_by("name", "public_id"))
    context: dict[str, Any] = {
        **admin.site.each_context(request),
        "title": "Payouts dashboard",
        "merchants": merchants,
        "presets": reports.PRESETS,
        "zones": zone_names(),
        "default_zone": settings.TIME_ZONE,
        "params": request.GET,
    }
    status = 200
    try:
        selection = parse_selection(request.GET)
    except ReportError as exc:
        context["error"] = str(exc)
        status = 400
    else:
        board = reports.dashboard(selection.filter, merchants)
        context |= {
            "selection": selection,
            "board": board,
            "chart": _chart_svg_bars(board),
            "preset_links": [
                (key, label, _preset_query(selection, key))
                for key, label in reports.PRESETS.items()
                if key != "custom"
            ],
            "exports": [
                (f"{report.capitalize()} {fmt.upper()}", report, fmt, selection.query())
                for report in reports.REPORTS
                for fmt in reports.FORMATS
            ],
        }
    return TemplateResponse(request, "admin/payouts/dashboard.html", context, status=status)


def _preset_query(selection: Selection, preset: str) -> str:
    params = {"period": preset, "tz": selection.filter.period.zone}
    if selection.filter.merchant is not None:
        params["merchant"] = selection.filter.merchant.public_id
    return urlencode(params)


@require_GET
def export_view(request: HttpRequest, report: str, fmt: str) -> HttpResponseBase:
    """Download a payout report: CSV streamed row by row, or an XLSX workbook."""
    _require_permission(request)
    if report not in reports.REPORTS or fmt not in reports.FORMATS:
        return JsonResponse({"detail": "Unknown report or format."}, status=404)
    try:
        selection = parse_selection(request.GET)
    except ReportError as exc:
        return JsonResponse({"detail": str(exc)}, status=400)
    flt = selection.filter
    filename = flt.filename(report, fmt)
    logger.info(
        "payout report exported",
        extra={
            "user": request.user.get_username(),
            "report": report,
            "format": fmt,
            "period": flt.period.label(),
            "merchant": flt.merchant.public_id if flt.merchant else "",
        },
    )
    if fmt == "csv":
        response: HttpResponse | StreamingHttpResponse = StreamingHttpResponse(
            (chunk.encode() for chunk in reports.csv_chunks(report, flt)),
            content_type="text/csv; charset=utf-8",
        )
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
    else:
        response = FileResponse(
            reports.xlsx_file(report, flt),
            as_attachment=True,
            filename=filename,
            content_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        )
    # Reports hold customers' data: no shared caches.
    response["Cache-Control"] = "private, no-store"
    return response


urlpatterns = [
    path("", admin.site.admin_view(dashboard_view), name="payouts-dashboard"),
    path(
        "export/<slug:report>.<slug:fmt>",
        admin.site.admin_view(export_view),
        name="payouts-export",
    ),
]
