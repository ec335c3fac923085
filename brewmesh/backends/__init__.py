"""Storage and event backends: the only modules that import a driver.

Each is chosen by configuration (a URL) and imported only when chosen.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from brewmesh.storage import Store

DB_FILE = "brewmesh.db"
STORE_SCHEMES = ("postgresql", "postgres")


def open_store(url: str | None, data_dir: Path | None) -> Store:
    """The store at `url` (`postgresql://...`), else the SQLite file in `data_dir`."""
    if url:
        from brewmesh.backends.postgres_store import PostgresBackend

        return Store(PostgresBackend(url), without_password(url))
    if data_dir is None:
        raise ValueError("a store needs a URL or a data directory")
    from brewmesh.backends.sqlite_store import SqliteBackend

    path = data_dir / DB_FILE
    return Store(SqliteBackend(path), str(path))


def without_password(url: str) -> str:
    """`url` safe to print: its password masked."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
