"""BuildRecipe: a recipe with its values, layouts and formatters in one request, all or nothing."""

from __future__ import annotations

import grpc

from brewmesh.client import MeshClient
from brewmesh.mesh import Mesh
from brewmesh.recipes.v1 import formatters_pb2 as fpb
from brewmesh.recipes.v1 import layouts_pb2 as lpb
from brewmesh.recipes.v1 import recipes_pb2 as rpb
from brewmesh.storage import Tx
from tests.conftest import PartnerClient, embedded_only
from tests.test_recipes_support import (
    CLIP,
    ELLIPSIS,
    FORMATTERS_API,
    LAYOUTS_API,
    RECIPES_API,
    TITLE,
    create_recipe,
    event_types,
    fails,
    formatter,
    invalid,
    l10n,
    layout,
    put_formatter,
    recipe_names,
    search_values,
)

LUNGO = "recipes/my-coffee-company:lungo-customato"
SEARCH = "layouts/my-coffee-company:search"


def search_layout() -> lpb.Layout:
    return layout("recipe_search", (TITLE,), search_title=(3, 30, ELLIPSIS), search_subtitle=(0, 60, CLIP))


def build_request(
    id_component: str = "lungo-customato", title: str = "Lungo customato"
) -> rpb.BuildRecipeRequest:
    return rpb.BuildRecipeRequest(
        recipe=create_recipe("my-coffee-company", id_component, 300),
        l10n=[
            l10n("en", **search_values(title, "A long coffee, made your way")),
            l10n("en", "US", search_title=f"{title} (US)"),
        ],
        layouts=[lpb.CreateLayoutRequest(layout_id="my-coffee-company:search", layout=search_layout())],
        volume_formatters=[
            put_formatter(formatter("en", template="{volume} ml")),
            put_formatter(formatter("en", "US", template="{volume} fl oz", divide_by=30)),
        ],
    )


async def stored(mesh: Mesh) -> dict[str, int]:
    """How many rows each recipes table holds (nothing of a failed build may be left)."""

    def count(tx: Tx) -> dict[str, int]:
        tables = ("recipes", "recipe_l10n", "layouts", "volume_formatters")
        return {t: int(tx.fetchall(f"SELECT COUNT(*) AS n FROM {t}")[0]["n"]) for t in tables}

    return await mesh.runtime.store.read(count)


async def all_events(mesh: Mesh) -> list[str]:
    return [e for api in (RECIPES_API, LAYOUTS_API, FORMATTERS_API) for e in await event_types(mesh, api)]


async def test_build_creates_everything_and_search_shows_it(
    partner: PartnerClient, anonymous: MeshClient
) -> None:
    built = await partner.client.recipes.BuildRecipe(build_request())
    assert built.recipe.name == LUNGO
    assert [x.name for x in built.l10n] == [f"{LUNGO}/l10n/en", f"{LUNGO}/l10n/en-US"]
    assert [x.name for x in built.layouts] == [SEARCH]
    assert [x.name for x in built.volume_formatters] == ["volumeFormatters/en", "volumeFormatters/en-US"]
    assert {f.creator for f in built.volume_formatters} == {"my-coffee-company"}

    for country, title, volume in (
        ("US", "Lungo customato (US)", "10 fl oz"),
        ("GB", "Lungo customato", "300 ml"),
    ):
        found = await anonymous.recipes.SearchRecipes(
            rpb.SearchRecipesRequest(language_code="en", country_code=country, layout=SEARCH)
        )
        assert [(r.recipe, r.fields[0].text, r.default_volume) for r in found.results] == [
            (LUNGO, title, volume)
        ]


@embedded_only
async def test_build_fires_an_event_for_each_thing_it_made(partner: PartnerClient, mesh: Mesh) -> None:
    await partner.client.recipes.BuildRecipe(build_request())
    assert await event_types(mesh, RECIPES_API) == ["recipe_created", "recipe_l10n_put", "recipe_l10n_put"]
    assert (await event_types(mesh, LAYOUTS_API))[-1:] == ["layout_created"]
    assert await event_types(mesh, FORMATTERS_API) == ["volume_formatter_put"] * 2


@embedded_only
async def test_identical_layouts_and_formatters_are_reused(
    partner: PartnerClient, other_partner: PartnerClient, mesh: Mesh
) -> None:
    await partner.client.recipes.BuildRecipe(build_request())
    before = await all_events(mesh)
    second = await partner.client.recipes.BuildRecipe(build_request("ristretto", "Ristretto"))
    assert [x.name for x in second.layouts] == [SEARCH]
    assert len(await all_events(mesh)) == len(before) + 3  # the recipe and its two l10n puts only

    # Another partner's identical formatters are reused too: nothing changes.
    rival = rpb.BuildRecipeRequest(
        recipe=create_recipe("rival-roasters", "espresso"),
        volume_formatters=[put_formatter(formatter("en", "US", template="{volume} fl oz", divide_by=30))],
    )
    reused = await other_partner.client.recipes.BuildRecipe(rival)
    assert reused.volume_formatters[0].creator == "my-coffee-company"


@embedded_only
async def test_a_layout_that_exists_with_other_content_fails_the_whole_build(
    partner: PartnerClient, mesh: Mesh
) -> None:
    await partner.client.layouts.CreateLayout(
        lpb.CreateLayoutRequest(
            layout_id="my-coffee-company:search", layout=layout("recipe_search", (), other=(0, 9, CLIP))
        )
    )
    before, events_before = await stored(mesh), await all_events(mesh)
    error = await fails(partner.client.recipes.BuildRecipe(build_request()), grpc.StatusCode.ALREADY_EXISTS)
    assert SEARCH in (error.details() or "")
    assert await stored(mesh) == before
    assert await all_events(mesh) == events_before
    assert await recipe_names(partner.client) == []


@embedded_only
async def test_another_partners_formatter_with_other_content_fails_the_whole_build(
    partner: PartnerClient, other_partner: PartnerClient, mesh: Mesh
) -> None:
    await other_partner.client.formatters.PutVolumeFormatter(
        put_formatter(formatter("en", "US", template="{volume} oz", divide_by=29.57, decimals=1))
    )
    before, events_before = await stored(mesh), await all_events(mesh)
    error = await fails(
        partner.client.recipes.BuildRecipe(build_request()), grpc.StatusCode.PERMISSION_DENIED
    )
    assert "volumeFormatters/en-US" in (error.details() or "")
    assert await stored(mesh) == before
    assert await all_events(mesh) == events_before
    kept = await partner.client.formatters.GetVolumeFormatter(
        fpb.GetVolumeFormatterRequest(name="volumeFormatters/en-US")
    )
    assert kept.template == "{volume} oz"


@embedded_only
async def test_an_existing_recipe_fails_the_whole_build(partner: PartnerClient, mesh: Mesh) -> None:
    await partner.client.recipes.CreateRecipe(create_recipe("my-coffee-company", "lungo-customato"))
    before, events_before = await stored(mesh), await all_events(mesh)
    await fails(partner.client.recipes.BuildRecipe(build_request()), grpc.StatusCode.ALREADY_EXISTS)
    assert await stored(mesh) == before
    assert await all_events(mesh) == events_before


@embedded_only
async def test_a_build_whose_last_part_is_invalid_creates_nothing(partner: PartnerClient, mesh: Mesh) -> None:
    before, events_before = await stored(mesh), await all_events(mesh)
    request = build_request()
    request.volume_formatters[1].volume_formatter.template = "fl oz"
    fields = await invalid(partner.client.recipes.BuildRecipe(request))
    assert list(fields) == ["volume_formatters[1].volume_formatter.template"]
    assert await stored(mesh) == before
    assert await all_events(mesh) == events_before
    assert await recipe_names(partner.client) == []
    await fails(
        partner.client.layouts.GetLayout(lpb.GetLayoutRequest(name=SEARCH)), grpc.StatusCode.NOT_FOUND
    )
    listed = await partner.client.formatters.ListVolumeFormatters(fpb.ListVolumeFormattersRequest())
    assert list(listed.volume_formatters) == []


async def test_a_build_reports_every_violation_with_its_path(partner: PartnerClient) -> None:
    request = build_request()
    request.recipe.id_component = "Lungo!"
    request.recipe.recipe.product_properties.default_volume_ml = -1
    request.l10n[0].recipe = LUNGO
    request.l10n[1].l10n.country_code = ""  # now repeats 'en'
    request.layouts[0].layout.properties[1].view.max_length = -5
    request.layouts.append(
        lpb.CreateLayoutRequest(layout_id="my-coffee-company:search", layout=search_layout())
    )
    request.volume_formatters[0].volume_formatter.transform.operand = 0
    fields = await invalid(partner.client.recipes.BuildRecipe(request))
    assert set(fields) == {
        "recipe.id_component",
        "recipe.recipe.product_properties.default_volume_ml",
        "l10n[0].recipe",
        "l10n[1].l10n",
        "layouts[0].layout.properties[1].view.max_length",
        "layouts[1].layout_id",
        "volume_formatters[0].volume_formatter.transform.operation",
        "volume_formatters[0].volume_formatter.transform.operand",
    }


@embedded_only
async def test_a_build_writes_only_into_the_callers_namespace(
    partner: PartnerClient, other_partner: PartnerClient, mesh: Mesh
) -> None:
    await fails(other_partner.client.recipes.BuildRecipe(build_request()), grpc.StatusCode.PERMISSION_DENIED)
    sneaky = rpb.BuildRecipeRequest(
        recipe=create_recipe("rival-roasters", "espresso"),
        layouts=[lpb.CreateLayoutRequest(layout_id="my-coffee-company:search", layout=search_layout())],
    )
    await fails(other_partner.client.recipes.BuildRecipe(sneaky), grpc.StatusCode.PERMISSION_DENIED)
    assert (await stored(mesh))["recipes"] == 0


async def test_a_build_needs_a_key(anonymous: MeshClient) -> None:
    await fails(anonymous.recipes.BuildRecipe(build_request()), grpc.StatusCode.UNAUTHENTICATED)
