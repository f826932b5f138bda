"""open_engine: SQLite settings for many writers, PostgreSQL URIs, and failures that name the store."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from gateway.errors import DependencyError
from gateway.store.engine import SQLITE_BUSY_TIMEOUT_MS, begin_write, open_engine


def test_sqlite_creates_its_directory_and_sets_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "store.db"
    engine = open_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == SQLITE_BUSY_TIMEOUT_MS
        assert path.exists()
    finally:
        engine.dispose()


def test_sqlite_write_transaction_holds_the_write_lock_from_begin(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/store.db"
    engine, other = open_engine(url), sa.create_engine(url, connect_args={"timeout": 0})
    try:
        # Nothing written yet, but a second writer is already locked out.
        locked = pytest.raises(sa.exc.OperationalError, match="locked")
        with begin_write(engine), other.connect() as conn, locked:
            conn.exec_driver_sql("CREATE TABLE t (id INTEGER)")
    finally:
        engine.dispose()
        other.dispose()


def test_plain_postgresql_uri_uses_psycopg(postgres_url: str) -> None:
    engine = open_engine(postgres_url.replace("postgresql+psycopg://", "postgresql://"))
    try:
        assert engine.dialect.driver == "psycopg"
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


def test_unreachable_postgresql_names_the_store_without_the_password() -> None:
    # Port 1 on loopback: nothing listens, so the connection is refused at once.
    expected = r"Cannot connect to the store at postgresql\+psycopg://"
    with pytest.raises(DependencyError, match=expected) as info:
        open_engine("postgresql://gateway:s3cret-pw@127.0.0.1:1/registry")
    assert "127.0.0.1:1/registry" in info.value.message
    assert "s3cret-pw" not in info.value.message
    assert info.value.status == 503


def test_unsupported_uri_is_refused() -> None:
    with pytest.raises(DependencyError, match="Unsupported store URI mysql://"):
        open_engine("mysql://u@host/db")


def test_postgresql_without_the_driver_names_the_extra_to_install() -> None:
    """psycopg comes with the ``postgres`` extra: without it, the error says what to install (a fresh
    interpreter in which importing psycopg fails, as on a machine without the extra)."""
    import subprocess
    import sys

    code = (
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('psycopg', 'psycopg2'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, Block())\n"
        "from gateway.errors import DependencyError\n"
        "from gateway.store.engine import open_engine\n"
        "try:\n"
        "    open_engine('postgresql://gateway:pw@127.0.0.1:1/registry')\n"
        "except DependencyError as exc:\n"
        "    print(exc.message)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == (
        "The store postgresql+psycopg://gateway:***@127.0.0.1:1/registry needs the psycopg driver: "
        "pip install 'gateway[postgres]'."
    )
