"""The runner component: ProgramRunner as a proxy, and its followers."""

from __future__ import annotations

import functools

from google.protobuf.message import Message

from brewmesh.runner.v1 import program_runner_pb2 as pb
from brewmesh.runner.v1 import program_runner_pb2_grpc
from brewmesh.runtime import Component, Runtime
from brewmesh.server import ServiceBinding
from brewmesh.services.runner import resolution, run_store
from brewmesh.services.runner.follower import Follower
from brewmesh.services.runner.machine_link import MachineLink
from brewmesh.services.runner.recorder import API, RunRecorder, key_of
from brewmesh.services.runner.resolution import Resolver
from brewmesh.services.runner.run_feed import RunFeed
from brewmesh.services.runner.servicer import ProgramRunnerServicer
from brewmesh.tls import machine_credentials


class Runner:
    """The runner's parts in one process."""

    def __init__(self) -> None:
        self.link = MachineLink()
        self.resolver: Resolver | None = None
        self.follower: Follower | None = None
        self.servicer: ProgramRunnerServicer | None = None
        self.feed: RunFeed | None = None

    async def start(self, rt: Runtime) -> None:
        # A machine that stops answering is noticed within twice the keepalive; its runs then
        # fail after the resume window (by default within 2 x 2.5 + 15 = 20 s).
        settings = rt.settings
        self.link = MachineLink(
            machine_credentials(rt.tls), settings.machine_keepalive, rt.client_observers()
        )
        self.feed = feed = RunFeed(rt.store, rt.shutdown.event)
        recorder = RunRecorder(rt.store, rt.bus, rt.metrics)
        self.follower = Follower(rt.store, self.link, recorder, settings.machine_resume)
        self.resolver = resolver = Resolver(
            rt.address_of,
            remember=not rt.bus.backend.crosses_processes,
            credentials_for=rt.credentials_for,
            observers=rt.client_observers(),
        )
        for change in resolution.CHANGES:
            rt.bus.observe(change, resolver.on_change)
        rt.bus.observe(f"{API}.program_event", functools.partial(_publish, feed))
        self.servicer = ProgramRunnerServicer(rt, self.resolver, self.link, recorder, feed, self.follower)
        # Pick up the runs that were live when this runner last stopped.
        for run in await rt.store.read(run_store.live_runs):
            self.follower.follow(run.key)

    async def stop(self, rt: Runtime) -> None:
        if self.follower:
            await self.follower.stop()
        if self.feed:
            await self.feed.close()
        if self.resolver:
            await self.resolver.close()
        await self.link.close()

    def bindings(self, rt: Runtime) -> list[ServiceBinding]:
        servicer = self.servicer
        assert servicer is not None, "start() builds the servicer"
        return [
            ServiceBinding(
                API, lambda s: program_runner_pb2_grpc.add_ProgramRunnerServicer_to_server(servicer, s)
            )
        ]


def _publish(feed: RunFeed, recorded: Message) -> None:
    """Recorded events reach the watchers through the bus: this instance's as they commit,
    another runner instance's as the bus delivers them."""
    assert isinstance(recorded, pb.ProgramEventRecorded)
    feed.published(key_of(recorded), recorded.event)


def component() -> Component:
    runner = Runner()
    return Component(
        name="runner",
        apis=[API],
        migrations=run_store.MIGRATIONS,
        bindings=runner.bindings,
        start=runner.start,
        stop=runner.stop,
    )
