"""Layouts: the standard search layout, partners' own layouts, and checking a recipe against one."""

from __future__ import annotations

from pathlib import Path

import grpc

from brewmesh.client import MeshClient, connect
from brewmesh.mesh import Mesh
from brewmesh.recipes.v1 import layouts_pb2 as lpb
from brewmesh.settings import Settings
from tests.conftest import PartnerClient, embedded_only
from tests.test_recipes_support import (
    CLIP,
    DESCRIPTION,
    ELLIPSIS,
    LAYOUTS_API,
    SEARCH_LAYOUT,
    TITLE,
    create_recipe,
    event_types,
    fails,
    invalid,
    l10n,
    layout,
    search_values,
)

LUNGO = "recipes/my-coffee-company:lungo-customato"
CARD = "layouts/my-coffee-company:card"


def card() -> lpb.Layout:
    return layout("recipe_card", (TITLE,), search_title=(2, 20, CLIP), card_subtitle=(0, 30, ELLIPSIS))


async def test_the_standard_search_layout_is_there_from_the_first_start(anonymous: MeshClient) -> None:
    standard = await anonymous.layouts.GetLayout(lpb.GetLayoutRequest(name=SEARCH_LAYOUT))
    assert standard.kind == "recipe_search"
    assert [p.field for p in standard.properties] == [TITLE, DESCRIPTION]
    assert list(standard.required_fields) == [TITLE, DESCRIPTION]
    for prop in standard.properties:
        assert 0 < prop.view.min_length < prop.view.max_length
        assert prop.view.overflow == lpb.FieldView.OVERFLOW_ELLIPSIS


async def test_the_standard_layout_is_seeded_once_across_restarts(tmp_path: Path) -> None:
    for _ in range(2):
        running = await Mesh.start(Settings(data_dir=tmp_path / "data"))
        try:
            async with connect(f"127.0.0.1:{running.port}") as client:
                listed = await client.layouts.ListLayouts(lpb.ListLayoutsRequest(kind="recipe_search"))
                assert [x.name for x in listed.layouts] == [SEARCH_LAYOUT]
            assert await event_types(running, LAYOUTS_API) == ["layout_created"]
        finally:
            await running.stop(grace=0)


@embedded_only
async def test_a_partner_creates_its_own_layout(
    partner: PartnerClient, anonymous: MeshClient, mesh: Mesh
) -> None:
    created = await partner.client.layouts.CreateLayout(
        lpb.CreateLayoutRequest(layout_id="my-coffee-company:card", layout=card())
    )
    assert created.name == CARD
    assert [(p.field, p.view.max_length, p.view.overflow) for p in created.properties] == [
        (TITLE, 20, CLIP),
        ("card_subtitle", 30, ELLIPSIS),
    ]
    assert await anonymous.layouts.GetLayout(lpb.GetLayoutRequest(name=CARD)) == created
    assert (await event_types(mesh, LAYOUTS_API))[-1] == "layout_created"


async def test_an_unspecified_overflow_is_an_ellipsis(partner: PartnerClient) -> None:
    plain = layout("recipe_card", (), search_title=(0, 10, lpb.FieldView.OVERFLOW_UNSPECIFIED))
    created = await partner.client.layouts.CreateLayout(
        lpb.CreateLayoutRequest(layout_id="my-coffee-company:plain", layout=plain)
    )
    assert created.properties[0].view.overflow == ELLIPSIS


async def test_layout_ids_are_unique_and_scoped_to_the_namespace(
    partner: PartnerClient, other_partner: PartnerClient, admin: MeshClient
) -> None:
    request = lpb.CreateLayoutRequest(layout_id="my-coffee-company:card", layout=card())
    await partner.client.layouts.CreateLayout(request)
    await fails(partner.client.layouts.CreateLayout(request), grpc.StatusCode.ALREADY_EXISTS)
    await fails(
        admin.layouts.CreateLayout(lpb.CreateLayoutRequest(layout_id="common:recipe-search", layout=card())),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    other = lpb.CreateLayoutRequest(layout_id="my-coffee-company:other", layout=card())
    await fails(other_partner.client.layouts.CreateLayout(other), grpc.StatusCode.PERMISSION_DENIED)
    await fails(
        partner.client.layouts.CreateLayout(lpb.CreateLayoutRequest(layout_id="common:mine", layout=card())),
        grpc.StatusCode.PERMISSION_DENIED,
    )


async def test_a_layout_reports_every_violation(partner: PartnerClient) -> None:
    bad = lpb.Layout(
        kind="Recipe Card",
        properties=[
            lpb.LayoutProperty(field=TITLE, view=lpb.FieldView(min_length=10, max_length=5)),
            lpb.LayoutProperty(field=TITLE, view=lpb.FieldView(min_length=-1, max_length=-2)),
            lpb.LayoutProperty(field="Subtitle", view=lpb.FieldView(overflow=7)),  # type: ignore[arg-type]
        ],
        required_fields=["missing_field"],
    )
    fields = await invalid(
        partner.client.layouts.CreateLayout(
            lpb.CreateLayoutRequest(layout_id="my-coffee-company:", layout=bad)
        )
    )
    assert set(fields) == {
        "layout_id",
        "layout.kind",
        "layout.properties[0].view.max_length",
        "layout.properties[1].field",
        "layout.properties[1].view.min_length",
        "layout.properties[1].view.max_length",
        "layout.properties[2].field",
        "layout.properties[2].view.overflow",
        "layout.required_fields[0]",
    }
    assert "min_length 10" in fields["layout.properties[0].view.max_length"]
    assert "twice" in fields["layout.properties[1].field"]


async def test_a_layout_needs_properties(partner: PartnerClient) -> None:
    fields = await invalid(
        partner.client.layouts.CreateLayout(
            lpb.CreateLayoutRequest(
                layout_id="my-coffee-company:empty", layout=lpb.Layout(kind="recipe_card")
            )
        )
    )
    assert list(fields) == ["layout.properties"]


async def test_list_layouts_by_kind_in_pages(partner: PartnerClient, anonymous: MeshClient) -> None:
    for i in range(5):
        request = lpb.CreateLayoutRequest(layout_id=f"my-coffee-company:card-{i}", layout=card())
        await partner.client.layouts.CreateLayout(request)
    names: list[str] = []
    token = ""
    for _ in range(3):
        page = await anonymous.layouts.ListLayouts(
            lpb.ListLayoutsRequest(kind="recipe_card", page_size=2, page_token=token)
        )
        names += [x.name for x in page.layouts]
        token = page.next_page_token
    assert not token
    assert names == [f"layouts/my-coffee-company:card-{i}" for i in range(5)]
    everything = await anonymous.layouts.ListLayouts(lpb.ListLayoutsRequest())
    assert everything.layouts[0].name == SEARCH_LAYOUT
    assert len(everything.layouts) == 6


async def test_check_recipe_lists_every_violation_in_layout_order(partner: PartnerClient) -> None:
    await partner.client.recipes.CreateRecipe(create_recipe("my-coffee-company", "lungo-customato"))
    await partner.client.recipes.PutRecipeL10n(
        l10n("en", recipe_name=LUNGO, search_description="Short")  # title missing, description too short
    )
    await partner.client.recipes.PutRecipeL10n(
        l10n(
            "de",
            recipe_name=LUNGO,
            **search_values("Ein sehr langer Kaffee mit einem viel zu langen Namen", "Lang"),
        )
    )

    async def check(language: str) -> lpb.CheckRecipeResponse:
        request = lpb.CheckRecipeRequest(recipe=LUNGO, layout=SEARCH_LAYOUT, language_code=language)
        return await partner.client.layouts.CheckRecipe(request)

    english = await check("en")
    assert not english.satisfied
    assert [(v.field, v.kind, v.length, v.limit) for v in english.violations] == [
        (TITLE, lpb.LayoutViolation.KIND_MISSING_REQUIRED, 0, 0),
        (DESCRIPTION, lpb.LayoutViolation.KIND_TOO_SHORT, 5, 10),
    ]
    assert "PutRecipeL10n" in english.violations[0].description
    german = await check("de")
    assert [(v.field, v.kind, v.limit) for v in german.violations] == [
        (TITLE, lpb.LayoutViolation.KIND_TOO_LONG, 40),
        (DESCRIPTION, lpb.LayoutViolation.KIND_TOO_SHORT, 10),
    ]
    assert "shorten" in german.violations[0].description
    french = await check("fr")  # no values at all
    assert [v.kind for v in french.violations] == [lpb.LayoutViolation.KIND_MISSING_REQUIRED] * 2


async def test_check_recipe_is_satisfied_by_good_values(partner: PartnerClient) -> None:
    await partner.client.recipes.CreateRecipe(create_recipe("my-coffee-company", "lungo-customato"))
    await partner.client.recipes.PutRecipeL10n(
        l10n("en", recipe_name=LUNGO, **search_values("Lungo customato", "A long coffee, your way"))
    )
    result = await partner.client.layouts.CheckRecipe(
        lpb.CheckRecipeRequest(recipe=LUNGO, layout=SEARCH_LAYOUT, language_code="en", country_code="US")
    )
    assert result.satisfied and not result.violations


async def test_check_recipe_of_missing_things_is_not_found(partner: PartnerClient) -> None:
    missing_recipe = lpb.CheckRecipeRequest(recipe=LUNGO, layout=SEARCH_LAYOUT, language_code="en")
    await fails(partner.client.layouts.CheckRecipe(missing_recipe), grpc.StatusCode.NOT_FOUND)
    await partner.client.recipes.CreateRecipe(create_recipe("my-coffee-company", "lungo-customato"))
    missing_layout = lpb.CheckRecipeRequest(recipe=LUNGO, layout=CARD, language_code="en")
    error = await fails(partner.client.layouts.CheckRecipe(missing_layout), grpc.StatusCode.NOT_FOUND)
    assert CARD in (error.details() or "")


async def test_check_recipe_request_is_validated(anonymous: MeshClient) -> None:
    request = lpb.CheckRecipeRequest(
        recipe="lungo", layout="layouts/x", language_code="EN", country_code="usa"
    )
    fields = await invalid(anonymous.layouts.CheckRecipe(request))
    assert set(fields) == {"recipe", "layout", "language_code", "country_code"}
