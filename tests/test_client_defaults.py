"""`brewmesh.client.connect` gives every call a deadline and retries what is safe to retry.

Against a real gRPC server on a free port that misbehaves on purpose: one
that never answers, one that is UNAVAILABLE for the first attempts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from brewmesh.bus.v1 import event_bus_pb2, events_pb2
from brewmesh.client import connect
from brewmesh.recipes.v1 import recipes_pb2

RECIPES = "brewmesh.recipes.v1.RecipeService"


class FlakyRecipes:
    """Answers GetRecipe and CreateRecipe: UNAVAILABLE `failures` times, then a recipe."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts: dict[str, int] = {}

    def handler(self, method: str) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Any]:
        async def answer(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> recipes_pb2.Recipe:
            self.attempts[method] = self.attempts.get(method, 0) + 1
            if self.attempts[method] <= self.failures:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "starting up")
            return recipes_pb2.Recipe(name="recipes/x:y")

        return answer


class Silent:
    """Never answers."""

    def handler(self, method: str) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Any]:
        async def never(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> recipes_pb2.Recipe:
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        return never


async def _serve(behaviour: FlakyRecipes | Silent) -> AsyncIterator[str]:
    handlers = {
        method: grpc.unary_unary_rpc_method_handler(
            behaviour.handler(method),
            request_deserializer=request.FromString,
            response_serializer=recipes_pb2.Recipe.SerializeToString,
        )
        for method, request in (
            ("GetRecipe", recipes_pb2.GetRecipeRequest),
            ("CreateRecipe", recipes_pb2.CreateRecipeRequest),
        )
    }
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(RECIPES, handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


@pytest.fixture
async def flaky() -> AsyncIterator[tuple[str, FlakyRecipes]]:
    behaviour = FlakyRecipes(failures=2)
    async for address in _serve(behaviour):
        yield address, behaviour


@pytest.fixture
async def silent() -> AsyncIterator[str]:
    async for address in _serve(Silent()):
        yield address


async def test_a_read_is_retried_while_the_server_is_unavailable(flaky: tuple[str, FlakyRecipes]) -> None:
    address, server = flaky
    async with connect(address) as client:
        got = await client.recipes.GetRecipe(recipes_pb2.GetRecipeRequest(name="recipes/x:y"))
    assert got.name == "recipes/x:y" and server.attempts["GetRecipe"] == 3


async def test_a_create_is_not_retried(flaky: tuple[str, FlakyRecipes]) -> None:
    address, server = flaky
    async with connect(address) as client:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await client.recipes.CreateRecipe(recipes_pb2.CreateRecipeRequest())
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE and server.attempts["CreateRecipe"] == 1


async def test_a_call_without_a_deadline_gets_the_default_one(silent: str) -> None:
    async with connect(silent, deadline_seconds=0.5) as client:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await client.recipes.GetRecipe(recipes_pb2.GetRecipeRequest(name="recipes/x:y"))
    assert failed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


class Recording:
    """Answers GetRecipe and EventBus.Subscribe (one event), noting each call's metadata."""

    def __init__(self) -> None:
        self.seen: list[tuple[tuple[str, str | bytes], ...]] = []

    async def get(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> recipes_pb2.Recipe:
        self.seen.append(tuple(context.invocation_metadata() or ()))
        return recipes_pb2.Recipe(name="recipes/x:y")

    async def subscribe(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[events_pb2.Event]:
        self.seen.append(tuple(context.invocation_metadata() or ()))
        yield events_pb2.Event(id="1")


@pytest.fixture
async def recording() -> AsyncIterator[tuple[str, Recording]]:
    behaviour = Recording()
    server = grpc.aio.server()
    get = grpc.unary_unary_rpc_method_handler(
        behaviour.get, recipes_pb2.GetRecipeRequest.FromString, recipes_pb2.Recipe.SerializeToString
    )
    subscribe = grpc.unary_stream_rpc_method_handler(
        behaviour.subscribe, event_bus_pb2.SubscribeRequest.FromString, events_pb2.Event.SerializeToString
    )
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(RECIPES, {"GetRecipe": get}),
            grpc.method_handlers_generic_handler("brewmesh.bus.v1.EventBus", {"Subscribe": subscribe}),
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", behaviour
    finally:
        await server.stop(0)


async def test_every_call_presents_the_key_once_beside_the_callers_own_metadata(
    recording: tuple[str, Recording],
) -> None:
    address, server = recording
    mine = ("x-request-id", "order-42")
    async with connect(address, key="bm_secret") as client:
        await client.recipes.GetRecipe(recipes_pb2.GetRecipeRequest(name="recipes/x:y"), metadata=[mine])
        await client.recipes.GetRecipe(recipes_pb2.GetRecipeRequest(name="recipes/x:y"))
        stream = client.bus.Subscribe(event_bus_pb2.SubscribeRequest(api=RECIPES), metadata=(mine,))
        assert [event.id async for event in stream] == ["1"]
    keys = [[value for name, value in seen if name == "authorization"] for seen in server.seen]
    assert keys == [["Bearer bm_secret"]] * 3
    assert [mine in seen for seen in server.seen] == [True, False, True]
