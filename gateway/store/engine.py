"""Open the store's SQLAlchemy engine: SQLite (embedded default) or PostgreSQL (shared by many replicas).

Every write goes through :func:`begin_write`, every multi-statement read that must be consistent
through :func:`begin_read`, so the dialect differences stay in this module.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url

from gateway.errors import DependencyError

DEFAULT_STORE_URI = "sqlite:///./.gateway/store.db"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Execution option read by the SQLite "begin" hook: which kind of BEGIN to emit.
_BEGIN_OPTION = "gateway_sqlite_begin"


def open_engine(uri: str = DEFAULT_STORE_URI) -> Engine:
    """Create the engine for ``uri`` and check that the store answers.

    ``postgresql://`` is read as ``postgresql+psycopg://``. A store that cannot be reached raises
    :class:`DependencyError` naming it (password hidden).
    """
    try:
        url = make_url(uri)
    except sa.exc.ArgumentError as exc:
        raise DependencyError(f"Invalid store URI {uri!r}: {exc}") from None
    if url.get_backend_name() == "sqlite":
        engine = _open_sqlite(url)
    elif url.get_backend_name() == "postgresql":
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        try:
            engine = sa.create_engine(url, pool_pre_ping=True)
        except ModuleNotFoundError as exc:
            raise DependencyError(
                f"The store {_display(url)} needs the {exc.name} driver: pip install 'gateway[postgres]'."
            ) from None
    else:
        raise DependencyError(f"Unsupported store URI {_display(url)}: use sqlite:///PATH or postgresql+psycopg://...")
    try:
        with engine.connect():
            pass
    except sa.exc.DBAPIError as exc:
        engine.dispose()
        raise DependencyError(f"Cannot connect to the store at {_display(url)}: {_reason(exc, url)}") from exc
    return engine


def begin_write(engine: Engine) -> contextlib.AbstractContextManager[Connection]:
    """A write transaction. On SQLite it takes the database write lock at BEGIN (``BEGIN IMMEDIATE``):
    a deferred transaction that reads and then writes fails with SQLITE_BUSY instead of waiting."""
    return engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"}).begin()


@contextlib.contextmanager
def begin_read(engine: Engine) -> Iterator[Connection]:
    """A read-only transaction whose statements all see one snapshot of the database."""
    if engine.dialect.name == "postgresql":
        # READ COMMITTED takes a new snapshot per statement; REPEATABLE READ keeps the first one.
        engine = engine.execution_options(isolation_level="REPEATABLE READ")
    with engine.begin() as conn:
        yield conn


def _open_sqlite(url: URL) -> Engine:
    database = url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        try:
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DependencyError(f"Cannot create the directory of the store {_display(url)}: {exc}") from exc
    engine = sa.create_engine(url)

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from pysqlite (it defers it to the first DML statement, too late to hold
        # the write lock for a read-then-write); the "begin" hook below emits it instead.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first: switching to WAL needs a lock that another process may hold.
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            _enable_wal(cursor)
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def _enable_wal(cursor: Any) -> None:
    """``PRAGMA journal_mode = WAL``, retried: converting a fresh database takes an exclusive lock, and
    SQLite answers "database is locked" at once, without waiting for busy_timeout, when another
    connection (several workers or replicas starting together) holds the file at that moment."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


def _display(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def _reason(exc: sa.exc.DBAPIError, url: URL) -> str:
    reason = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
    if url.password:
        # Drivers do not normally echo the password, but a DSN in a message would.
        reason = reason.replace(str(url.password), "***")
    return reason
