"""TLS and mutual TLS: clients, the mesh's own services, and machines that serve only the mesh's runner.

Certificates are made for each test (tests/certificates.py): a CA, the mesh's
certificate for localhost and 127.0.0.1, a client's, and a stranger's from
another CA.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from brewmesh.client import MeshClient, connect
from brewmesh.machines import REFERENCE_MACHINES
from brewmesh.mesh import Mesh
from brewmesh.partners.v1 import partners_pb2
from brewmesh.runner.v1 import program_runner_pb2 as run_pb
from brewmesh.sdk import Machine
from brewmesh.settings import Settings
from brewmesh.startup import Setting, StartError
from brewmesh.tls import Tls
from tests.certificates import Issued, Pki
from tests.conftest import BIN, DistributedBackends, free_port, launch, wait_for_serving
from tests.fleet import create_recipe, names, read_to_end, run_request

NS = "my-coffee-company"
ADMIN_KEY = "test-admin-key"
TOKEN = "runner-only-3f9a1c7e5b2d4068"
CALL_SECONDS = 10


@dataclass(frozen=True)
class Certificates:
    """A CA, certificates it issued (mesh, machine, client), and a stranger from another CA."""

    pki: Pki
    mesh: Issued
    machine: Issued
    client: Issued
    stranger: Issued

    @property
    def ca(self) -> Path:
        return self.pki.ca

    def tls(self, issued: Issued, mutual: bool = True) -> Tls:
        return Tls.load(issued.cert, issued.key, self.ca if mutual else None)

    def settings(self, data_dir: Path, issued: Issued, mutual: bool = True) -> Settings:
        """A mesh's settings serving TLS with `issued` (and mutual TLS with the CA)."""
        return Settings(
            data_dir=data_dir, tls_cert=issued.cert, tls_key=issued.key, tls_ca=self.ca if mutual else None
        )

    def client_credentials(self, issued: Issued | None = None) -> grpc.ChannelCredentials:
        """Trusting the CA; presenting `issued` as the client certificate, if given."""
        if issued is None:
            return grpc.ssl_channel_credentials(self.ca.read_bytes())
        return grpc.ssl_channel_credentials(
            self.ca.read_bytes(), issued.key.read_bytes(), issued.cert.read_bytes()
        )


@pytest.fixture
def certs(tmp_path: Path) -> Certificates:
    pki = Pki.create(tmp_path / "pki")
    stranger = Pki.create(tmp_path / "stranger", "stranger CA").issue("stranger")
    return Certificates(pki, pki.issue("mesh"), pki.issue("machine"), pki.issue("client"), stranger)


@asynccontextmanager
async def started_mesh(settings: Settings) -> AsyncIterator[Mesh]:
    mesh = await Mesh.start(settings)
    try:
        yield mesh
    finally:
        await mesh.stop(grace=0)


@asynccontextmanager
async def started_machine(tls: Tls, caller_token: str | None = None) -> AsyncIterator[Machine]:
    machine = REFERENCE_MACHINES["cafe"].build(0.0, caller_token)
    await machine.start("127.0.0.1:0", tls)
    try:
        yield machine
    finally:
        await machine.stop(grace=0)


async def partner_with_machine(
    address: str, credentials: grpc.ChannelCredentials, admin_key: str, endpoint: str, token: str = ""
) -> str:
    """A partner with a cafe machine (TLS) at `endpoint`, declared over `credentials`; its API key."""
    async with connect(address, admin_key, credentials=credentials) as admin:
        created = await admin.partners.CreatePartner(
            partners_pb2.CreatePartnerRequest(namespace=NS, partner=partners_pb2.Partner(display_name=NS))
        )
    machine = partners_pb2.CoffeeMachine(
        name=f"partners/{NS}/coffeeMachines/cafe-1",
        api_type="cafe",
        program_api=partners_pb2.ProgramApi(endpoint=endpoint, tls=True, caller_token=token),
    )
    async with connect(address, created.api_key, credentials=credentials) as partner:
        await partner.partners.PutCoffeeMachines(
            partners_pb2.PutCoffeeMachinesRequest(parent=f"partners/{NS}", coffee_machines=[machine])
        )
    return str(created.api_key)


async def run_to_end(client: MeshClient, run_id: str, recipe: str) -> run_pb.ProgramRun:
    machine = f"partners/{NS}/coffeeMachines/cafe-1"
    run = await client.runner.Run(run_request(run_id, machine, recipe), timeout=CALL_SECONDS)
    events = await read_to_end(client.runner.Watch(run_pb.WatchRequest(run=run.name)))
    assert names(events)[-1] in ("finished", "failed"), names(events)
    return await client.runner.GetRun(run_pb.GetRunRequest(name=run.name))


async def health(address: str, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    """The code a health check gets from `address` (plaintext when `credentials` is None)."""
    channel = (
        grpc.aio.secure_channel(address, credentials) if credentials else grpc.aio.insecure_channel(address)
    )
    async with channel:
        try:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


async def test_a_plaintext_client_of_a_tls_mesh_fails_with_unavailable(
    tmp_path: Path, certs: Certificates
) -> None:
    async with started_mesh(certs.settings(tmp_path / "data", certs.mesh, mutual=False)) as mesh:
        address = f"127.0.0.1:{mesh.port}"
        assert await health(address, None) == grpc.StatusCode.UNAVAILABLE
        assert await health(address, certs.client_credentials()) == grpc.StatusCode.OK


async def test_a_mutual_tls_mesh_serves_only_clients_with_a_certificate_of_its_ca(
    tmp_path: Path, certs: Certificates
) -> None:
    async with started_mesh(certs.settings(tmp_path / "data", certs.mesh)) as mesh:
        address = f"127.0.0.1:{mesh.port}"
        assert await health(address, certs.client_credentials()) == grpc.StatusCode.UNAVAILABLE
        assert await health(address, certs.client_credentials(certs.stranger)) == grpc.StatusCode.UNAVAILABLE
        async with connect(
            address, mesh.admin_key, credentials=certs.client_credentials(certs.client)
        ) as admin:
            listed = await admin.partners.ListPartners(partners_pb2.ListPartnersRequest())
        assert list(listed.partners) == []


async def test_a_run_on_a_mutual_tls_mesh_reaches_a_machine_that_takes_only_mesh_certificates(
    tmp_path: Path, certs: Certificates
) -> None:
    async with (
        started_mesh(certs.settings(tmp_path / "data", certs.mesh)) as mesh,
        started_machine(certs.tls(certs.machine)) as machine,
    ):
        address, credentials = f"127.0.0.1:{mesh.port}", certs.client_credentials(certs.client)
        endpoint = f"localhost:{machine.port}"
        key = await partner_with_machine(address, credentials, mesh.admin_key, endpoint)
        async with connect(address, key, credentials=credentials) as partner:
            done = await run_to_end(partner, "mtls-1", await create_recipe(partner, NS, "lungo"))
        assert done.state == run_pb.ProgramRun.STATE_FINISHED, done.failure_reason
        assert await health(endpoint, certs.client_credentials()) == grpc.StatusCode.UNAVAILABLE
        assert await health(endpoint, certs.client_credentials(certs.stranger)) == grpc.StatusCode.UNAVAILABLE


async def test_a_machine_with_a_caller_token_serves_the_runner_and_refuses_everyone_else(
    tmp_path: Path, certs: Certificates
) -> None:
    async with (
        started_mesh(certs.settings(tmp_path / "data", certs.mesh)) as mesh,
        started_machine(certs.tls(certs.machine, mutual=False), caller_token=TOKEN) as machine,
    ):
        address, credentials = f"127.0.0.1:{mesh.port}", certs.client_credentials(certs.client)
        endpoint = f"localhost:{machine.port}"
        key = await partner_with_machine(address, credentials, mesh.admin_key, endpoint, TOKEN)
        async with connect(address, key, credentials=credentials) as partner:
            recipe = await create_recipe(partner, NS, "lungo")
            done = await run_to_end(partner, "token-1", recipe)
        assert done.state == run_pb.ProgramRun.STATE_FINISHED, done.failure_reason

        direct = run_request("intruder-1", f"partners/{NS}/coffeeMachines/cafe-1", recipe)
        for presented in (None, "a-wrong-token-of-enough-length"):
            async with connect(endpoint, presented, credentials=certs.client_credentials()) as stranger:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stranger.runner.Run(direct, timeout=CALL_SECONDS)
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert "caller token" in (refused.value.details() or "")
                with pytest.raises(grpc.aio.AioRpcError) as watch_refused:
                    await read_to_end(stranger.runner.Watch(run_pb.WatchRequest(run="programRuns/token-1")))
                assert watch_refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert await health(endpoint, certs.client_credentials()) == grpc.StatusCode.OK


async def test_a_mesh_whose_certificate_does_not_name_127_0_0_1_refuses_to_start(
    tmp_path: Path, certs: Certificates
) -> None:
    elsewhere = certs.pki.issue("elsewhere", hosts=("mesh.example.com",))
    with pytest.raises(StartError) as refused:
        await Mesh.start(certs.settings(tmp_path / "data", elsewhere))
    assert refused.value.setting == Setting.TLS_CERT
    assert "IP:127.0.0.1" in refused.value.problem


# -- real processes ------------------------------------------------------------------------


@contextmanager
def serving(
    args: list[str], credentials: grpc.ChannelCredentials, port: int = 0, **env: str
) -> Iterator[int]:
    """`brewmesh ARGS` as a process serving TLS on `port` (0: a free one); stopped on exit."""
    port, process = launch(args, port, **env)
    try:
        wait_for_serving(f"localhost:{port}", process, credentials=credentials)
        yield port
    finally:
        process.terminate()
        process.communicate(timeout=20)


def grpcurl_tls(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "grpcurl"), *args], capture_output=True, text=True, timeout=20, check=False
    )


def test_grpcurl_lists_and_calls_a_tls_mesh_given_its_ca(tmp_path: Path, certs: Certificates) -> None:
    tls_args = ["--tls-cert", str(certs.mesh.cert), "--tls-key", str(certs.mesh.key)]
    up = ["up", "--data-dir", str(tmp_path / "data"), *tls_args]
    with serving(up, certs.client_credentials(), BREWMESH_ADMIN_KEY=ADMIN_KEY) as port:
        target = f"localhost:{port}"
        listed = grpcurl_tls("-cacert", str(certs.ca), target, "list")
        assert listed.returncode == 0, listed.stderr
        assert "brewmesh.runner.v1.ProgramRunner" in listed.stdout.split()
        body = json.dumps({"namespace": NS, "partner": {"displayName": "My Coffee Company"}})
        auth = f"authorization: Bearer {ADMIN_KEY}"
        method = "brewmesh.partners.v1.PartnerService/CreatePartner"
        created = grpcurl_tls("-cacert", str(certs.ca), "-H", auth, "-d", body, target, method)
        assert created.returncode == 0, created.stderr
        assert json.loads(created.stdout)["apiKey"]
        plaintext = grpcurl_tls("-plaintext", target, "list")
        assert plaintext.returncode != 0


def test_the_inspection_commands_reach_a_tls_mesh_given_its_ca(tmp_path: Path, certs: Certificates) -> None:
    tls_args = ["--tls-cert", str(certs.mesh.cert), "--tls-key", str(certs.mesh.key)]
    up = ["up", "--data-dir", str(tmp_path / "data"), *tls_args]
    with serving(up, certs.client_credentials(), BREWMESH_ADMIN_KEY=ADMIN_KEY) as port:

        def brewmesh(*args: str) -> subprocess.CompletedProcess[str]:
            command = [str(BIN / "brewmesh"), *args, "--address", f"localhost:{port}", "--key", ADMIN_KEY]
            return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)

        listed = brewmesh("runs", "list", "--tls-ca", str(certs.ca))
        assert listed.returncode == 0 and listed.stdout.split()[0] == "NAME", listed.stderr
        lag = brewmesh("events", "lag", "--tls-ca", str(certs.ca), "--json")
        assert lag.returncode == 0, lag.stderr
        plaintext = brewmesh("runs", "list")  # a plaintext client to a TLS mesh: refused, in one line
        assert plaintext.returncode == 1 and "UNAVAILABLE" in plaintext.stderr
        assert len(plaintext.stderr.strip().splitlines()) == 1


def test_separate_service_processes_call_each_other_over_mutual_tls(
    tmp_path: Path, certs: Certificates, distributed_backends: DistributedBackends
) -> None:
    tls_args = [
        "--tls-cert",
        str(certs.mesh.cert),
        "--tls-key",
        str(certs.mesh.key),
        "--tls-ca",
        str(certs.ca),
    ]
    engines = distributed_backends.args()
    client = certs.client_credentials(certs.client)
    partners_port = free_port()
    peers = ["--partners", f"localhost:{partners_port}"]

    def service(name: str, *more: str) -> list[str]:
        return ["serve", name, "--data-dir", str(tmp_path / name), *more, *engines, *tls_args]

    with (
        serving(service("partners"), client, partners_port, BREWMESH_ADMIN_KEY=ADMIN_KEY),
        serving(service("recipes", *peers), client) as recipes_port,
        serving(service("runner", *peers, "--recipes", f"localhost:{recipes_port}"), client) as runner_port,
    ):
        asyncio.run(_run_across_processes(certs, partners_port, recipes_port, runner_port))


async def _run_across_processes(certs: Certificates, partners: int, recipes: int, runner: int) -> None:
    client = certs.client_credentials(certs.client)
    async with started_machine(certs.tls(certs.machine)) as machine:
        key = await partner_with_machine(
            f"localhost:{partners}", client, ADMIN_KEY, f"localhost:{machine.port}", TOKEN
        )
        # The recipes process checks the partner's key with the partners process, over mTLS.
        async with connect(f"localhost:{recipes}", key, credentials=client) as catalogue:
            recipe = await create_recipe(catalogue, NS, "lungo-customato")
        # The runner asks both over mTLS, then the machine (which takes only the mesh's certificates).
        async with connect(f"localhost:{runner}", key, credentials=client) as runs:
            done = await run_to_end(runs, "across-1", recipe)
    assert done.state == run_pb.ProgramRun.STATE_FINISHED, done.failure_reason
