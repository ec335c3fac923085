"""The test PostgreSQL and Redis are real servers, configured as later tests rely on."""

# ruff: noqa: F811  (pytest fixtures are imported, then named again as the tests' parameters)

from __future__ import annotations

import socket
from pathlib import Path

import psycopg
import pytest
import redis

from tests.engines import (
    PostgresServer,
    RedisServer,
    fresh_redis_url,  # noqa: F401
    pg_database,  # noqa: F401
    postgres,  # noqa: F401
    redis_server,  # noqa: F401
    start_redis,
)


def test_postgres_accepts_a_password_login_on_localhost_only(postgres: PostgresServer) -> None:
    assert postgres.host == "127.0.0.1"
    with psycopg.connect(postgres.url("postgres")) as conn:
        row = conn.execute("SELECT inet_server_addr()::text, current_user").fetchone()
    assert row == ("127.0.0.1/32", "brewmesh")

    wrong = PostgresServer(postgres.host, postgres.port, postgres.user, "wrong", postgres.data_dir)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong.url("postgres"))


def test_databases_from_create_database_are_independent(postgres: PostgresServer) -> None:
    first, second = postgres.create_database("engines_first"), postgres.create_database("engines_second")
    try:
        with psycopg.connect(first, autocommit=True) as conn:
            conn.execute("CREATE TABLE beans (name text)")
            conn.execute("INSERT INTO beans VALUES ('arabica')")
        with psycopg.connect(second) as conn:
            assert conn.execute("SELECT to_regclass('beans')").fetchone() == (None,)
        with psycopg.connect(first) as conn:
            assert conn.execute("SELECT name FROM beans").fetchall() == [("arabica",)]
    finally:
        postgres.drop_database("engines_first")
        postgres.drop_database("engines_second")
    with psycopg.connect(postgres.url("postgres")) as conn:
        names = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'engines_%'").fetchall()
    assert names == []


def test_pg_database_is_a_fresh_empty_database(pg_database: str) -> None:
    with psycopg.connect(pg_database) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
        settings = conn.execute("SHOW max_connections").fetchone()
    assert tables == (0,)
    assert settings == ("300",)


def _uids(pid: int) -> list[int]:
    """Real, effective, saved and filesystem uids of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return [int(uid) for uid in line.split()[1:]]
    raise AssertionError(f"no Uid line for process {pid}")


def test_postgres_does_not_run_as_root(postgres: PostgresServer) -> None:
    with psycopg.connect(postgres.url("postgres")) as conn:  # the backend lives while connected
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        for pid in (postgres.postmaster_pid(), row[0]):
            assert 0 not in _uids(pid), f"process {pid} runs as root"


def test_redis_needs_the_password(redis_server: RedisServer, fresh_redis_url: str) -> None:
    with redis.Redis.from_url(fresh_redis_url) as client:
        assert client.ping() is True
    with redis.Redis.from_url(redis_server.url()) as anonymous, pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    with (
        redis.Redis.from_url(redis_server.url(password="wrong")) as wrong,
        pytest.raises(redis.AuthenticationError),
    ):
        wrong.ping()


def test_redis_7_acl_selectors(redis_server: RedisServer, fresh_redis_url: str) -> None:
    with redis.Redis.from_url(fresh_redis_url) as admin:
        version = str(admin.info("server")["redis_version"])
        assert version.startswith("7."), version
        admin.execute_command("ACL", "SETUSER", "machine", "on", ">secret", "resetkeys", "(~x:* +xadd)")
    with redis.Redis.from_url(redis_server.url(user="machine", password="secret")) as machine:
        assert machine.xadd("x:events", {"kind": "brewed"})
        with pytest.raises(redis.exceptions.NoPermissionError):
            machine.xadd("y:events", {"kind": "brewed"})
        with pytest.raises(redis.exceptions.NoPermissionError):
            machine.xrange("x:events")


def test_fresh_redis_url_starts_empty(redis_server: RedisServer, fresh_redis_url: str) -> None:
    """Runs after the ACL test: its user and keys are gone."""
    with redis.Redis.from_url(fresh_redis_url) as client:
        assert client.dbsize() == 0
        assert client.acl_users() == ["default"]


def test_start_redis_stops_the_server_and_removes_its_directory(tmp_path: Path) -> None:
    with start_redis(tmp_path) as server, redis.Redis.from_url(server.url(password=server.password)) as c:
        assert c.ping() is True
    assert not server.data_dir.exists()
    # A raw connect: redis-py would retry a refused connection for seconds first.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((server.host, server.port), timeout=1).close()
