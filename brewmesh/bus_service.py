"""The EventBus gRPC service: anyone with a key listens to the events they may read."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Sequence
from typing import TypeAlias, TypeVar

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from brewmesh.apis import ApiRegistry
from brewmesh.auth import Authenticator, Principal
from brewmesh.bus.v1 import event_bus_pb2, event_bus_pb2_grpc, events_pb2
from brewmesh.counts import check_count
from brewmesh.errors import Violations, quote
from brewmesh.event_backend import GroupRef, GroupState, reader_for
from brewmesh.events import Bus
from brewmesh.pagination import PageTokens, check_page
from brewmesh.server import ServiceBinding, Shutdown

LISTENER_RE = re.compile(r"[A-Za-z0-9._-]{1,100}")
SERVICE_NAME = event_bus_pb2.DESCRIPTOR.services_by_name["EventBus"].full_name
DEFAULT_DEAD_LETTERS = 100
MAX_DEAD_LETTERS = 1000
MAX_EVENT_IDS = 1000
MAX_EVENT_TYPES = 100
DEFAULT_BATCH_SIZE = 100
MAX_BATCH_SIZE = 1000

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
Context: TypeAlias = grpc.aio.ServicerContext[_Req, _Resp]
"""A servicer method's context: `Context[Request, Response]`."""
GroupRequest: TypeAlias = (
    event_bus_pb2.ListDeadLettersRequest
    | event_bus_pb2.ReplayDeadLettersRequest
    | event_bus_pb2.AcknowledgeEventsRequest
)
"""A request naming one of the caller's listener groups."""
GroupEventsRequest: TypeAlias = (
    event_bus_pb2.ReplayDeadLettersRequest | event_bus_pb2.AcknowledgeEventsRequest
)
"""A request naming events of one of the caller's listener groups."""


class EventBusServicer(event_bus_pb2_grpc.EventBusServicer):
    def __init__(
        self, bus: Bus, registry: ApiRegistry, auth: Authenticator, shutdown: Shutdown, tokens: PageTokens
    ) -> None:
        self.bus = bus
        self.registry = registry
        self.auth = auth
        self.shutdown = shutdown
        self.tokens = tokens

    async def Subscribe(  # noqa: N802 (gRPC method name)
        self,
        request: event_bus_pb2.SubscribeRequest,
        context: Context[event_bus_pb2.SubscribeRequest, events_pb2.Event],
    ) -> AsyncIterator[events_pb2.Event]:
        principal = await self.auth.require_any(context)
        v = Violations()
        after = self._check_subscription(v, request)
        v.raise_if_any()
        async for events in await self._follow(principal, request, after, 1):
            yield events[0]
        self._end(context)

    async def SubscribeBatches(  # noqa: N802
        self,
        request: event_bus_pb2.SubscribeBatchesRequest,
        context: Context[event_bus_pb2.SubscribeBatchesRequest, event_bus_pb2.EventBatch],
    ) -> AsyncIterator[event_bus_pb2.EventBatch]:
        principal = await self.auth.require_any(context)
        v = Violations()
        after = None
        if not request.HasField("subscription"):
            v.add("subscription", "is required: which events to stream, as for Subscribe (its `api`)")
        else:
            with v.under("subscription"):
                after = self._check_subscription(v, request.subscription)
        if not 0 <= request.max_batch_size <= MAX_BATCH_SIZE:
            v.add(
                "max_batch_size",
                f"is {request.max_batch_size}: use 1 to {MAX_BATCH_SIZE}, or 0 for {DEFAULT_BATCH_SIZE}",
            )
        v.raise_if_any()
        per_message = request.max_batch_size or DEFAULT_BATCH_SIZE
        async for events in await self._follow(principal, request.subscription, after, per_message):
            yield event_bus_pb2.EventBatch(events=events)
        self._end(context)

    def _check_subscription(self, v: Violations, request: event_bus_pb2.SubscribeRequest) -> object | None:
        """Field violations of `request` into `v`; where it starts (None: the oldest kept)."""
        self._check_api(v, request.api, request.event_types)
        if request.listener_name:
            _check_listener(v, request.listener_name)
        elif request.explicit_ack:
            v.add("explicit_ack", "needs a listener_name: only a listener group's events are acknowledged")
        return self._check_start(v, request)

    async def _follow(
        self,
        principal: Principal,
        request: event_bus_pb2.SubscribeRequest,
        after: object | None,
        per_message: int,
    ) -> AsyncIterator[list[events_pb2.Event]]:
        """The events `request` asks for, as `principal` may see them, `per_message` at most a message."""
        if request.new_only:
            after = await self.bus.backend.head(request.api)
        types = tuple(request.event_types)
        stop = self.shutdown.event
        if request.listener_name:
            group = _group(principal, request.api, request.listener_name, types)
            return self.bus.follow_group(group, after, stop, per_message, request.explicit_ack)
        return self.bus.follow(request.api, types, after, reader_for(principal), stop, per_message)

    def _end(self, context: Context[_Req, _Resp]) -> None:
        """After the events stopped: the stream ends UNAVAILABLE if the server is going.

        Set, not aborted with: grpc sends the status as the handler returns, and drops
        it quietly when the subscriber already cancelled (an abort would fail then).
        """
        if self.shutdown.started:
            context.set_code(grpc.StatusCode.UNAVAILABLE)
            context.set_details("server shutting down: resume with after_id")

    def _check_api(self, v: Violations, api: str, event_types: Sequence[str]) -> None:
        events = self.registry.declared.get(api)
        if not api:
            v.add("api", "is required: the full name of a service, e.g. 'brewmesh.recipes.v1.RecipeService'")
        elif events is None:
            v.add("api", f"{quote(api)} is not an API of this mesh: one of {sorted(self.registry.declared)}")
        if not check_count(v, "event_types", event_types, MAX_EVENT_TYPES, "event types"):
            return
        for i, event_type in enumerate(event_types):
            if events is not None and event_type not in events:
                v.add(
                    f"event_types[{i}]",
                    f"{quote(event_type)} is not declared for {api}: one of {sorted(events)}",
                )

    def _check_group(self, v: Violations, request: GroupRequest) -> None:
        self._check_api(v, request.api, request.event_types)
        _check_listener(v, request.listener_name)

    def _check_start(self, v: Violations, request: event_bus_pb2.SubscribeRequest) -> object | None:
        if not request.after_id:
            return None
        if request.new_only:
            v.add("new_only", "cannot be combined with after_id: choose one starting point")
        after = self.bus.backend.parse_id(request.after_id)
        if after is None:
            v.add(
                "after_id",
                f"{quote(request.after_id)} is not an event id of this mesh:"
                " pass the id of an event you received",
            )
        return after

    async def AcknowledgeEvents(  # noqa: N802
        self,
        request: event_bus_pb2.AcknowledgeEventsRequest,
        context: Context[event_bus_pb2.AcknowledgeEventsRequest, event_bus_pb2.AcknowledgeEventsResponse],
    ) -> event_bus_pb2.AcknowledgeEventsResponse:
        what = "the ids of the events handled (Event.id)"
        group = await self._group_of_events(request, context, what)
        await self.bus.acknowledge(group, list(request.event_ids))
        return event_bus_pb2.AcknowledgeEventsResponse()

    async def _group_of_events(
        self, request: GroupEventsRequest, context: Context[_Req, _Resp], what: str
    ) -> GroupRef:
        """The caller's group `request` names, once its `event_ids` (`what` they are) are valid."""
        principal = await self.auth.require_any(context)
        v = Violations()
        self._check_group(v, request)
        if not request.event_ids:
            v.add("event_ids", f"is required: {what}")
        elif check_count(v, "event_ids", request.event_ids, MAX_EVENT_IDS, "ids"):
            for i, event_id in enumerate(request.event_ids):
                if self.bus.backend.parse_id(event_id) is None:
                    v.add(f"event_ids[{i}]", f"{quote(event_id)} is not an event id of this mesh")
        v.raise_if_any()
        return _named_group(principal, request)

    async def ListApis(  # noqa: N802
        self,
        request: event_bus_pb2.ListApisRequest,
        context: Context[event_bus_pb2.ListApisRequest, event_bus_pb2.ListApisResponse],
    ) -> event_bus_pb2.ListApisResponse:
        apis = [
            event_bus_pb2.Api(
                name=name,
                events=[
                    events_pb2.EventDeclaration(type=s.type, payload=s.payload, description=s.description)
                    for s in specs.values()
                ],
                served_here=name in self.registry.served,
            )
            for name, specs in sorted(self.registry.declared.items())
            if specs
        ]
        return event_bus_pb2.ListApisResponse(apis=apis)

    async def ListDeadLetters(  # noqa: N802
        self,
        request: event_bus_pb2.ListDeadLettersRequest,
        context: Context[event_bus_pb2.ListDeadLettersRequest, event_bus_pb2.ListDeadLettersResponse],
    ) -> event_bus_pb2.ListDeadLettersResponse:
        principal = await self.auth.require_any(context)
        v = Violations()
        self._check_group(v, request)
        if not 0 <= request.page_size <= MAX_DEAD_LETTERS:
            v.add(
                "page_size",
                f"is {request.page_size}: use 1 to {MAX_DEAD_LETTERS}, or 0 for {DEFAULT_DEAD_LETTERS}",
            )
        v.raise_if_any()
        group = _named_group(principal, request)
        letters = await self.bus.backend.dead_letters(group, request.page_size or DEFAULT_DEAD_LETTERS)
        return event_bus_pb2.ListDeadLettersResponse(
            dead_letters=[
                event_bus_pb2.DeadLetter(
                    event=letter.event,
                    attempts=letter.attempts,
                    reason=letter.reason,
                    dead_time=_timestamp(letter.dead_time_ns),
                )
                for letter in letters
            ]
        )

    async def ReplayDeadLetters(  # noqa: N802
        self,
        request: event_bus_pb2.ReplayDeadLettersRequest,
        context: Context[event_bus_pb2.ReplayDeadLettersRequest, event_bus_pb2.ReplayDeadLettersResponse],
    ) -> event_bus_pb2.ReplayDeadLettersResponse:
        what = "the ids of the dead letters to replay (DeadLetter.event.id)"
        group = await self._group_of_events(request, context, what)
        replayed = await self.bus.backend.replay(group, list(request.event_ids))
        return event_bus_pb2.ReplayDeadLettersResponse(replayed_count=replayed)

    async def ListListenerGroups(  # noqa: N802
        self,
        request: event_bus_pb2.ListListenerGroupsRequest,
        context: Context[event_bus_pb2.ListListenerGroupsRequest, event_bus_pb2.ListListenerGroupsResponse],
    ) -> event_bus_pb2.ListListenerGroupsResponse:
        principal = await self.auth.require_any(context)
        v = Violations()
        if request.api:
            self._check_api(v, request.api, ())
        page = check_page(
            v, self.tokens, request.page_size, request.page_token, f"listener-groups|{request.api}"
        )
        v.raise_if_any()
        states: list[GroupState] = []
        for api in [request.api] if request.api else sorted(self.registry.declared):
            states += [
                state
                for state in await self.bus.backend.groups(api)
                if principal.is_admin or state.group.namespace == principal.namespace
            ]
        found = sorted((s for s in states if _state_key(s) > page.after), key=_state_key)[: page.limit]
        shown, next_token = page.finish(found, _state_key, self.tokens)
        now_ns = time.time_ns()
        return event_bus_pb2.ListListenerGroupsResponse(
            listener_groups=[_listener_group(state, now_ns) for state in shown], next_page_token=next_token
        )


def _state_key(state: GroupState) -> str:
    return f"{state.group.api}\x00{state.group.key}"


def _listener_group(state: GroupState, now_ns: int) -> event_bus_pb2.ListenerGroup:
    waited = duration_pb2.Duration()
    if state.oldest_waiting_ns is not None:
        waited.FromNanoseconds(max(0, now_ns - state.oldest_waiting_ns))
    group = state.group
    return event_bus_pb2.ListenerGroup(
        api=group.api,
        namespace=group.namespace,
        listener_name=group.listener,
        event_types=group.types,
        position=state.position,
        lag_events=state.lag_events,
        lag=waited,
        pending_events=state.pending,
        dead_letters=state.dead_letters,
    )


def _check_listener(v: Violations, listener_name: str) -> None:
    if not LISTENER_RE.fullmatch(listener_name):
        v.add("listener_name", "use 1 to 100 letters, digits, '-', '_' or '.'")


def _group(principal: Principal, api: str, listener: str, types: tuple[str, ...]) -> GroupRef:
    """The caller's group: in its own namespace, seeing what the caller may see."""
    return GroupRef(api, str(principal.namespace), listener, types, reader_for(principal))


def _named_group(principal: Principal, request: GroupRequest) -> GroupRef:
    return _group(principal, request.api, request.listener_name, tuple(request.event_types))


def _timestamp(time_ns: int) -> timestamp_pb2.Timestamp:
    moment = timestamp_pb2.Timestamp()
    moment.FromNanoseconds(time_ns)
    return moment


def binding(
    bus: Bus, registry: ApiRegistry, auth: Authenticator, shutdown: Shutdown, tokens: PageTokens
) -> ServiceBinding:
    servicer = EventBusServicer(bus, registry, auth, shutdown, tokens)
    return ServiceBinding(
        SERVICE_NAME, lambda server: event_bus_pb2_grpc.add_EventBusServicer_to_server(servicer, server)
    )
