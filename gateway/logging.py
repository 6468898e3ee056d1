"""Log filters: a request id on every line, structured fields, and no secret ever printed."""

from __future__ import annotations

import contextvars
import logging
import re
from typing import Any
from urllib.parse import quote, quote_plus

from django.conf import settings
from gunicorn.glogging import Logger as GunicornLogger

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

# Attributes every LogRecord has; anything else came from `extra=` and is printed as a field.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "request_id", "fields"}

# Our API keys and webhook secrets have a recognisable shape (see merchants.models). No
# leading word boundary: in a URL-encoded line a key follows "%20" or "%3A" directly.
SECRET_PATTERN = re.compile(r"(cbk|whsec)_[A-Za-z0-9_-]{8,}")
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """Return `text` with the partner key and anything shaped like an API key removed."""
    # Gunicorn's master logs before (or without) Django settings; only the pattern applies.
    partner_key = settings.CASHBACK_PARTNER_KEY if settings.configured else ""
    if partner_key:
        # As written, and as it would appear in a URL or a form body.
        for form in {partner_key, quote(partner_key, safe=""), quote_plus(partner_key)}:
            text = text.replace(form, REDACTED)
    return SECRET_PATTERN.sub(REDACTED, text)


class RequestIdFilter(logging.Filter):
    """Add `request_id` and the `extra=` fields (as ` k=v …`) to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        extras = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
        record.fields = "".join(f" {k}={v}" for k, v in sorted(extras.items()))
        return True


class RedactSecretsFilter(logging.Filter):
    """Remove secrets from the message, its fields and any traceback before it is written."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        fields = getattr(record, "fields", "")
        if fields:
            record.fields = redact(fields)
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class RedactingGunicornLogger(GunicornLogger):
    """Gunicorn's own error and access logs, with secrets redacted like ours.

    Gunicorn writes them through its own handlers, which the root handler's filter never
    sees; a key pasted into a URL would otherwise reach the access log.
    """

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            if not any(isinstance(f, RedactSecretsFilter) for f in log.filters):
                log.addFilter(RedactSecretsFilter())
