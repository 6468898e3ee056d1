"""Stored UTC times as ISO 8601 text in a time zone, fast (the detail export's hot loop)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo


class LocalTimes:
    """Turn stored UTC times into ISO 8601 text in a zone, fast: the export's hot loop.

    `datetime` calls cost microseconds each, more than the rest of a row, so for each UTC
    hour whose offset in the zone is whole hours and the same at its start and its end,
    the local "YYYY-MM-DDTHH" and the offset are computed once and the minutes, seconds
    and fraction are copied from the stored text. Any other time takes `datetime`'s way.
    """

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz
        self.hours: dict[str, tuple[str, str] | None] = {}

    def iso(self, stored: str) -> str:
        # PostgreSQL (session in UTC) writes "2026-10-01 08:00:00.5+00", SQLite
        # "2026-10-01 08:00:00.500000"; the fraction is what lies between :SS and "+00".
        tail = stored[19:]
        fraction = tail[:-3] if tail[-3:] == "+00" else tail
        if fraction and not (fraction[0] == "." and fraction[1:].isdigit()):
            return self.slow(stored)
        hour = stored[:13]
        if hour in self.hours:
            cached = self.hours[hour]
        else:
            cached = self.hours[hour] = self._hour(hour)
        if cached is None:
            return self.slow(stored)
        if fraction:
            # isoformat() writes six digits, and none for a whole second.
            fraction = (fraction + "00000")[:7]
            if fraction == ".000000":
                fraction = ""
        return cached[0] + stored[13:19] + fraction + cached[1]

    def slow(self, stored: str) -> str:
        moment = datetime.fromisoformat(stored)
        if moment.tzinfo is None:
            # SQLite stores times in UTC without an offset.
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(self.tz).isoformat()

    def _hour(self, hour: str) -> tuple[str, str] | None:
        try:
            start = datetime.fromisoformat(hour + ":00:00+00:00")
        except ValueError:
            return None
        first = start.astimezone(self.tz)
        last = (start + timedelta(seconds=3599, microseconds=999_999)).astimezone(self.tz)
        offset = first.utcoffset()
        if offset is None or offset != last.utcoffset() or offset.total_seconds() % 3600:
            return None
        text = first.isoformat()  # "2026-10-01T10:00:00+02:00"
        return text[:13], text[19:]
