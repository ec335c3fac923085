"""Bad input to the recipes services: INVALID_ARGUMENT naming every bad field, never INTERNAL."""

from __future__ import annotations

from collections.abc import Awaitable

import grpc
from google.protobuf import field_mask_pb2

from brewmesh.client import MeshClient
from brewmesh.recipes.v1 import formatters_pb2 as fpb
from brewmesh.recipes.v1 import layouts_pb2 as lpb
from brewmesh.recipes.v1 import recipes_pb2 as rpb
from tests.conftest import PartnerClient
from tests.test_recipes_support import (
    ELLIPSIS,
    SEARCH_LAYOUT,
    create_recipe,
    formatter,
    invalid,
    layout,
    put_formatter,
    recipe,
)

LUNGO = "recipes/my-coffee-company:lungo-customato"
NASTY = [
    "",
    " ",
    "ü",
    "\x00",
    "a" * 1000,
    "recipes/",
    "recipes/:",
    "recipes/ab:",
    "recipes/ab:c/d",
    "☕:☕",
    "/",
]


async def test_ids_with_illegal_characters(partner: PartnerClient) -> None:
    fields = await invalid(
        partner.client.recipes.CreateRecipe(create_recipe("My_Company", "Lungo Customato!"))
    )
    assert set(fields) == {"namespace", "id_component"}
    assert "'Lungo Customato!' is not a valid id" in fields["id_component"]
    assert "lowercase" in fields["namespace"]

    request = lpb.CreateLayoutRequest(
        layout_id="my-coffee-company:Card #1", layout=layout(title=(0, 5, ELLIPSIS))
    )
    assert list(await invalid(partner.client.layouts.CreateLayout(request))) == ["layout_id"]
    for name in ("recipes/my-coffee-company:lungo customato", "recipes/lungo", "lungo"):
        assert list(await invalid(partner.client.recipes.GetRecipe(rpb.GetRecipeRequest(name=name)))) == [
            "name"
        ]


async def test_an_empty_namespace(partner: PartnerClient) -> None:
    fields = await invalid(partner.client.recipes.CreateRecipe(create_recipe("", "lungo")))
    assert list(fields) == ["namespace"]
    assert fields["namespace"].startswith("is required")


async def test_a_template_without_the_volume_placeholder(partner: PartnerClient) -> None:
    fields = await invalid(
        partner.client.formatters.PutVolumeFormatter(put_formatter(formatter("en", template="fl oz")))
    )
    assert list(fields) == ["volume_formatter.template"]
    assert "{volume}" in fields["volume_formatter.template"]


async def test_a_divisor_of_zero(partner: PartnerClient) -> None:
    fields = await invalid(
        partner.client.formatters.PutVolumeFormatter(put_formatter(formatter("en", "US", divide_by=0)))
    )
    assert list(fields) == ["volume_formatter.transform.operand"]
    assert "greater than 0" in fields["volume_formatter.transform.operand"]
    negative = formatter("en", "US", multiply_by=-2)
    fields = await invalid(partner.client.formatters.PutVolumeFormatter(put_formatter(negative)))
    assert list(fields) == ["volume_formatter.transform.operand"]


async def test_a_negative_volume(partner: PartnerClient) -> None:
    request = fpb.FormatVolumeRequest(volume_ml=-1, language_code="en")
    fields = await invalid(partner.client.formatters.FormatVolume(request))
    assert list(fields) == ["volume_ml"]
    fields = await invalid(
        partner.client.recipes.CreateRecipe(create_recipe("my-coffee-company", "lungo", -300))
    )
    assert list(fields) == ["recipe.product_properties.default_volume_ml"]
    assert "1 to 5000" in fields["recipe.product_properties.default_volume_ml"]

    await partner.client.recipes.CreateRecipe(create_recipe("my-coffee-company", "lungo-customato"))
    change = rpb.Recipe(name=LUNGO, product_properties=rpb.ProductProperties(default_volume_ml=-1))
    mask = field_mask_pb2.FieldMask(paths=["product_properties"])
    fields = await invalid(
        partner.client.recipes.UpdateRecipe(rpb.UpdateRecipeRequest(recipe=change, update_mask=mask))
    )
    assert list(fields) == ["recipe.product_properties.default_volume_ml"]


async def test_malformed_language_and_country_codes(partner: PartnerClient) -> None:
    request = fpb.FormatVolumeRequest(volume_ml=300, language_code="EN", country_code="usa")
    fields = await invalid(partner.client.formatters.FormatVolume(request))
    assert set(fields) == {"language_code", "country_code"}
    assert "ISO 639-1" in fields["language_code"] and "ISO 3166-1" in fields["country_code"]
    fields = await invalid(
        partner.client.formatters.PutVolumeFormatter(put_formatter(formatter("english", "U5")))
    )
    assert set(fields) == {"volume_formatter.language_code", "volume_formatter.country_code"}
    search = rpb.SearchRecipesRequest(language_code="", country_code="us", layout=SEARCH_LAYOUT)
    assert set(await invalid(partner.client.recipes.SearchRecipes(search))) == {
        "language_code",
        "country_code",
    }


async def test_a_negative_page_size(anonymous: MeshClient) -> None:
    assert list(await invalid(anonymous.recipes.ListRecipes(rpb.ListRecipesRequest(page_size=-1)))) == [
        "page_size"
    ]
    assert list(await invalid(anonymous.layouts.ListLayouts(lpb.ListLayoutsRequest(page_size=-5)))) == [
        "page_size"
    ]
    listing = fpb.ListVolumeFormattersRequest(page_size=-1)
    assert list(await invalid(anonymous.formatters.ListVolumeFormatters(listing))) == ["page_size"]


async def test_a_forged_page_token(partner: PartnerClient) -> None:
    for i in range(3):
        await partner.client.recipes.CreateRecipe(create_recipe("my-coffee-company", f"r{i}"))
    real = (await partner.client.recipes.ListRecipes(rpb.ListRecipesRequest(page_size=1))).next_page_token
    payload, _, signature = real.partition(".")
    tampered = f"{payload[:-2]}xx.{signature}"
    for token in ("forged", tampered, f"{payload}.", "ü.ü", real + "x"):
        fields = await invalid(
            partner.client.recipes.ListRecipes(rpb.ListRecipesRequest(page_size=1, page_token=token))
        )
        assert list(fields) == ["page_token"], token
        assert "next_page_token" in fields["page_token"]


async def test_an_update_mask_naming_an_unknown_field(partner: PartnerClient) -> None:
    await partner.client.recipes.CreateRecipe(create_recipe("my-coffee-company", "lungo-customato"))
    change = recipe(250)
    change.name = LUNGO
    mask = field_mask_pb2.FieldMask(paths=["product_properties.default_volume_ml", "product_properties.name"])
    fields = await invalid(
        partner.client.recipes.UpdateRecipe(rpb.UpdateRecipeRequest(recipe=change, update_mask=mask))
    )
    assert list(fields) == ["update_mask.paths[1]"]
    assert "'product_properties.name'" in fields["update_mask.paths[1]"]
    assert "product_properties.default_volume_ml" in fields["update_mask.paths[1]"]  # says what is allowed
    unchanged = await partner.client.recipes.GetRecipe(rpb.GetRecipeRequest(name=LUNGO))
    assert unchanged.product_properties.default_volume_ml == 300


async def test_an_update_that_names_nothing(partner: PartnerClient) -> None:
    await partner.client.recipes.CreateRecipe(create_recipe("my-coffee-company", "lungo-customato"))
    fields = await invalid(
        partner.client.recipes.UpdateRecipe(rpb.UpdateRecipeRequest(recipe=rpb.Recipe(name=LUNGO)))
    )
    assert list(fields) == ["update_mask"]


async def test_several_bad_fields_are_all_listed(partner: PartnerClient) -> None:
    request = rpb.CreateRecipeRequest(
        namespace="",
        id_component="-bad-",
        recipe=rpb.Recipe(
            product_properties=rpb.ProductProperties(default_volume_ml=9000),
            execution_properties=rpb.ExecutionProperties(program_id="lungo program"),
        ),
    )
    fields = await invalid(partner.client.recipes.CreateRecipe(request))
    assert set(fields) == {
        "namespace",
        "id_component",
        "recipe.product_properties.default_volume_ml",
        "recipe.execution_properties.program_id",
    }


async def test_nasty_names_are_invalid_or_not_found_never_internal(anonymous: MeshClient) -> None:
    ok = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
    for text in NASTY:
        calls: list[Awaitable[object]] = [
            anonymous.recipes.GetRecipe(rpb.GetRecipeRequest(name=text)),
            anonymous.recipes.GetRecipeL10n(rpb.GetRecipeL10nRequest(name=text)),
            anonymous.layouts.GetLayout(lpb.GetLayoutRequest(name=text)),
            anonymous.formatters.GetVolumeFormatter(fpb.GetVolumeFormatterRequest(name=text)),
            anonymous.recipes.ListRecipes(rpb.ListRecipesRequest(page_token=text or "x")),
            anonymous.recipes.SearchRecipes(rpb.SearchRecipesRequest(language_code="en", layout=text)),
        ]
        for call in calls:
            try:
                await call
            except grpc.aio.AioRpcError as error:
                assert error.code() in ok, (text, error.code(), error.details())
            else:
                raise AssertionError(f"{text!r} was accepted")
