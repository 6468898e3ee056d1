"""Middleware: request ids, the body size limit, and a Content Security Policy."""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from gateway.logging import merchant_var, request_id_var

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self'; connect-src 'self'; object-src 'none'; "
    "frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)
_CSP_PATHS = ("/admin/", "/api/docs/", "/api/redoc/")


class RequestIdMiddleware:
    """Tag each request with an id (the caller's `X-Request-ID` if sane) for the logs."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        # Set by the API key check once it knows the merchant; cleared for the next request.
        merchant_token = merchant_var.set("")
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(token)
            merchant_var.reset(merchant_token)
        response["X-Request-ID"] = request_id
        return response


class BodySizeLimitMiddleware:
    """Answer 413 for a body over MAX_REQUEST_BODY_BYTES before anything parses it.

    Django alone answers 400 (RequestDataTooBig) and DRF's parsers read the stream without
    its limit, so the declared length is checked here, first. A chunked body declares no
    length: it is read here up to the limit (the server has decoded the chunks and marks the
    input as terminated), refused with 413 past it, and handed on as an ordinary body; a
    server that cannot say where such a body ends gets 411.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.MAX_REQUEST_BODY_BYTES
        declared = request.META.get("CONTENT_LENGTH")
        if declared:
            try:
                length = int(declared)
            except ValueError:
                length = -1
            if length < 0:
                return JsonResponse({"detail": "Invalid Content-Length header."}, status=400)
            if length > limit:
                return _too_large(limit)
        elif "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
            if not request.META.get("wsgi.input_terminated"):
                return JsonResponse(
                    {"detail": "Send a Content-Length header with the body."}, status=411
                )
            body = _read_at_most(request.META["wsgi.input"], limit + 1)
            if len(body) > limit:
                return _too_large(limit)
            # Hand the buffered body on as if it had been sent with its length.
            request.META["CONTENT_LENGTH"] = str(len(body))
            request._stream = io.BytesIO(body)  # type: ignore[attr-defined]
        return self.get_response(request)


def _too_large(limit: int) -> JsonResponse:
    return JsonResponse({"detail": f"Request body is larger than {limit // 1024} KiB."}, status=413)


def _read_at_most(stream: Any, size: int) -> bytes:
    """Read until end of stream or `size` bytes, whichever comes first."""
    parts: list[bytes] = []
    remaining = size
    while remaining > 0:
        chunk = stream.read(min(remaining, 65536))
        if not chunk:
            break
        parts.append(chunk)
        remaining -= len(chunk)
    return b"".join(parts)


class ContentSecurityPolicyMiddleware:
    """Send a strict Content Security Policy on admin and API documentation pages."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if request.path.startswith(_CSP_PATHS):
            response.setdefault("Content-Security-Policy", CSP)
        return response
