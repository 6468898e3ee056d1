"""Log filters: a request id on every line, structured fields, and no secret ever printed.

`LOG_FORMAT=json` writes one JSON object per line (python-json-logger) for our loggers and
for gunicorn's error and access logs; redaction applies to every field of every line.
"""

from __future__ import annotations

import contextvars
import functools
import json
import logging
import os
import re
from datetime import datetime
from typing import Any
from urllib.parse import quote, quote_plus

from django.conf import settings
from gunicorn.glogging import Logger as GunicornLogger
from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
# The public id of the merchant whose API key authenticated the request, once it did.
merchant_var: contextvars.ContextVar[str] = contextvars.ContextVar("merchant", default="")
# Set in the WSGI environ too, so that gunicorn's access log (written after the request,
# outside its context) can name the merchant.
MERCHANT_ENVIRON_KEY = "cashback.merchant"

# Attributes every LogRecord has; anything else came from `extra=` and is printed as a field.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "request_id", "fields"}

# Our API keys and webhook secrets have a recognisable shape (see merchants.models). No
# leading word boundary: in a URL-encoded line a key follows "%20" or "%3A" directly.
# Webhook secrets: old ones are URL-safe base64, Standard Webhooks ones plain base64 (+ / =).
SECRET_PATTERN = re.compile(r"cbk_[A-Za-z0-9_-]{8,}|whsec_[A-Za-z0-9_+/-]{8,}=*")
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """Return `text` with the partner key and anything shaped like an API key removed."""
    # Gunicorn's master logs before (or without) Django settings; only the pattern applies.
    partner_key = settings.CASHBACK_PARTNER_KEY if settings.configured else ""
    if partner_key:
        for form in _written_forms(partner_key):
            text = text.replace(form, REDACTED)
    return SECRET_PATTERN.sub(REDACTED, text)


@functools.cache
def _written_forms(secret: str) -> tuple[str, ...]:
    """Return `secret` as written, and as a URL, a form body or a JSON string would hold it."""
    forms = {secret, quote(secret, safe=""), quote_plus(secret)}
    for ascii_only in (True, False):
        in_json = json.dumps(secret, ensure_ascii=ascii_only)[1:-1]
        forms |= {in_json, in_json.replace("/", "\\/")}
    # Longest first, so a form that contains another is replaced whole.
    return tuple(sorted(forms, key=len, reverse=True))


class RequestIdFilter(logging.Filter):
    """Add `request_id` and the `extra=` fields (as ` k=v …`) to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        merchant = merchant_var.get()
        if merchant and not hasattr(record, "merchant"):
            record.merchant = merchant
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
        json_lines = log_format() == "json"
        for log in (self.error_log, self.access_log):
            if not any(isinstance(f, RedactSecretsFilter) for f in log.filters):
                log.addFilter(RedactSecretsFilter())
            if json_lines:
                for handler in log.handlers:
                    handler.setFormatter(JsonFormatter())

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        """Write the access line; in JSON, with its parts as fields."""
        if log_format() != "json":
            super().access(resp, req, environ, request_time)
            return
        if not self.access_log_enabled:
            return
        atoms = self.atoms(resp, req, environ, request_time)
        headers = dict((name.lower(), value) for name, value in (resp.headers or ()))
        fields = {
            "remote_addr": atoms.get("h"),
            "method": atoms.get("m"),
            "path": atoms.get("U"),
            "query": atoms.get("q") or "",
            "status": int(atoms["s"]) if str(atoms.get("s")).isdigit() else atoms.get("s"),
            "bytes": atoms.get("B"),
            "duration_ms": round(request_time.total_seconds() * 1000, 3),
            "request_id": headers.get("x-request-id", "-"),
            "merchant": environ.get(MERCHANT_ENVIRON_KEY, ""),
        }
        try:
            self.access_log.info(
                "%s %s %s", atoms.get("m"), atoms.get("U"), atoms.get("s"), extra=fields
            )
        except Exception:
            self.exception("access log failed")


def _redact_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(str(k)): _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    return value


class JsonFormatter(_JsonFormatter):
    """One JSON object per line: time, level, logger, message, request id and every `extra=`
    field, each value redacted (and the whole line once more, for anything nested)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("timestamp", "time")
        kwargs.setdefault("rename_fields", {"levelname": "level", "name": "logger"})
        kwargs.setdefault("reserved_attrs", [*_STANDARD - {"request_id"}, "fields"])
        super().__init__("%(levelname)s %(name)s %(message)s", *args, **kwargs)
        # Python's warnings would print as bare text; as records they are JSON lines too.
        logging.captureWarnings(True)

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        return {key: _redact_value(value) for key, value in log_data.items()}

    def serialize_log_record(self, log_data: dict[str, Any]) -> str:
        return redact(super().serialize_log_record(log_data))

    def jsonify_log_record(self, log_data: dict[str, Any]) -> str:
        return json.dumps(log_data, default=str, ensure_ascii=False)


def log_format() -> str:
    """Return LOG_FORMAT: from settings once Django is set up, else from the environment."""
    if settings.configured:
        return str(getattr(settings, "LOG_FORMAT", "plain"))
    return os.environ.get("LOG_FORMAT", "plain").strip().lower() or "plain"
