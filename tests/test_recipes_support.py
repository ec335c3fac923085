"""Helpers for the recipes-domain tests (this module holds no tests).

Requests as a client would write them, and small checks on errors and on
what the mesh recorded.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeAlias

import grpc
import pytest

from brewmesh.bus.v1 import events_pb2
from brewmesh.client import MeshClient, field_violations
from brewmesh.event_backend import EVERYTHING
from brewmesh.mesh import Mesh
from brewmesh.recipes.v1 import formatters_pb2 as fpb
from brewmesh.recipes.v1 import layouts_pb2 as lpb
from brewmesh.recipes.v1 import recipes_pb2 as rpb

RECIPES_API = "brewmesh.recipes.v1.RecipeService"
LAYOUTS_API = "brewmesh.recipes.v1.LayoutService"
FORMATTERS_API = "brewmesh.recipes.v1.FormatterService"
SEARCH_LAYOUT = "layouts/common:recipe-search"
TITLE = "search_title"
DESCRIPTION = "search_description"


def recipe(volume_ml: int = 300, program_id: str = "lungo", **parameters: Any) -> rpb.Recipe:
    proto = rpb.Recipe(
        product_properties=rpb.ProductProperties(default_volume_ml=volume_ml),
        execution_properties=rpb.ExecutionProperties(program_id=program_id),
    )
    if parameters:
        proto.execution_properties.parameters.update(parameters)
    return proto


def create_recipe(
    namespace: str, id_component: str, volume_ml: int = 300, **kw: Any
) -> rpb.CreateRecipeRequest:
    return rpb.CreateRecipeRequest(
        namespace=namespace, id_component=id_component, recipe=recipe(volume_ml, **kw)
    )


def l10n(language: str, country: str = "", recipe_name: str = "", **values: str) -> rpb.PutRecipeL10nRequest:
    return rpb.PutRecipeL10nRequest(
        recipe=recipe_name, l10n=rpb.RecipeL10n(language_code=language, country_code=country, values=values)
    )


def search_values(title: str, description: str) -> dict[str, str]:
    return {TITLE: title, DESCRIPTION: description}


def formatter(
    language: str,
    country: str = "",
    template: str = "{volume} ml",
    divide_by: float | None = None,
    multiply_by: float | None = None,
    decimals: int = 0,
) -> fpb.VolumeFormatter:
    proto = fpb.VolumeFormatter(language_code=language, country_code=country, template=template)
    if divide_by is not None:
        proto.transform.CopyFrom(
            fpb.ValueTransform(
                operation=fpb.ValueTransform.OPERATION_DIVIDE, operand=divide_by, decimals=decimals
            )
        )
    if multiply_by is not None:
        proto.transform.CopyFrom(
            fpb.ValueTransform(
                operation=fpb.ValueTransform.OPERATION_MULTIPLY, operand=multiply_by, decimals=decimals
            )
        )
    return proto


def put_formatter(proto: fpb.VolumeFormatter) -> fpb.PutVolumeFormatterRequest:
    return fpb.PutVolumeFormatterRequest(volume_formatter=proto)


Overflow: TypeAlias = lpb.FieldView.Overflow.ValueType


def layout(
    kind: str = "recipe_card", required: tuple[str, ...] = (), **views: tuple[int, int, Overflow]
) -> lpb.Layout:
    """A layout whose properties are `field=(min_length, max_length, overflow)`."""
    properties = [
        lpb.LayoutProperty(field=name, view=lpb.FieldView(min_length=lo, max_length=hi, overflow=overflow))
        for name, (lo, hi, overflow) in views.items()
    ]
    return lpb.Layout(kind=kind, properties=properties, required_fields=required)


ELLIPSIS = lpb.FieldView.OVERFLOW_ELLIPSIS
CLIP = lpb.FieldView.OVERFLOW_CLIP


async def fails(call: Awaitable[Any], code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    """The error of a call that must fail with `code`."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    return caught.value


async def invalid(call: Awaitable[Any]) -> dict[str, str]:
    """Field path -> description of a call that must fail with INVALID_ARGUMENT."""
    error = await fails(call, grpc.StatusCode.INVALID_ARGUMENT)
    violations = field_violations(error)
    assert violations, "INVALID_ARGUMENT without a BadRequest detail"
    return {v.field: v.description for v in violations}


async def event_types(mesh: Mesh, api: str) -> list[str]:
    """Every event recorded for `api`, in order."""
    return [e.type for e in await logged_events(mesh, api)]


async def logged_events(mesh: Mesh, api: str) -> list[events_pb2.Event]:
    """Every event the mesh's log keeps for `api`, oldest first."""
    events, _ = await mesh.runtime.bus.backend.read(api, None, (), EVERYTHING, 10_000, 0)
    return events


async def recipe_names(client: MeshClient, namespace: str = "") -> list[str]:
    response = await client.recipes.ListRecipes(rpb.ListRecipesRequest(namespace=namespace, page_size=1000))
    return [r.name for r in response.recipes]
