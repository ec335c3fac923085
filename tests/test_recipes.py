"""Recipes: create, read, list, update with a field mask, delete; who may write; events."""

from __future__ import annotations

import grpc
from google.protobuf import field_mask_pb2, json_format

from brewmesh.bus.v1 import event_bus_pb2 as bus_pb
from brewmesh.client import MeshClient
from brewmesh.mesh import Mesh
from brewmesh.recipes.v1 import recipes_pb2 as rpb
from tests.conftest import PartnerClient, embedded_only
from tests.test_recipes_support import (
    RECIPES_API,
    create_recipe,
    event_types,
    fails,
    l10n,
    logged_events,
    recipe,
    recipe_names,
    search_values,
)

LUNGO = "recipes/my-coffee-company:lungo-customato"


async def test_partner_creates_a_recipe_in_its_namespace_and_anyone_reads_it(
    partner: PartnerClient, anonymous: MeshClient
) -> None:
    request = create_recipe("my-coffee-company", "lungo-customato", 300, strength=4)
    created = await partner.client.recipes.CreateRecipe(request)
    assert created.name == LUNGO
    assert created.product_properties.default_volume_ml == 300
    assert created.execution_properties.program_id == "lungo"
    assert json_format.MessageToDict(created.execution_properties.parameters) == {"strength": 4}
    assert created.create_time.seconds > 0 and created.update_time == created.create_time

    fetched = await anonymous.recipes.GetRecipe(rpb.GetRecipeRequest(name=LUNGO))
    assert fetched == created


async def test_creating_the_same_id_twice_is_already_exists(partner: PartnerClient) -> None:
    await partner.client.recipes.CreateRecipe(create_recipe("my-coffee-company", "lungo-customato"))
    error = await fails(
        partner.client.recipes.CreateRecipe(create_recipe("my-coffee-company", "lungo-customato", 120)),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert LUNGO in (error.details() or "")
    fetched = await partner.client.recipes.GetRecipe(rpb.GetRecipeRequest(name=LUNGO))
    assert fetched.product_properties.default_volume_ml == 300


async def test_getting_a_missing_recipe_is_not_found(anonymous: MeshClient) -> None:
    error = await fails(
        anonymous.recipes.GetRecipe(rpb.GetRecipeRequest(name=LUNGO)), grpc.StatusCode.NOT_FOUND
    )
    assert LUNGO in (error.details() or "")


async def test_writing_needs_a_key(anonymous: MeshClient) -> None:
    error = await fails(
        anonymous.recipes.CreateRecipe(create_recipe("my-coffee-company", "lungo")),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    assert "authorization: Bearer" in (error.details() or "")
    await fails(
        anonymous.recipes.DeleteRecipe(rpb.DeleteRecipeRequest(name=LUNGO)), grpc.StatusCode.UNAUTHENTICATED
    )


async def test_a_partner_may_not_write_into_another_namespace(
    partner: PartnerClient, other_partner: PartnerClient
) -> None:
    await partner.client.recipes.CreateRecipe(create_recipe("my-coffee-company", "lungo-customato"))
    rival = other_partner.client.recipes
    error = await fails(
        rival.CreateRecipe(create_recipe("my-coffee-company", "fake")), grpc.StatusCode.PERMISSION_DENIED
    )
    assert "rival-roasters" in (error.details() or "") and "my-coffee-company" in (error.details() or "")
    update = rpb.UpdateRecipeRequest(
        recipe=rpb.Recipe(name=LUNGO, product_properties=rpb.ProductProperties(default_volume_ml=10))
    )
    await fails(rival.UpdateRecipe(update), grpc.StatusCode.PERMISSION_DENIED)
    await fails(rival.DeleteRecipe(rpb.DeleteRecipeRequest(name=LUNGO)), grpc.StatusCode.PERMISSION_DENIED)
    await fails(
        rival.PutRecipeL10n(l10n("en", recipe_name=LUNGO, search_title="Hacked")),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert (
        await partner.client.recipes.GetRecipe(rpb.GetRecipeRequest(name=LUNGO))
    ).product_properties.default_volume_ml == 300


async def test_common_is_the_admins_and_the_admin_may_write_anywhere(
    admin: MeshClient, partner: PartnerClient
) -> None:
    await fails(
        partner.client.recipes.CreateRecipe(create_recipe("common", "espresso")),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await admin.recipes.CreateRecipe(create_recipe("common", "espresso"))
    await admin.recipes.CreateRecipe(create_recipe("my-coffee-company", "made-by-admin"))
    assert await recipe_names(admin) == ["recipes/common:espresso", "recipes/my-coffee-company:made-by-admin"]


async def test_list_pages_through_recipes_in_name_order(partner: PartnerClient, admin: MeshClient) -> None:
    ids = [f"recipe-{i:02d}" for i in range(7)]
    for id_component in reversed(ids):
        await partner.client.recipes.CreateRecipe(create_recipe("my-coffee-company", id_component))
    await admin.recipes.CreateRecipe(create_recipe("common", "espresso"))

    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await admin.recipes.ListRecipes(
            rpb.ListRecipesRequest(namespace="my-coffee-company", page_size=3, page_token=token)
        )
        pages += 1
        assert len(page.recipes) <= 3
        seen += [r.name for r in page.recipes]
        token = page.next_page_token
        if not token:
            break
    assert pages == 3
    assert seen == [f"recipes/my-coffee-company:{i}" for i in ids]
    everything = await admin.recipes.ListRecipes(rpb.ListRecipesRequest())
    assert len(everything.recipes) == 8 and not everything.next_page_token
    assert everything.recipes[0].name == "recipes/common:espresso"


async def test_a_page_token_only_works_with_the_same_filter(partner: PartnerClient) -> None:
    for i in range(3):
        await partner.client.recipes.CreateRecipe(create_recipe("my-coffee-company", f"r{i}"))
    first = await partner.client.recipes.ListRecipes(
        rpb.ListRecipesRequest(namespace="my-coffee-company", page_size=1)
    )
    assert first.next_page_token
    error = await fails(
        partner.client.recipes.ListRecipes(
            rpb.ListRecipesRequest(page_size=1, page_token=first.next_page_token)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "page_token" in (error.details() or "")


async def test_update_changes_only_the_fields_in_the_mask(partner: PartnerClient) -> None:
    await partner.client.recipes.CreateRecipe(
        create_recipe("my-coffee-company", "lungo-customato", 300, strength=4)
    )
    change = recipe(volume_ml=250, program_id="other-program")
    change.name = LUNGO
    updated = await partner.client.recipes.UpdateRecipe(
        rpb.UpdateRecipeRequest(
            recipe=change,
            update_mask=field_mask_pb2.FieldMask(paths=["product_properties.default_volume_ml"]),
        )
    )
    assert updated.product_properties.default_volume_ml == 250
    assert updated.execution_properties.program_id == "lungo"
    assert json_format.MessageToDict(updated.execution_properties.parameters) == {"strength": 4}
    assert updated.update_time.ToNanoseconds() > updated.create_time.ToNanoseconds()
    assert await partner.client.recipes.GetRecipe(rpb.GetRecipeRequest(name=LUNGO)) == updated


async def test_update_with_an_empty_mask_changes_the_fields_set(partner: PartnerClient) -> None:
    await partner.client.recipes.CreateRecipe(
        create_recipe("my-coffee-company", "lungo-customato", 300, strength=4)
    )
    change = rpb.Recipe(name=LUNGO, execution_properties=rpb.ExecutionProperties(program_id="lungo-v2"))
    updated = await partner.client.recipes.UpdateRecipe(rpb.UpdateRecipeRequest(recipe=change))
    assert updated.execution_properties.program_id == "lungo-v2"
    assert updated.product_properties.default_volume_ml == 300
    assert json_format.MessageToDict(updated.execution_properties.parameters) == {"strength": 4}


async def test_update_with_star_replaces_everything(partner: PartnerClient) -> None:
    await partner.client.recipes.CreateRecipe(
        create_recipe("my-coffee-company", "lungo-customato", 300, strength=4)
    )
    change = recipe(volume_ml=90, program_id="ristretto")
    change.name = LUNGO
    updated = await partner.client.recipes.UpdateRecipe(
        rpb.UpdateRecipeRequest(recipe=change, update_mask=field_mask_pb2.FieldMask(paths=["*"]))
    )
    assert updated.product_properties.default_volume_ml == 90
    assert updated.execution_properties.program_id == "ristretto"
    assert json_format.MessageToDict(updated.execution_properties.parameters) == {}


async def test_updating_a_missing_recipe_is_not_found(partner: PartnerClient) -> None:
    change = rpb.Recipe(name=LUNGO, product_properties=rpb.ProductProperties(default_volume_ml=100))
    await fails(
        partner.client.recipes.UpdateRecipe(rpb.UpdateRecipeRequest(recipe=change)), grpc.StatusCode.NOT_FOUND
    )


async def test_delete_removes_the_recipe_and_its_localised_values(partner: PartnerClient, mesh: Mesh) -> None:
    client = partner.client.recipes
    await client.CreateRecipe(create_recipe("my-coffee-company", "lungo-customato"))
    await client.PutRecipeL10n(l10n("en", recipe_name=LUNGO, **search_values("Lungo", "A long coffee")))
    await client.DeleteRecipe(rpb.DeleteRecipeRequest(name=LUNGO))
    await fails(client.GetRecipe(rpb.GetRecipeRequest(name=LUNGO)), grpc.StatusCode.NOT_FOUND)
    await fails(
        client.GetRecipeL10n(rpb.GetRecipeL10nRequest(name=f"{LUNGO}/l10n/en")), grpc.StatusCode.NOT_FOUND
    )
    await fails(client.DeleteRecipe(rpb.DeleteRecipeRequest(name=LUNGO)), grpc.StatusCode.NOT_FOUND)

    # Created again under the same id, it starts without the old values.
    await client.CreateRecipe(create_recipe("my-coffee-company", "lungo-customato"))
    await fails(
        client.GetRecipeL10n(rpb.GetRecipeL10nRequest(name=f"{LUNGO}/l10n/en")), grpc.StatusCode.NOT_FOUND
    )


async def test_a_subscriber_sees_recipe_created(admin: MeshClient, partner: PartnerClient) -> None:
    stream = admin.bus.Subscribe(bus_pb.SubscribeRequest(api=RECIPES_API, event_types=["recipe_created"]))
    await partner.client.recipes.CreateRecipe(create_recipe("my-coffee-company", "lungo-customato"))
    event = await anext(aiter(stream))
    stream.cancel()
    assert event.type == "recipe_created"
    payload = rpb.RecipeCreatedEvent()
    assert event.payload.Unpack(payload)
    assert payload.recipe.name == LUNGO
    assert payload.recipe.product_properties.default_volume_ml == 300


@embedded_only
async def test_changes_fire_their_events_with_what_changed(partner: PartnerClient, mesh: Mesh) -> None:
    client = partner.client.recipes
    await client.CreateRecipe(create_recipe("my-coffee-company", "lungo-customato"))
    await client.PutRecipeL10n(l10n("en", recipe_name=LUNGO, **search_values("Lungo", "A long coffee")))
    change = rpb.Recipe(name=LUNGO, product_properties=rpb.ProductProperties(default_volume_ml=250))
    await client.UpdateRecipe(
        rpb.UpdateRecipeRequest(
            recipe=change, update_mask=field_mask_pb2.FieldMask(paths=["product_properties"])
        )
    )
    await client.DeleteRecipe(rpb.DeleteRecipeRequest(name=LUNGO))

    events = await logged_events(mesh, RECIPES_API)
    assert [e.type for e in events] == [
        "recipe_created",
        "recipe_l10n_put",
        "recipe_updated",
        "recipe_deleted",
    ]
    updated = rpb.RecipeUpdatedEvent()
    events[2].payload.Unpack(updated)
    assert list(updated.update_mask.paths) == ["product_properties.default_volume_ml"]
    assert updated.recipe.product_properties.default_volume_ml == 250
    deleted = rpb.RecipeDeletedEvent()
    events[3].payload.Unpack(deleted)
    assert deleted.name == LUNGO


@embedded_only
async def test_a_refused_write_fires_nothing(
    partner: PartnerClient, other_partner: PartnerClient, mesh: Mesh
) -> None:
    await fails(
        other_partner.client.recipes.CreateRecipe(create_recipe("my-coffee-company", "x")),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await fails(
        partner.client.recipes.CreateRecipe(create_recipe("my-coffee-company", "x", volume_ml=-1)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert await event_types(mesh, RECIPES_API) == []


async def test_reads_never_show_a_recipe_as_it_was_before_a_change(partner: PartnerClient) -> None:
    client = partner.client.recipes
    await client.CreateRecipe(create_recipe("my-coffee-company", "lungo-customato", 300))
    assert (
        await client.GetRecipe(rpb.GetRecipeRequest(name=LUNGO))
    ).product_properties.default_volume_ml == 300
    change = recipe(volume_ml=180)
    change.name = LUNGO
    mask = field_mask_pb2.FieldMask(paths=["product_properties.default_volume_ml"])
    await client.UpdateRecipe(rpb.UpdateRecipeRequest(recipe=change, update_mask=mask))
    assert (
        await client.GetRecipe(rpb.GetRecipeRequest(name=LUNGO))
    ).product_properties.default_volume_ml == 180
    await client.DeleteRecipe(rpb.DeleteRecipeRequest(name=LUNGO))
    await fails(client.GetRecipe(rpb.GetRecipeRequest(name=LUNGO)), grpc.StatusCode.NOT_FOUND)
