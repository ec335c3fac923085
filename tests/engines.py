"""Real PostgreSQL and Redis servers for the tests, started and stopped by the tests themselves.

Each server listens only on 127.0.0.1 on a free port, keeps its data in a temporary
directory and is stopped (and the directory removed) on exit, so no test depends on a
system service and none leaves a process behind. An atexit hook stops whatever is still
running if the session is interrupted before its fixtures are torn down.

conftest.py registers the fixtures with
`from tests.engines import postgres, redis_server, pg_database, fresh_redis_url  # noqa: F401`.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
import redis
from psycopg import sql

HOST = "127.0.0.1"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
PORT_ATTEMPTS = 3
"""Times a start is retried on another port when the free port was taken meanwhile."""

_running: dict[int, Callable[[], None]] = {}
"""Emergency stops of the servers still running, by id; the atexit hook calls them."""


def _stop_leftovers() -> None:
    """Kill servers whose context manager never exited (interrupted session)."""
    for stop in list(_running.values()):
        with contextlib.suppress(Exception):
            stop()
    _running.clear()


atexit.register(_stop_leftovers)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _version_key(path: Path) -> tuple[int, ...]:
    """`/usr/lib/postgresql/15/bin` -> (15,), so 15 sorts above 9.6."""
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name)) or (0,)


@dataclass(frozen=True)
class PostgresBinaries:
    initdb: Path
    pg_ctl: Path
    postgres: Path


def find_postgres() -> PostgresBinaries:
    """The newest Debian-packaged PostgreSQL (not on PATH there), else the one on PATH."""
    names = ("initdb", "pg_ctl", "postgres")
    bindirs = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    for bindir in bindirs:
        if all((bindir / name).is_file() for name in names):
            return PostgresBinaries(*(bindir / name for name in names))
    found = [shutil.which(name) for name in names]
    if all(found):
        return PostgresBinaries(*(Path(path) for path in found if path))
    raise RuntimeError(
        "PostgreSQL not found (initdb, pg_ctl, postgres in /usr/lib/postgresql/*/bin or on PATH): "
        "install it, e.g. `apt-get install postgresql` (.ci/run does)"
    )


def find_redis() -> Path:
    path = shutil.which("redis-server")
    if path is None:
        raise RuntimeError("redis-server not found on PATH: install it, e.g. `apt-get install redis-server`")
    return Path(path)


def _child_env() -> dict[str, str]:
    """Our environment without PG* variables, which would override what we pass explicitly."""
    return {key: value for key, value in os.environ.items() if not key.startswith("PG")}


@dataclass(frozen=True)
class _User:
    """The unprivileged account PostgreSQL runs as when we are root (it refuses root)."""

    name: str
    uid: int
    gid: int

    @classmethod
    def unprivileged(cls) -> _User:
        """`postgres` (created by the Debian package) if it exists, else `nobody`."""
        for name in ("postgres", "nobody"):
            with contextlib.suppress(KeyError):
                entry = pwd.getpwnam(name)
                return cls(name, entry.pw_uid, entry.pw_gid)
        raise RuntimeError("running as root, but neither a `postgres` nor a `nobody` user exists")

    def command(self, cmd: list[str]) -> list[str]:
        """`cmd` run as this user (runuser, or setpriv where runuser is missing)."""
        if runuser := shutil.which("runuser"):
            return [runuser, "-u", self.name, "--", *cmd]
        if setpriv := shutil.which("setpriv"):
            return [setpriv, f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--", *cmd]
        raise RuntimeError("running as root, but neither runuser nor setpriv is available to drop privileges")

    def chown(self, path: Path) -> None:
        os.chown(path, self.uid, self.gid)

    def make_reachable(self, path: Path) -> None:
        """Let this user traverse every ancestor of `path` (add o+x where it cannot).

        Only the search bit is added, never read: directory listings stay private. The
        change is not undone, because a concurrent session may rely on it; pytest re-tightens
        its own `pytest-of-<user>` directory at the start of the next session anyway.
        """
        groups = set(os.getgrouplist(self.name, self.gid))
        for ancestor in reversed(path.parents):
            info = ancestor.stat()
            if info.st_uid == self.uid:
                needed = stat.S_IXUSR
            elif info.st_gid in groups:
                needed = stat.S_IXGRP
            else:
                needed = stat.S_IXOTH
            if not info.st_mode & needed:
                ancestor.chmod(stat.S_IMODE(info.st_mode) | stat.S_IXOTH)


def _run(cmd: list[str], what: str, cwd: Path, log: Path | None = None, timeout: float = 120) -> None:
    """Run `cmd`; on failure raise with its output and the server log, which say why."""
    result = subprocess.run(
        cmd, capture_output=True, text=True, cwd=cwd, env=_child_env(), timeout=timeout, check=False
    )
    if result.returncode != 0:
        server_log = log.read_text(errors="replace") if log is not None and log.exists() else ""
        raise RuntimeError(
            f"{what} failed with exit code {result.returncode}: {' '.join(cmd)}\n"
            f"--- output ---\n{result.stdout}{result.stderr}\n--- server log ---\n{server_log}"
        )


@dataclass(frozen=True)
class PostgresServer:
    """A running PostgreSQL; `user` is a superuser that authenticates with `password` (SCRAM)."""

    host: str
    port: int
    user: str
    password: str
    data_dir: Path

    def url(self, database: str) -> str:
        user, password, database = (quote(part, safe="") for part in (self.user, self.password, database))
        return f"postgresql://{user}:{password}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create the (new, empty) database `name`; its URL."""
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop `name` if it exists, even with connections a test left open (WITH (FORCE))."""
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def postmaster_pid(self) -> int:
        """The server's (postmaster's) process id, from `postmaster.pid`."""
        return int((self.data_dir / "postmaster.pid").read_text().split()[0])


_POSTGRES_SETTINGS = """
# brewmesh tests: reachable only from here, and fast rather than durable.
listen_addresses = '127.0.0.1'
unix_socket_directories = '{socket_dir}'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
"""


class _Cluster:
    """One temporary cluster's files and the commands that run it, as `user` when we are root."""

    def __init__(self, base: Path) -> None:
        self.binaries = find_postgres()
        self.user = _User.unprivileged() if os.geteuid() == 0 else None
        self.root = Path(tempfile.mkdtemp(prefix="postgres-", dir=base))
        self.data_dir = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.log = self.root / "server.log"

    def command(self, cmd: list[str | Path]) -> list[str]:
        words = [str(word) for word in cmd]
        return self.user.command(words) if self.user else words

    def init(self, superuser: str, password: str) -> None:
        """initdb with a SCRAM-password superuser, then our settings appended to postgresql.conf."""
        self.socket_dir.mkdir()
        pwfile = self.root / "pwfile"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        if self.user:
            for path in (self.root, self.socket_dir, pwfile):
                self.user.chown(path)
            self.user.make_reachable(self.root)
        initdb: list[str | Path] = [self.binaries.initdb, "--pgdata", self.data_dir, "--username", superuser]
        initdb += ["--pwfile", pwfile, "--auth", "scram-sha-256"]
        initdb += ["--encoding", "UTF8", "--no-locale", "--no-sync"]
        _run(self.command(initdb), "initdb", cwd=self.root)
        pwfile.unlink()
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(_POSTGRES_SETTINGS.format(socket_dir=self.socket_dir))

    def start(self) -> int:
        """pg_ctl start on a free port, waiting (-w) until it answers; the port."""
        for attempt in range(PORT_ATTEMPTS):
            port = _free_port()
            start: list[str | Path] = [self.binaries.pg_ctl, "start", "-D", self.data_dir, "-l", self.log]
            start += ["-o", f"-p {port}", "-w", "-t", str(int(START_TIMEOUT))]
            try:
                _run(
                    self.command(start),
                    "pg_ctl start",
                    cwd=self.root,
                    log=self.log,
                    timeout=START_TIMEOUT + 5,
                )
                return port
            except RuntimeError as error:
                if "Address already in use" not in str(error) or attempt == PORT_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Stop the server if it runs: immediate mode, its data is thrown away anyway."""
        if (self.data_dir / "postmaster.pid").exists():
            stop: list[str | Path] = [self.binaries.pg_ctl, "stop", "-D", self.data_dir, "-m", "immediate"]
            stop += ["-w", "-t", str(int(STOP_TIMEOUT))]
            subprocess.run(
                self.command(stop),
                capture_output=True,
                cwd=self.root,
                env=_child_env(),
                timeout=STOP_TIMEOUT + 5,
                check=False,
            )

    def kill_and_remove(self) -> None:
        """Also for atexit: SIGQUIT (PostgreSQL's immediate shutdown) and remove the files.

        The pid is checked to be a postgres process first: a crashed server leaves a stale
        postmaster.pid whose number may since belong to another process.
        """
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
            if b"postgres" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGQUIT)
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def start_postgres(base: Path) -> Iterator[PostgresServer]:
    """A fresh PostgreSQL cluster in a temporary directory under `base`, removed on exit.

    As root it runs as an unprivileged user (see `_User`), since PostgreSQL refuses root.
    """
    cluster = _Cluster(base)
    _running[id(cluster)] = cluster.kill_and_remove
    try:
        password = secrets.token_hex(16)
        cluster.init("brewmesh", password)
        server = PostgresServer(HOST, cluster.start(), "brewmesh", password, cluster.data_dir)
        _wait_for_postgres(server, cluster.log)
        yield server
    finally:
        try:
            cluster.stop()
        finally:
            cluster.kill_and_remove()  # after a clean stop: only removes the directory
            _running.pop(id(cluster), None)


def _wait_for_postgres(server: PostgresServer, log: Path) -> None:
    """Poll until a password login over TCP works (pg_ctl -w checks only that it answers)."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            with psycopg.connect(server.url("postgres"), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
                return
        except psycopg.OperationalError as error:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"PostgreSQL on {server.host}:{server.port} refuses logins: {error}\n"
                    f"--- server log ---\n{log.read_text(errors='replace')}"
                ) from error
        time.sleep(0.05)


@dataclass(frozen=True)
class RedisServer:
    """A running Redis; its `default` user (all permissions) authenticates with `password`."""

    host: str
    port: int
    password: str
    data_dir: Path

    def url(self, db: int = 0, user: str | None = None, password: str | None = None) -> str:
        """`redis://[user:password@]host:port/db`: no credentials unless given.

        `url(password=server.password)` logs in as the default user; pass `user` too for
        an ACL user.
        """
        if password is not None:
            auth = f"{quote(user or '', safe='')}:{quote(password, safe='')}@"
        elif user is not None:
            auth = f"{quote(user, safe='')}@"
        else:
            auth = ""
        return f"redis://{auth}{self.host}:{self.port}/{db}"

    def client(self) -> redis.Redis:
        """A client logged in as the default user, database 0."""
        return redis.Redis.from_url(self.url(password=self.password))


_REDIS_CONFIG = """\
bind 127.0.0.1
port {port}
protected-mode yes
daemonize no
dir {dir}
save ""
appendonly no
logfile ""
requirepass {password}
"""


@contextlib.contextmanager
def start_redis(base: Path, port: int | None = None, password: str | None = None) -> Iterator[RedisServer]:
    """A fresh Redis (child process, nothing persisted) in a temporary directory under `base`;
    on `port` and with `password` if given (a client may be told where it will be)."""
    executable = find_redis()
    root = Path(tempfile.mkdtemp(prefix="redis-", dir=base))
    password = password or secrets.token_hex(16)
    processes: list[subprocess.Popen[bytes]] = []

    def kill() -> None:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT)
        shutil.rmtree(root, ignore_errors=True)

    _running[id(kill)] = kill
    try:
        attempts = 1 if port else PORT_ATTEMPTS
        for attempt in range(attempts):
            chosen = port or _free_port()
            config, log = root / "redis.conf", root / f"redis-{chosen}.log"
            config.write_text(_REDIS_CONFIG.format(port=chosen, dir=root, password=password))
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [str(executable), str(config)], stdout=out, stderr=subprocess.STDOUT, cwd=root
                )
            processes.append(process)
            server = RedisServer(HOST, chosen, password, root)
            if _wait_for_redis(server, process, log, last_attempt=attempt == attempts - 1):
                break
        yield server
        with contextlib.suppress(redis.RedisError), server.client() as client:
            client.shutdown(nosave=True)  # no snapshot: the data is thrown away
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_TIMEOUT)
    finally:
        kill()
        _running.pop(id(kill), None)


def _wait_for_redis(
    server: RedisServer, process: subprocess.Popen[bytes], log: Path, last_attempt: bool
) -> bool:
    """Poll until PING answers; False if the port was taken meanwhile (and another try is left)."""
    deadline = time.monotonic() + START_TIMEOUT
    client = server.client()
    try:
        while True:
            if process.poll() is not None:
                output = log.read_text(errors="replace")
                if "Address already in use" in output and not last_attempt:
                    return False
                raise RuntimeError(f"redis-server exited with {process.returncode}:\n{output}")
            with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError):
                if client.ping():
                    return True
            if time.monotonic() > deadline:
                output = log.read_text(errors="replace")
                raise RuntimeError(f"redis-server did not answer PING in {START_TIMEOUT} s:\n{output}")
            time.sleep(0.05)
    finally:
        client.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL for the whole session: starting one takes seconds.

    Its files are in the system's temporary directory, not pytest's: the server runs
    as another user, who must be able to reach them, and every pytest session takes
    that right away from its `pytest-of-<user>` directory as it starts. A second
    session beside this one (a developer's, while CI runs) would stop this server.
    """
    with start_postgres(Path(tempfile.gettempdir())) as server:
        yield server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One Redis for the whole session; `fresh_redis_url` empties it for each test."""
    with start_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def pg_database(postgres: PostgresServer) -> Iterator[str]:
    """The URL of a new, empty database for this test only; dropped afterwards."""
    name = f"test_{secrets.token_hex(6)}"
    url = postgres.create_database(name)
    yield url
    postgres.drop_database(name)


@pytest.fixture
def fresh_redis_url(redis_server: RedisServer) -> str:
    """The default user's URL to a Redis emptied for this test.

    Tests share the session's Redis and run one after another, so emptying it before each
    test is enough: every key (FLUSHALL), function and script, and every ACL user except
    `default`, whose password and permissions stay as the server started.
    """
    client = redis_server.client()
    try:
        client.flushall()
        client.function_flush()
        client.script_flush()
        users = [name.decode() if isinstance(name, bytes) else str(name) for name in client.acl_users()]
        extra = [name for name in users if name != "default"]
        if extra:
            client.acl_deluser(*extra)
    finally:
        client.close()
    return redis_server.url(password=redis_server.password)
