"""Log filters: an expected refusal is a one-line warning, not a traceback."""

from __future__ import annotations

import logging

# Answers that are the normal outcome of a request (a permission check, a missing page).
EXPECTED = frozenset({403, 404})


class NoTracebackForExpected(logging.Filter):
    """Drop the traceback Django attaches to `django.request` records of 403 and 404."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "status_code", None) in EXPECTED:
            record.exc_info = None
            record.exc_text = None
        return True
