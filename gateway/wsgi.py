"""WSGI entry point: `gunicorn gateway.wsgi:application`.

Two stock Django handlers serve the process. Requests under `settings.API_PATHS` (the
merchant API, the drop-in endpoint, the probes) go through `settings.API_MIDDLEWARE`; every
other one (the back office, the API docs, static files) through the whole `MIDDLEWARE`.
The back office's nine middleware cost a purchase about 7 % of its CPU and do nothing for it
(docs/performance.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import django
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")


@contextmanager
def middleware(paths: list[str]) -> Iterator[None]:
    """Make `paths` the MIDDLEWARE a handler's `load_middleware` builds its chain from.

    BaseHandler reads the list from settings; it is swapped only while a chain is built,
    once per handler, before the server starts any thread.
    """
    whole = settings.MIDDLEWARE
    settings.MIDDLEWARE = paths
    try:
        yield
    finally:
        settings.MIDDLEWARE = whole


class ChainHandler(WSGIHandler):
    """Django's WSGI handler with the middleware chain it is given instead of MIDDLEWARE."""

    def __init__(self, middleware: list[str]) -> None:
        self.middleware = middleware
        super().__init__()

    def load_middleware(self, is_async: bool = False) -> None:
        with middleware(self.middleware):
            super().load_middleware(is_async)


def serves_api(path_info: str) -> bool:
    """Whether a request for `path_info` takes the API's short chain."""
    return path_info.startswith(_API_PATHS)


django.setup(set_prefix=False)
_API_PATHS = tuple(settings.API_PATHS)
api_handler = ChainHandler(settings.API_MIDDLEWARE)
site_handler = ChainHandler(settings.MIDDLEWARE)


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Serve one request through the chain its path belongs to."""
    handler = api_handler if serves_api(environ.get("PATH_INFO", "")) else site_handler
    return handler(environ, start_response)
