"""Write a payout report for a period, for scheduled jobs; the admin downloads' code path."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from cashback import reports
from cashback.reports import ReportError, ReportFilter
from gateway.db import report_timeout


class Command(BaseCommand):
    help = (
        "Write a payout report (detail: one row per purchase; summary: per merchant and "
        "currency) for purchases created from --start to --end, both days inclusive, in --tz."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--start", required=True, help="first day, YYYY-MM-DD")
        parser.add_argument("--end", required=True, help="last day (inclusive), YYYY-MM-DD")
        parser.add_argument("--report", choices=reports.REPORTS, default="detail")
        parser.add_argument("--merchant", default="", help="a merchant's public id")
        parser.add_argument("--tz", default="", help="IANA time zone; default TIME_ZONE")
        parser.add_argument("--format", dest="fmt", choices=reports.FORMATS, default="csv")
        parser.add_argument("--output", default="", help="file to write; default stdout")
        parser.add_argument(
            "--bom", action="store_true", help="CSV: start with a UTF-8 byte order mark (Excel)"
        )

    @report_timeout()
    def handle(self, *args: Any, **opts: Any) -> None:
        try:
            tz = reports.parse_zone(opts["tz"])
            start = reports.parse_day(opts["start"], "--start")
            end = reports.parse_day(opts["end"], "--end")
            period = reports.make_period(start, end, tz)
            flt = ReportFilter(period, reports.find_merchant(opts["merchant"]))
        except ReportError as exc:
            raise CommandError(str(exc)) from None
        report, fmt, output = opts["report"], opts["fmt"], opts["output"]
        if fmt == "csv":
            if output:
                # newline="": the csv module already ends lines with CRLF.
                with open(output, "w", encoding="utf-8", newline="") as f:
                    f.writelines(reports.csv_chunks(report, flt, bom=opts["bom"]))
            else:
                for chunk in reports.csv_chunks(report, flt, bom=opts["bom"]):
                    self.stdout.write(chunk, ending="")
        elif output:
            with open(output, "wb") as f:
                reports.write_xlsx(report, flt, f)
        else:
            binary = getattr(getattr(self.stdout, "_out", sys.stdout), "buffer", None)
            if binary is None:
                raise CommandError("XLSX is binary and stdout takes text here: give --output FILE.")
            reports.write_xlsx(report, flt, binary)
            binary.flush()
