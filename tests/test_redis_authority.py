"""Redis itself refuses events from a service that is not authoritative for their API.

The ACL of `brewmesh redis-acl` is applied to the real Redis of the tests, and
every service logs in as its own user. Writing another API's stream or relay
marker, directly or through a script, is refused (NOPERM); listening on any
API, with every command the bus uses for groups, dead letters and replays,
still works; and end to end, a listener on the partners stream sees the
partners process's event but never the one another service tried to forge.
"""

# ruff: noqa: F811  (pytest fixtures are imported, then named again as the tests' parameters)

from __future__ import annotations

import contextlib
import secrets
import shlex
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import redis
import redis.asyncio
from google.protobuf import any_pb2
from redis.exceptions import NoPermissionError, ResponseError

from brewmesh import cli, event_backend
from brewmesh.backends import open_store, redis_acl
from brewmesh.backends.redis_bus import (
    RELAY_SCRIPT,
    RedisEventBackend,
    dead_key,
    relay_frame,
    relayed_key,
    replay_key,
    stream_key,
)
from brewmesh.bus.v1 import events_pb2
from brewmesh.client import connect
from brewmesh.event_backend import EVERYTHING, EventRecord, GroupRef
from brewmesh.mesh import Mesh, all_components
from brewmesh.partners.v1 import partners_pb2
from brewmesh.services.partners.component import component as partners_component
from brewmesh.settings import Settings
from tests.engines import RedisServer, find_redis, fresh_redis_url, redis_server  # noqa: F401

SERVICES = redis_acl.apis_by_service(all_components())
PARTNERS_API = "brewmesh.partners.v1.PartnerService"
RECIPES_API = "brewmesh.recipes.v1.RecipeService"
WAIT_SECONDS = 15.0
T = TypeVar("T")


@pytest.fixture
def passwords(fresh_redis_url: str, redis_server: RedisServer) -> dict[str, str]:
    """The deployment's ACL applied to the (emptied) test Redis; each service's password."""
    chosen = {service: secrets.token_urlsafe(16) for service in SERVICES}
    with redis_server.client() as admin:
        for line in redis_acl.render(SERVICES, chosen).splitlines():
            assert admin.execute_command(*shlex.split(line)) in (b"OK", "OK")
    return chosen


def login(server: RedisServer, passwords: dict[str, str], service: str) -> redis.Redis:
    """A client logged in as the service's user, with the URL the service runs with."""
    address = f"{server.host}:{server.port}"
    return redis.Redis.from_url(redis_acl.bus_url(service, passwords[service], address))


def test_the_deployment_is_built_from_the_components() -> None:
    assert {c.name: list(c.apis) for c in all_components()} == SERVICES
    assert set(SERVICES) == {"partners", "recipes", "runner"}
    assert PARTNERS_API in SERVICES["partners"] and RECIPES_API in SERVICES["recipes"]


def test_each_user_has_brewmesh_keys_no_channels_and_nothing_dangerous(
    passwords: dict[str, str], redis_server: RedisServer
) -> None:
    with redis_server.client() as admin:
        dangerous = {str(name) for name in admin.acl_cat("dangerous")}
        for service in SERVICES:
            user = admin.acl_getuser(redis_acl.username(service))
            assert user["enabled"] and user["channels"] == []
            permission_sets = [(user["commands"], user["keys"])]
            for selector in user["selectors"]:
                fields = dict(zip(selector[::2], selector[1::2], strict=True))
                assert fields["channels"] == ""
                permission_sets.append((fields["commands"].split(), fields["keys"].split()))
            for commands, keys in permission_sets:
                granted = {c[1:] for c in commands if c.startswith("+")}
                assert granted and not granted & dangerous, granted & dangerous
                assert not any(c.startswith("+@") for c in commands)  # no whole categories
                assert keys and all(k.startswith("~brewmesh:") for k in keys), keys
    with login(redis_server, passwords, "recipes") as recipes:
        for refused in (
            recipes.flushall,
            lambda: recipes.keys("*"),
            lambda: recipes.config_get("*"),
            lambda: recipes.get("not-brewmesh"),
            lambda: recipes.xread({"not-brewmesh": "0"}),
            lambda: recipes.publish("channel", "message"),
        ):
            with pytest.raises(NoPermissionError):
                refused()


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_a_service_writes_only_its_own_streams_and_relay_markers(
    service: str, passwords: dict[str, str], redis_server: RedisServer
) -> None:
    foreign = [api for other, apis in SERVICES.items() if other != service for api in apis]
    with login(redis_server, passwords, service) as client, redis_server.client() as admin:
        for api in SERVICES[service]:
            assert client.xadd(stream_key(api), {"type": "genuine"})
            assert client.set(relayed_key(api), "1") and client.get(relayed_key(api)) == b"1"
        for api in foreign:
            with pytest.raises(NoPermissionError):
                client.xadd(stream_key(api), {"type": "forged"})
            with pytest.raises(NoPermissionError):
                client.set(relayed_key(api), "999")
            with pytest.raises(NoPermissionError):
                client.get(relayed_key(api))
            with pytest.raises(NoPermissionError):
                client.xdel(stream_key(api), "0-1")
            with pytest.raises(NoPermissionError):
                client.delete(stream_key(api))
            assert admin.xlen(stream_key(api)) == 0


def test_scripts_run_with_the_callers_acl(passwords: dict[str, str], redis_server: RedisServer) -> None:
    """EVALSHA checks its declared keys; the commands a script runs are checked as well."""
    partners_keys = [stream_key(PARTNERS_API), relayed_key(PARTNERS_API)]
    recipes_keys = [stream_key(RECIPES_API), relayed_key(RECIPES_API)]
    forged = EventRecord(PARTNERS_API, "partner_created", "", b"payload", time.time_ns(), "forger", "")
    event = [1000, relay_frame(1, forged)]  # maxlen, then a batch of one event
    with login(redis_server, passwords, "recipes") as recipes, redis_server.client() as admin:
        relay = recipes.register_script(RELAY_SCRIPT)  # loaded on first use (SCRIPT LOAD)
        assert relay(keys=recipes_keys, args=event) == 1
        with pytest.raises(NoPermissionError):
            relay(keys=partners_keys, args=event)
        # Declaring its own keys and writing another's: the XADD inside is refused.
        smuggle = recipes.register_script(
            f"return redis.call('XADD', '{stream_key(PARTNERS_API)}', '*', 'type', 'partner_created')"
        )
        with pytest.raises(ResponseError, match="can't access"):
            smuggle(keys=recipes_keys)
        with pytest.raises(ResponseError, match="can't access"):
            smuggle(keys=[])
        with pytest.raises(NoPermissionError):
            recipes.eval("return 1", 0)  # only the relay's path: SCRIPT LOAD, then EVALSHA
        assert admin.xlen(stream_key(PARTNERS_API)) == 0
        assert admin.get(relayed_key(PARTNERS_API)) is None
    with login(redis_server, passwords, "partners") as partners:
        assert partners.register_script(RELAY_SCRIPT)(keys=partners_keys, args=event) == 1


@contextlib.asynccontextmanager
async def bus_as(
    server: RedisServer, passwords: dict[str, str], service: str, data_dir: Path
) -> AsyncIterator[RedisEventBackend]:
    """The service's Redis bus (started: PING, then its relay), as its own user."""
    store = open_store(None, data_dir)
    await store.migrate(event_backend.MIGRATIONS)
    url = redis_acl.bus_url(service, passwords[service], f"{server.host}:{server.port}")
    bus = RedisEventBackend(url, store, SERVICES[service], retention=1000)
    try:
        await bus.start()
        yield bus
    finally:
        await bus.aclose()
        await store.close()


async def eventually(attempt: Callable[[], Awaitable[T | None]], what: str) -> T:
    """`attempt()` again until it returns something, for at most WAIT_SECONDS.

    Each attempt is a blocking read in Redis, so the loop waits there, not in a sleep.
    """
    deadline = time.monotonic() + WAIT_SECONDS
    while (result := await attempt()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
    return result


async def test_a_listener_of_another_api_uses_groups_dead_letters_and_replays(
    passwords: dict[str, str], redis_server: RedisServer, tmp_path: Path
) -> None:
    """The runner listens on the recipes stream with every command the bus's groups use."""
    group = GroupRef(RECIPES_API, "internal", "audit", ())
    payload = any_pb2.Any(type_url="type.googleapis.com/test.Payload", value=b"payload")
    record = event_backend.new_record(RECIPES_API, "recipe_created", "", payload, "recipes-test")
    async with (
        bus_as(redis_server, passwords, "recipes", tmp_path / "recipes") as recipes,
        bus_as(redis_server, passwords, "runner", tmp_path / "runner") as runner,
    ):
        await recipes.store.write(lambda tx: recipes.stage(tx, record))  # relayed by the recipes user

        async def claim(member: str, visibility: float) -> list[event_backend.Delivery] | None:
            return await runner.claim(group, None, member, 10, 0.2, visibility) or None

        first = await eventually(lambda: claim("m1", 30.0), "the relayed event")  # XGROUP CREATE, XREADGROUP
        assert [d.event.type for d in first] == ["recipe_created"]
        taken = await eventually(lambda: claim("m2", 0.001), "the takeover")  # XAUTOCLAIM, XPENDING
        assert taken[0].event.id == first[0].event.id and taken[0].attempts == 2
        await runner.bury(group, taken[0], "refused by the test")  # XADD dead letter, XACK
        dead = await runner.dead_letters(group, 10)  # XRANGE
        assert [d.event.id for d in dead] == [first[0].event.id]
        assert await runner.replay(group, [first[0].event.id]) == 1  # XADD replay, XDEL dead letter
        replayed = await eventually(lambda: claim("m3", 30.0), "the replay")  # XREADGROUP on the replay
        assert replayed[0].event.id == first[0].event.id
        await runner.ack(group, [replayed[0].event.id])  # XACK, XDEL replay
        assert await runner.head(RECIPES_API) == first[0].event.id  # XREVRANGE
        events, _ = await runner.read(RECIPES_API, None, (), EVERYTHING, 10, 0)  # XREAD
        assert [e.id for e in events] == [first[0].event.id]
    with redis_server.client() as admin:
        for key in (stream_key(RECIPES_API), replay_key(group)):
            assert admin.xpending(key, group.key)["pending"] == 0
        assert admin.xlen(dead_key(group)) == 0 and admin.xlen(replay_key(group)) == 0


async def test_a_listener_sees_the_partners_event_and_never_the_forged_one(
    passwords: dict[str, str], redis_server: RedisServer, tmp_path: Path
) -> None:
    address = f"{redis_server.host}:{redis_server.port}"
    bus = redis_acl.bus_url("partners", passwords["partners"], address)
    mesh = await Mesh.start(Settings(data_dir=tmp_path / "partners", bus=bus), [partners_component()])
    try:
        async with bus_as(redis_server, passwords, "runner", tmp_path / "runner") as listener:
            forger = redis.asyncio.Redis.from_url(redis_acl.bus_url("recipes", passwords["recipes"], address))
            with pytest.raises(NoPermissionError):
                await forger.xadd(stream_key(PARTNERS_API), {"type": "partner_created", "source": "x"})
            with pytest.raises(NoPermissionError):
                await forger.register_script(RELAY_SCRIPT)(
                    keys=[stream_key(PARTNERS_API), relayed_key(PARTNERS_API)],
                    args=[
                        1000,
                        relay_frame(10**9, EventRecord(PARTNERS_API, "partner_created", "", b"", 1, "x")),
                    ],
                )
            await forger.aclose()

            async with connect(f"127.0.0.1:{mesh.port}", key=mesh.admin_key) as admin:
                await admin.partners.CreatePartner(
                    partners_pb2.CreatePartnerRequest(
                        namespace="genuine-coffee", partner=partners_pb2.Partner(display_name="Genuine")
                    )
                )
            seen: list[events_pb2.Event] = []

            async def partner_created() -> bool | None:
                events, _ = await listener.read(PARTNERS_API, None, (), EVERYTHING, 100, 0.2)
                seen[:] = events
                return any(e.type == "partner_created" for e in events) or None

            await eventually(partner_created, "partner_created from the partners process")
        assert [e.type for e in seen] == ["partner_created"]
        assert seen[0].source.endswith("/partners")  # fired, and relayed, by the partners process
        assert partners_pb2.PartnerCreatedEvent.FromString(seen[0].payload.value).partner.name.endswith(
            "genuine-coffee"
        )
    finally:
        await mesh.stop(grace=0)


def test_the_cli_output_works_with_redis_cli_and_the_printed_urls(
    fresh_redis_url: str, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    redis_cli = shutil.which("redis-cli")
    assert redis_cli, "redis-cli is installed with redis-server (Debian's redis-tools)"
    address = f"{redis_server.host}:{redis_server.port}"
    cli.main(["redis-acl", "--password", "partners=given-password", "--generate-passwords"])
    cli.main(
        ["redis-acl", "--password", "partners=given-password", "--generate-passwords", "--redis", address]
    )
    printed = capsys.readouterr()
    acl = printed.out.splitlines()[len(SERVICES) :]  # the second run's, whose URLs name the test Redis
    assert [line.split()[:3] for line in acl] == [["ACL", "SETUSER", f"brewmesh-{s}"] for s in SERVICES]
    urls = [line.split("--bus ")[1] for line in printed.err.splitlines()[len(SERVICES) :]]
    assert urls[0] == f"redis://brewmesh-partners:given-password@{address}/0"
    result = subprocess.run(
        [redis_cli, "-h", redis_server.host, "-p", str(redis_server.port), "--no-auth-warning"],
        input="\n".join(acl) + "\n",
        env={"REDISCLI_AUTH": redis_server.password},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert result.stdout.split() == ["OK"] * len(SERVICES), result.stdout + result.stderr
    for service, url in zip(SERVICES, urls, strict=True):
        with redis.Redis.from_url(url) as client:
            assert client.xadd(stream_key(SERVICES[service][0]), {"type": "genuine"})
            with pytest.raises(NoPermissionError):
                client.xadd(
                    stream_key(SERVICES["runner" if service != "runner" else "partners"][0]),
                    {"type": "forged"},
                )


@contextlib.contextmanager
def redis_with_acl_file(base: Path, acl_file: str) -> Iterator[Path]:
    """A redis-server that loads its users from `acl_file`; its unix socket (no port to race for)."""
    (base / "users.acl").write_text(acl_file)
    socket, log = base / "redis.sock", base / "redis.log"
    command: list[str | Path] = [find_redis(), "--port", "0", "--unixsocket", socket, "--dir", base]
    command += ["--aclfile", base / "users.acl", "--save", "", "--appendonly", "no"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while not socket.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"redis-server did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.01)
        yield socket
    finally:
        process.kill()
        process.wait(timeout=WAIT_SECONDS)


def test_the_acl_file_form_loads_as_an_aclfile(tmp_path: Path) -> None:
    chosen = {service: secrets.token_urlsafe(16) for service in SERVICES}
    text = redis_acl.render(SERVICES, chosen, acl_file=True) + "user default off\n"
    with redis_with_acl_file(tmp_path, text) as socket:
        client = redis.Redis(
            unix_socket_path=str(socket), username="brewmesh-recipes", password=chosen["recipes"]
        )
        with client:
            assert client.xadd(stream_key(RECIPES_API), {"type": "genuine"})
            with pytest.raises(NoPermissionError):
                client.xadd(stream_key(PARTNERS_API), {"type": "forged"})


def test_every_service_needs_a_password() -> None:
    with pytest.raises(ValueError, match="no password for runner"):
        redis_acl.render(SERVICES, {"partners": "a", "recipes": "b"})
    with pytest.raises(ValueError, match="needs no Redis user"):
        redis_acl.rules([], "a")


def test_an_api_name_is_matched_literally() -> None:
    rules = redis_acl.rules(["odd*api?"], "a")
    assert r"%RW~brewmesh:events:odd\*api\?" in rules[-1]
