"""Django's PostgreSQL backend, with a better check of pooled connections.

psycopg_pool checks one connection at a time before handing it out and backs off (1 s, 2 s,
4 s …) after each dead one, so after a database restart a pool full of dead connections
made requests wait out DATABASE_POOL_TIMEOUT and answer 503. Here the first dead connection
found sweeps the whole pool (dead ones are replaced in the background): one request waits
about a second, none fails. Everything else is Django's backend (`ENGINE`
`gateway.postgresql`, vendor `postgresql`).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.postgresql import base
from psycopg_pool import ConnectionPool

__all__ = ["DatabaseWrapper", "check_connection"]


def check_connection(conn: Any) -> None:
    """Raise if `conn` is dead, after discarding every other dead idle connection of its pool."""
    try:
        ConnectionPool.check_connection(conn)
    except Exception:
        pool = getattr(conn, "_pool", None)
        if isinstance(pool, ConnectionPool):
            pool.check()
        raise


class DatabaseWrapper(base.DatabaseWrapper):
    @property
    def pool(self) -> ConnectionPool | None:
        # Django's own property, with `check_connection` above as the pool's check.
        pool_options = self.settings_dict["OPTIONS"].get("pool")
        if self.alias == NO_DB_ALIAS or not pool_options:
            return None
        pools: dict[str, ConnectionPool] = self._connection_pools  # type: ignore[attr-defined]
        if self.alias not in pools:
            if self.settings_dict.get("CONN_MAX_AGE", 0) != 0:
                raise ImproperlyConfigured("Pooling doesn't support persistent connections.")
            connect_kwargs = self.get_connection_params()
            connect_kwargs["autocommit"] = True  # Django sets the real mode later
            pool = ConnectionPool(
                kwargs=connect_kwargs,
                open=False,
                configure=self._configure_connection,  # type: ignore[attr-defined]
                check=check_connection if self.settings_dict["CONN_HEALTH_CHECKS"] else None,
                **(pool_options if isinstance(pool_options, dict) else {}),
            )
            pools.setdefault(self.alias, pool)
        return pools[self.alias]
