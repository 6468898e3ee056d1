"""WSGI entry point: `gunicorn gateway.wsgi:application`.

Two stock Django handlers serve the process. Requests under `settings.API_PATHS` (the
merchant API, the drop-in endpoint, the probes) go through `settings.API_MIDDLEWARE`; every
other one (the back office, the API docs, static files) through the whole `MIDDLEWARE`.
The back office's nine middleware cost a purchase about 7 % of its CPU and do nothing for it
(docs/performance.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import django
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")


class ChainHandler(WSGIHandler):
    """Django's WSGI handler with the middleware chain it is given instead of MIDDLEWARE."""

    def __init__(self, middleware: list[str]) -> None:
        self.middleware = middleware
        super().__init__()

    def load_middleware(self, is_async: bool = False) -> None:
        # BaseHandler reads the list from settings; it is swapped only while the chain is
        # built, once, before the server starts any thread.
        whole = settings.MIDDLEWARE
        settings.MIDDLEWARE = self.middleware
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = whole


django.setup(set_prefix=False)
api_handler = ChainHandler(settings.API_MIDDLEWARE)
site_handler = ChainHandler(settings.MIDDLEWARE)
_API_PATHS = tuple(settings.API_PATHS)


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Serve one request through the chain its path belongs to."""
    handler = api_handler if environ.get("PATH_INFO", "").startswith(_API_PATHS) else site_handler
    return handler(environ, start_response)
