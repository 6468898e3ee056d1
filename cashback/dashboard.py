"""The payouts dashboard and the payout report downloads, inside Django admin.

Both need staff status (admin's own login) and the `cashback.export_payouts` permission,
which accountants get through their group and superusers have anyway. The figures and
files come from cashback.reports, the code path the `export_payouts` command uses too.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import date
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
from django.urls import path, reverse
from django.views.decorators.http import require_GET

from cashback import reports
from cashback.reports import Dashboard, ReportError, ReportFilter
from gateway.money import bytes_to_gbyte, format_money
from merchants.models import Merchant

logger = logging.getLogger(__name__)

PERMISSION = "cashback.export_payouts"
DEFAULT_PRESET = "this_month"

# The chart's drawing area in SVG user units (it scales to the page's width), and the room
# on its left for the y axis' labels.
CHART_WIDTH, CHART_HEIGHT, CHART_LEFT = 960, 260, 96


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


def _nice_top(peak: int) -> int:
    """Return the axis maximum: the first 1, 2 or 5 × 10^k at or above `peak` (integers)."""
    if peak <= 0:
        return 1
    scale = 1
    while True:
        for step in (1, 2, 5):
            if step * scale >= peak:
                return step * scale
        scale *= 10


def _bucket_label(day: date, unit: str) -> str:
    return day.strftime("%Y-%m") if unit == "month" else day.isoformat()


def _chart_svg(board: Dashboard) -> dict[str, Any]:
    """Return the chart's geometry in SVG user units, computed with integers only.

    Stacked bars per bucket (the merchants that paid most, then the others), the previous
    period as a line, a y axis in GBYTE with five ticks and the buckets' dates below.
    """
    points = board.chart
    n = max(len(points), 1)
    left, right, top, bottom = CHART_LEFT, 12, 30, 40
    plot_w, plot_h = CHART_WIDTH - left - right, CHART_HEIGHT - top - bottom
    totals = [v for _, v in points]
    peak = max([*totals, *board.previous, 0])
    axis_top = _nice_top(peak)
    slot = plot_w // n
    base = top + plot_h

    def y(value: int) -> int:
        return base - value * plot_h // axis_top

    names = {
        id(merchant): (merchant.public_id if merchant else "others") for merchant, _ in board.stacks
    }
    bars = []
    for i, (day, total) in enumerate(points):
        label = _bucket_label(day, board.chart_unit)
        x = left + i * slot + 1
        parts = []
        height_so_far = 0
        for k, (merchant, values) in enumerate(board.stacks):
            value = values[i]
            if not value:
                continue
            # Heights from the running sum, so that the stack's top is exactly the total's.
            h_end = (height_so_far + value) * plot_h // axis_top
            h_start = height_so_far * plot_h // axis_top
            parts.append(
                {
                    "y": base - h_end,
                    "height": h_end - h_start,
                    "series": "others" if merchant is None else k,
                    "name": names[id(merchant)],
                    "gbyte": format_money(bytes_to_gbyte(value), "GBYTE"),
                }
            )
            height_so_far += value
        bars.append(
            {
                "x": x,
                "width": max(slot - 2, 1),
                "label": label,
                "gbyte": format_money(bytes_to_gbyte(total), "GBYTE"),
                "parts": parts,
            }
        )
    ticks = [
        {
            "y": y(axis_top * q // 4),
            "label": format_money(bytes_to_gbyte(axis_top * q // 4), "GBYTE"),
        }
        for q in range(5)
    ]
    middle = len(points) // 2
    x_labels = [
        {"x": left + i * slot + slot // 2, "label": _bucket_label(points[i][0], board.chart_unit)}
        for i in sorted({0, middle, len(points) - 1})
        if points
    ]
    previous = " ".join(
        f"{left + i * slot + slot // 2},{y(v)}" for i, v in enumerate(board.previous)
    )
    legend = [
        {"series": "others" if m is None else k, "name": names[id(m)], "title": m.name if m else ""}
        for k, (m, _) in enumerate(board.stacks)
    ]
    past = board.previous_period
    return {
        "bars": bars,
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "left": left,
        "right_edge": CHART_WIDTH - right,
        "top": top,
        "base": base,
        "ticks": ticks,
        "x_labels": x_labels,
        "previous": previous,
        "previous_label": past.label() if past else "",
        "legend": legend,
        "empty": peak == 0,
        "peak": format_money(bytes_to_gbyte(max(totals, default=0)), "GBYTE"),
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
        for row in board.rows:
            row.links = purchase_links(selection.filter, row.merchant)  # type: ignore[attr-defined]
        context |= {
            "total_links": purchase_links(selection.filter, selection.filter.merchant),
            "count_columns": list(COLUMN_STATUSES),
            "selection": selection,
            "board": board,
            "chart": _chart_svg(board),
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


# The dashboard's count columns and the statuses each one counts.
COLUMN_STATUSES = {
    "purchases": (),
    "sent": ("sent",),
    "rejected": ("rejected",),
    "pending_unknown": ("pending", "unknown"),
    "queued_sending": ("queued", "sending"),
    "failed": ("failed",),
}


def purchase_links(flt: ReportFilter, merchant: Merchant | None) -> dict[str, str]:
    """Return, per count column, the purchases list filtered to that merchant, status and
    period (the period's exact instants, so the list counts what the dashboard counts)."""
    first, after = flt.period.bounds()
    base: dict[str, str] = {
        "created_at__gte": first.isoformat(),
        "created_at__lt": after.isoformat(),
    }
    if merchant is not None:
        base["merchant__id__exact"] = str(merchant.pk)
    url = reverse("admin:cashback_purchase_changelist")
    links = {}
    for column, statuses in COLUMN_STATUSES.items():
        params = dict(base)
        if len(statuses) == 1:
            params["status__exact"] = statuses[0]
        elif statuses:
            params["status__in"] = ",".join(statuses)
        links[column] = f"{url}?{urlencode(params)}"
    return links


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
            # A byte order mark by default, so that Excel reads the file as UTF-8; bom=0 for
            # programs that do not expect one.
            (
                chunk.encode()
                for chunk in reports.csv_chunks(report, flt, bom=request.GET.get("bom") != "0")
            ),
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
