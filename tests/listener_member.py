"""A member of a listener group in a process of its own, for the delivery-fault tests.

Run as `python -m tests.listener_member --bus URL --data-dir D --event API.TYPE
--listener NAME --mode ok|hang|fail`. It prints `ready` once its group exists,
then `got <event id>` for each delivery (before the handler hangs or fails), so
a test can kill it -9 mid-event or watch its retries.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import redis.asyncio as redis

from brewmesh import event_backend
from brewmesh.apis import ApiRegistry
from brewmesh.backends import open_store
from brewmesh.backends.redis_bus import RedisEventBackend, stream_key
from brewmesh.events import Bus, BusSettings, ReceivedEvent

WAIT_FOR_GROUP_SECONDS = 20.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bus", required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--event", required=True)
    parser.add_argument("--listener", required=True)
    parser.add_argument("--mode", choices=("ok", "hang", "fail"), default="ok")
    parser.add_argument("--visibility", type=float, default=30.0)
    parser.add_argument("--max-deliveries", type=int, default=5)
    asyncio.run(_serve(parser.parse_args()))


async def _serve(args: argparse.Namespace) -> None:
    store = open_store(None, args.data_dir)
    await store.migrate(event_backend.MIGRATIONS)
    backend = RedisEventBackend(args.bus, store, served=(), retention=10_000)
    await backend.start()
    settings = BusSettings(visibility_seconds=args.visibility, max_deliveries=args.max_deliveries)
    bus = Bus(backend, store, ApiRegistry(), "listener-member", settings)

    async def handle(event: ReceivedEvent) -> None:
        print(f"got {event.id}", flush=True)
        if args.mode == "hang":
            await asyncio.Event().wait()
        if args.mode == "fail":
            raise RuntimeError("this handler always fails")

    bus.listen(args.event, handle, listener_name=args.listener)
    api, _, event_type = args.event.rpartition(".")
    await _wait_for_group(args.bus, stream_key(api), f"{event_backend.PLATFORM}/{args.listener}|{event_type}")
    print("ready", flush=True)
    await asyncio.Event().wait()


async def _wait_for_group(url: str, stream: str, group: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        async with asyncio.timeout(WAIT_FOR_GROUP_SECONDS):
            # Redis tells nobody that a group was made: ask until it was.
            while not any(g["name"].decode() == group for g in await _groups(client, stream)):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
    finally:
        await client.aclose()


async def _groups(client: redis.Redis, stream: str) -> list[dict[str, bytes]]:
    try:
        return list(await client.xinfo_groups(stream))
    except redis.ResponseError:  # no stream yet
        return []


if __name__ == "__main__":
    main()
