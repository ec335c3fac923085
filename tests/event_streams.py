"""Reading the EventBus in tests through either stream: Subscribe, or SubscribeBatches flattened.

Both must stream the same events under the same rules; tests that read events
take `rpc` (one of STREAM_RPCS) and read through `events_of`.
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from typing import Any

from brewmesh.bus.v1 import event_bus_pb2 as bus_pb
from brewmesh.bus.v1 import events_pb2
from brewmesh.client import MeshClient

STREAM_RPCS = ("Subscribe", "SubscribeBatches")


def events_of(
    client: MeshClient, request: bus_pb.SubscribeRequest, rpc: str, max_batch_size: int = 0, **call: Any
) -> AsyncIterable[events_pb2.Event]:
    """The events `request` streams through `rpc`, one by one."""
    if rpc == "Subscribe":
        stream: AsyncIterable[events_pb2.Event] = client.bus.Subscribe(request, **call)
        return stream
    batches = client.bus.SubscribeBatches(
        bus_pb.SubscribeBatchesRequest(subscription=request, max_batch_size=max_batch_size), **call
    )
    return _flattened(batches)


async def _flattened(batches: AsyncIterable[bus_pb.EventBatch]) -> AsyncIterable[events_pb2.Event]:
    async for batch in batches:
        assert batch.events, "a batch carries at least one event"
        for event in batch.events:
            yield event
