"""A PostgreSQL session of its own, outside Django, for tests that play another process."""

from __future__ import annotations

from typing import Any

import psycopg
from django.db import connection


def raw_session(*, dbname: str = "", autocommit: bool = True) -> psycopg.Connection[Any]:
    """Connect with Django's parameters to `dbname` (default: the test database)."""
    params = connection.get_connection_params()
    return psycopg.connect(
        dbname=dbname or params["dbname"],
        host=params.get("host"),
        port=params.get("port"),
        user=params.get("user"),
        password=params.get("password"),
        autocommit=autocommit,
    )
