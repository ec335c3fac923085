"""Bodies that do not decode, numbers JSON cannot carry, ids out of range: INVALID_ARGUMENT, never
UNKNOWN or INTERNAL, and never a traceback in the server's log."""

from __future__ import annotations

import logging
import math

import grpc
import pytest
from google.protobuf import struct_pb2

from brewmesh.bus.v1 import event_bus_pb2
from brewmesh.client import MeshClient, field_violations
from brewmesh.recipes.v1 import layouts_pb2 as lpb
from brewmesh.recipes.v1 import recipes_pb2 as rpb
from brewmesh.runner.v1 import program_runner_pb2 as run_pb
from brewmesh.runner.v1 import program_runner_pb2_grpc
from brewmesh.sdk import Machine, Program
from tests.conftest import MeshUnderTest, PartnerClient, embedded_only
from tests.hostile_requests import deep_struct, delimited
from tests.test_recipes_support import create_recipe, invalid, recipe

GET_RECIPE = "/brewmesh.recipes.v1.RecipeService/GetRecipe"
CREATE_RECIPE = "/brewmesh.recipes.v1.RecipeService/CreateRecipe"
SUBSCRIBE = "/brewmesh.bus.v1.EventBus/Subscribe"
NOT_PROTOBUF = b"\xff\xff\xff\xff"
NOT_UTF8_NAME = b"\x0a\x03\xff\xfe\xc0"  # GetRecipeRequest.name (field 1), three bytes of no UTF-8
PARAMETERS = "recipe.execution_properties.parameters"


def recipe_with_a_struct_50_deep() -> bytes:
    """CreateRecipeRequest{recipe{execution_properties{parameters: 50 objects deep}}}."""
    return delimited(3, delimited(3, delimited(2, deep_struct(50))))


async def raw_call(port: int, method: str, body: bytes, key: str | None = None) -> grpc.aio.AioRpcError:
    metadata = (("authorization", f"Bearer {key}"),) if key else ()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        # No serializers: the body goes as it is, and answers come back as bytes.
        stream: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(method)
        unary: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(method)
        try:
            if method == SUBSCRIBE:
                async for _ in stream(body, metadata=metadata, timeout=5):
                    pass
            else:
                await unary(body, metadata=metadata, timeout=5)
        except grpc.aio.AioRpcError as error:
            return error
    raise AssertionError(f"{method} accepted {body!r}")


@pytest.mark.parametrize("with_key", [False, True], ids=["no key", "admin key"])
async def test_a_body_that_does_not_decode_is_invalid_argument_naming_the_request_type(
    mesh: MeshUnderTest, with_key: bool
) -> None:
    key = mesh.admin_key if with_key else None
    cases = [
        (GET_RECIPE, NOT_PROTOBUF, "brewmesh.recipes.v1.GetRecipeRequest"),
        (GET_RECIPE, NOT_UTF8_NAME, "brewmesh.recipes.v1.GetRecipeRequest"),
        (CREATE_RECIPE, recipe_with_a_struct_50_deep(), "brewmesh.recipes.v1.CreateRecipeRequest"),
        (SUBSCRIBE, NOT_PROTOBUF, "brewmesh.bus.v1.SubscribeRequest"),
    ]
    for method, body, type_name in cases:
        error = await raw_call(mesh.port, method, body, key)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, error.details())
        details = error.details() or ""
        assert details.startswith(f"the request is not a valid {type_name}: "), details
        [violation] = field_violations(error)
        assert violation.field == ""  # the request as a whole, as errors.py documents
        assert f"send a serialized {type_name}" in violation.description


@embedded_only
async def test_undecodable_bodies_are_logged_as_one_warning_without_a_traceback(
    mesh: MeshUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    for _ in range(20):
        await raw_call(mesh.port, GET_RECIPE, NOT_PROTOBUF)
        await raw_call(mesh.port, SUBSCRIBE, NOT_UTF8_NAME)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text
    assert len([r for r in caplog.records if "not a brewmesh" in r.getMessage()]) <= 1  # rate-limited


async def test_nan_and_infinity_in_recipe_parameters_are_invalid_naming_the_field(
    partner: PartnerClient,
) -> None:
    for number in (math.nan, math.inf, -math.inf):
        bad = recipe(steps=[{"temperature": number}])
        create = rpb.CreateRecipeRequest(namespace="my-coffee-company", id_component="lungo", recipe=bad)
        fields = await invalid(partner.client.recipes.CreateRecipe(create))
        assert list(fields) == [PARAMETERS]
        assert "'steps[0].temperature'" in fields[PARAMETERS] and "finite" in fields[PARAMETERS]
        build = rpb.BuildRecipeRequest(recipe=create)
        assert list(await invalid(partner.client.recipes.BuildRecipe(build))) == [f"recipe.{PARAMETERS}"]
    await partner.client.recipes.CreateRecipe(create_recipe("my-coffee-company", "lungo"))
    change = recipe(250, temperature=math.nan)
    change.name = "recipes/my-coffee-company:lungo"
    update = rpb.UpdateRecipeRequest(recipe=change)
    assert list(await invalid(partner.client.recipes.UpdateRecipe(update))) == [PARAMETERS]


async def test_nan_in_signal_attributes_is_invalid_naming_the_field(partner: PartnerClient) -> None:
    attributes = struct_pb2.Struct()
    attributes.update({"takeout": "counter", "tip": math.nan})
    signal = run_pb.SignalRequest(run="programRuns/order-1", event="takeout_requested", attributes=attributes)
    fields = await invalid(partner.client.runner.Signal(signal))
    assert list(fields) == ["attributes"]
    assert "nan at 'tip'" in fields["attributes"]


async def test_a_struct_nested_too_deep_or_too_big_is_invalid(partner: PartnerClient) -> None:
    deep: dict[str, object] = {}
    for _ in range(15):
        deep = {"n": deep}
    big = {f"k{i}": i for i in range(3000)}
    for parameters in (deep, big):
        create = rpb.CreateRecipeRequest(
            namespace="my-coffee-company", id_component="lungo", recipe=recipe(**parameters)
        )
        fields = await invalid(partner.client.recipes.CreateRecipe(create))
        assert list(fields) == [PARAMETERS]
        assert "deep" in fields[PARAMETERS] or "values" in fields[PARAMETERS]


@pytest.mark.parametrize("after_id", [str(2**63), "9" * 5000, "-1", "1e3"])
async def test_subscribe_after_an_id_out_of_range_is_invalid(admin: MeshClient, after_id: str) -> None:
    request = event_bus_pb2.SubscribeRequest(api="brewmesh.recipes.v1.RecipeService", after_id=after_id)
    try:
        async for _ in admin.bus.Subscribe(request, timeout=5):
            pass
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert [v.field for v in field_violations(error)] == ["after_id"]
        assert len(error.details() or "") < 1024
    else:
        raise AssertionError(f"after_id {after_id[:30]!r} was accepted")


async def test_a_huge_min_length_is_invalid(partner: PartnerClient) -> None:
    view = lpb.FieldView(min_length=2**31 - 1)
    spec = lpb.Layout(kind="recipe_card", properties=[lpb.LayoutProperty(field="search_title", view=view)])
    request = lpb.CreateLayoutRequest(layout_id="my-coffee-company:card", layout=spec)
    fields = await invalid(partner.client.layouts.CreateLayout(request))
    assert list(fields) == ["layout.properties[0].view.min_length"]


async def test_a_partner_machine_refuses_nan_in_parameters_and_attributes() -> None:
    machine = Machine()

    @machine.program_run_handler("simple")
    async def brew(program: Program) -> None:
        await program.context.emit("poured")

    port = await machine.start("127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = program_runner_pb2_grpc.ProgramRunnerStub(channel)
            parameters = struct_pb2.Struct()
            parameters.update({"temperature": math.inf})
            program = run_pb.Program(program_id="lungo", parameters=parameters)
            run = run_pb.RunRequest(run_id="r1", recipe="recipes/acme:lungo", program=program)
            assert list(await invalid(stub.Run(run, timeout=5))) == ["program.parameters"]
            signal = run_pb.SignalRequest(
                run="programRuns/r1", event="takeout_requested", attributes=parameters
            )
            assert list(await invalid(stub.Signal(signal, timeout=5))) == ["attributes"]
    finally:
        await machine.stop(grace=1)
