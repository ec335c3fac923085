"""A recipe's localised values: put per language or country, read back, country over language."""

from __future__ import annotations

import grpc

from brewmesh.client import MeshClient
from brewmesh.recipes.v1 import layouts_pb2 as lpb
from brewmesh.recipes.v1 import recipes_pb2 as rpb
from tests.conftest import PartnerClient
from tests.test_recipes_support import (
    CLIP,
    DESCRIPTION,
    TITLE,
    create_recipe,
    fails,
    invalid,
    l10n,
    layout,
    search_values,
)

LUNGO = "recipes/my-coffee-company:lungo-customato"


async def make_lungo(partner: PartnerClient) -> None:
    await partner.client.recipes.CreateRecipe(create_recipe("my-coffee-company", "lungo-customato"))


async def test_put_values_for_a_language_and_read_them_back(
    partner: PartnerClient, anonymous: MeshClient
) -> None:
    await make_lungo(partner)
    put = await partner.client.recipes.PutRecipeL10n(
        l10n("en", recipe_name=LUNGO, **search_values("Lungo customato", "A long coffee, your way"))
    )
    assert put.name == f"{LUNGO}/l10n/en"
    assert dict(put.values) == search_values("Lungo customato", "A long coffee, your way")
    fetched = await anonymous.recipes.GetRecipeL10n(rpb.GetRecipeL10nRequest(name=f"{LUNGO}/l10n/en"))
    assert fetched == put


async def test_put_replaces_all_values_of_that_locale(partner: PartnerClient) -> None:
    await make_lungo(partner)
    client = partner.client.recipes
    await client.PutRecipeL10n(l10n("en", recipe_name=LUNGO, **search_values("Lungo", "A long coffee")))
    await client.PutRecipeL10n(l10n("en", recipe_name=LUNGO, search_title="Only a title"))
    fetched = await client.GetRecipeL10n(rpb.GetRecipeL10nRequest(name=f"{LUNGO}/l10n/en"))
    assert dict(fetched.values) == {TITLE: "Only a title"}


async def test_country_values_are_kept_apart_and_override_field_by_field(partner: PartnerClient) -> None:
    await make_lungo(partner)
    client = partner.client.recipes
    await client.PutRecipeL10n(
        l10n("en", recipe_name=LUNGO, **search_values("Lungo", "A long coffee, your way"))
    )
    put_us = await client.PutRecipeL10n(l10n("en", "US", recipe_name=LUNGO, search_title="Long Black"))
    assert put_us.name == f"{LUNGO}/l10n/en-US"
    assert dict(put_us.values) == {TITLE: "Long Black"}

    tiny = layout(
        "recipe_card", (TITLE, DESCRIPTION), search_title=(0, 5, CLIP), search_description=(0, 0, CLIP)
    )
    await partner.client.layouts.CreateLayout(
        lpb.CreateLayoutRequest(layout_id="my-coffee-company:tiny", layout=tiny)
    )

    async def check(country: str) -> lpb.CheckRecipeResponse:
        request = lpb.CheckRecipeRequest(
            recipe=LUNGO, layout="layouts/my-coffee-company:tiny", language_code="en", country_code=country
        )
        return await partner.client.layouts.CheckRecipe(request)

    assert (await check("")).satisfied
    assert (await check("GB")).satisfied  # no values for GB: the language's
    in_us = await check("US")  # the US title, the language's description
    assert [(v.field, v.kind, v.length) for v in in_us.violations] == [
        (TITLE, lpb.LayoutViolation.KIND_TOO_LONG, len("Long Black"))
    ]


async def test_values_for_a_missing_recipe_are_not_found(partner: PartnerClient) -> None:
    error = await fails(
        partner.client.recipes.PutRecipeL10n(l10n("en", recipe_name=LUNGO, search_title="Lungo")),
        grpc.StatusCode.NOT_FOUND,
    )
    assert LUNGO in (error.details() or "")
    await make_lungo(partner)
    error = await fails(
        partner.client.recipes.GetRecipeL10n(rpb.GetRecipeL10nRequest(name=f"{LUNGO}/l10n/fr")),
        grpc.StatusCode.NOT_FOUND,
    )
    assert "'fr'" in (error.details() or "")


async def test_value_keys_and_lengths_are_checked_all_at_once(partner: PartnerClient) -> None:
    await make_lungo(partner)
    request = rpb.PutRecipeL10nRequest(
        recipe=LUNGO,
        l10n=rpb.RecipeL10n(
            language_code="english",
            country_code="us",
            values={"Search Title": "fine", DESCRIPTION: "x" * 1001, "empty_one": ""},
        ),
    )
    fields = await invalid(partner.client.recipes.PutRecipeL10n(request))
    assert set(fields) == {
        "l10n.language_code",
        "l10n.country_code",
        'l10n.values["Search Title"]',
        'l10n.values["search_description"]',
        'l10n.values["empty_one"]',
    }
    assert "lower_snake_case" in fields['l10n.values["Search Title"]']
    assert "at most 1000" in fields['l10n.values["search_description"]']


async def test_values_are_required(partner: PartnerClient) -> None:
    await make_lungo(partner)
    fields = await invalid(partner.client.recipes.PutRecipeL10n(l10n("en", recipe_name=LUNGO)))
    assert list(fields) == ["l10n.values"]


async def test_a_malformed_l10n_name_is_invalid(anonymous: MeshClient) -> None:
    for name in (LUNGO, f"{LUNGO}/l10n/english", f"{LUNGO}/l10n/en-us", "recipes/Bad:x/l10n/en"):
        fields = await invalid(anonymous.recipes.GetRecipeL10n(rpb.GetRecipeL10nRequest(name=name)))
        assert list(fields) == ["name"], name
