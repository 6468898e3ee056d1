"""Django's PostgreSQL backend, with session timeouts and a better check of pooled connections.

Timeouts: every session starts with the `SESSION_TIMEOUTS` of the database settings
(statement_timeout, lock_timeout, in seconds) as startup options, except the maintenance
connection that creates and drops databases; migrations lift the statement timeout while
they run (an index on a big table takes longer) and keep the lock timeout, so a migration
that cannot get its lock fails instead of queueing every request behind it.

psycopg_pool checks one connection at a time before handing it out and backs off (1 s, 2 s,
4 s …) after each dead one, so after a database restart a pool full of dead connections
made requests wait out DATABASE_POOL_TIMEOUT and answer 503. Here the first dead connection
found sweeps the whole pool (dead ones are replaced in the background): one request waits
about a second, none fails. Everything else is Django's backend (`ENGINE`
`gateway.postgresql`, vendor `postgresql`).
"""

from __future__ import annotations

import select
from typing import Any, cast

from django.core.exceptions import ImproperlyConfigured
from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.postgresql import base, operations, schema
from django.db.backends.utils import CursorWrapper
from psycopg.pq import TransactionStatus
from psycopg.types import numeric
from psycopg_pool import ConnectionPool

__all__ = ["DatabaseWrapper", "check_connection"]


def check_connection(conn: Any) -> None:
    """Raise if `conn` is dead, after discarding every other dead idle connection of its pool.

    Without a round trip when nothing says it may be dead: a connection the server closed
    (a restart, a terminated backend, an idle timeout) has its socket readable (the server's
    last message and the end of the stream), while a live idle one has nothing to read. Only
    then, or when its state is not plainly idle, is it tested with an empty query.
    """
    try:
        if _maybe_dead(conn):
            ConnectionPool.check_connection(conn)
    except Exception:
        pool = getattr(conn, "_pool", None)
        if isinstance(pool, ConnectionPool):
            pool.check()
        raise


def _maybe_dead(conn: Any) -> bool:
    if conn.closed or conn.broken or conn.info.transaction_status != TransactionStatus.IDLE:
        return True
    try:
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN | select.POLLPRI)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


class DatabaseSchemaEditor(schema.DatabaseSchemaEditor):
    def __enter__(self) -> DatabaseSchemaEditor:
        editor = super().__enter__()
        with self.connection.cursor() as cursor:
            cursor.execute("SET statement_timeout = 0")
        return editor

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        with self.connection.cursor() as cursor:
            cursor.execute("RESET statement_timeout")  # back to the session's startup value


class HotCursor(base.ServerBindingCursor):  # type: ignore[misc,name-defined]
    """A cursor binding parameters on the server, preparing each statement once (optional).

    For the few hand-written statements every purchase runs (cashback.lifecycle, the key
    lookup): sending parameters apart from the statement skips quoting them into its text,
    and a prepared statement skips PostgreSQL's parsing and planning. `prepare` is
    DATABASE_PREPARE: off, each statement is an unnamed one, which any PgBouncer passes.
    """

    prepare: bool | None = None

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        kwargs.setdefault("prepare", self.prepare)
        if params and any(type(p) in _SIZED_INTS for p in params):
            # Django hands integer fields' values over as psycopg's Int2/Int4/Int8, whose
            # binary form keeps only the low bits of a number too large: bound on the server,
            # 2**32 + 1234 would arrive as 1234. As a plain int it is sent in a type wide
            # enough, and PostgreSQL refuses it for a column too narrow, as it does for
            # Django's own cursor.
            params = [int(p) if type(p) in _SIZED_INTS else p for p in params]
        return super().execute(query, params, **kwargs)


_SIZED_INTS = frozenset({numeric.Int2, numeric.Int4, numeric.Int8})
# Django's PostgreSQL backend module, for names its stubs do not declare.
_PG: Any = base


class DatabaseOperations(operations.DatabaseOperations):
    def last_executed_query(  # type: ignore[override]
        self, cursor: Any, sql: Any, params: Any
    ) -> str | None:
        # Logged and captured (DEBUG, tests) with its parameters, as every other statement,
        # not with the $1 placeholders a server-bound statement was sent with.
        if isinstance(cursor, HotCursor):
            try:
                return str(self.compose_sql(sql, params))
            except _PG.Database.errors.DataError:
                return None
        return super().last_executed_query(cursor, sql, params)  # type: ignore[no-any-return]


class DatabaseWrapper(base.DatabaseWrapper):
    SchemaEditorClass = DatabaseSchemaEditor
    ops_class = DatabaseOperations

    def hot_cursor(self) -> CursorWrapper:
        """Return a cursor for the hot statements (`HotCursor`), wrapped like any other.

        The same as `cursor()`, so Django's error wrapping, query logging and counting
        apply, but server-side binding: the statement must say what every parameter is,
        which a parameter in a plain `SELECT` list does not (cast it).
        """
        self.close_if_health_check_failed()
        self.ensure_connection()
        with self.wrap_database_errors:
            cursor = HotCursor(self.connection)
            cursor.prepare = True if self.settings_dict.get("PREPARE_HOT", False) else None
            # As Django's create_cursor: the session's time zone for timestamptz results.
            tzloader = self.connection.adapters.get_loader(_PG.TIMESTAMPTZ_OID, _PG.Format.TEXT)
            if self.timezone != tzloader.timezone:
                _PG.register_tzloader(self.timezone, cursor)
            return cast(Any, self)._prepare_cursor(cursor)  # type: ignore[no-any-return]

    def get_connection_params(self) -> dict[str, Any]:
        params: dict[str, Any] = super().get_connection_params()
        timeouts = self.settings_dict.get("SESSION_TIMEOUTS") or {}
        if self.alias == NO_DB_ALIAS:
            return params  # CREATE/DROP DATABASE may take long on a loaded host
        options = [params.get("options", "")]
        options += [f"-c {name}={round(s * 1000)}" for name, s in timeouts.items() if s > 0]
        if any(options):
            params["options"] = " ".join(o for o in options if o)
        return params

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
