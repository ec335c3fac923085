"""SearchRecipes: recipes as a UI shows them for a locale and a layout."""

from __future__ import annotations

from collections.abc import Hashable
from datetime import UTC, datetime
from typing import Any

import grpc

from brewmesh.client import MeshClient
from brewmesh.mesh import Mesh
from brewmesh.recipes.v1 import layouts_pb2 as lpb
from brewmesh.recipes.v1 import recipes_pb2 as rpb
from brewmesh.services.recipes import search as search_domain
from brewmesh.services.recipes.formatters import FormatterSpec, VolumeFormatter
from brewmesh.services.recipes.locales import Locale
from brewmesh.services.recipes.recipes import id_from_key
from brewmesh.storage import Params, Row, Tx
from tests.conftest import PartnerClient, embedded_only
from tests.test_recipes_support import (
    CLIP,
    DESCRIPTION,
    ELLIPSIS,
    SEARCH_LAYOUT,
    TITLE,
    create_recipe,
    fails,
    formatter,
    invalid,
    l10n,
    layout,
    put_formatter,
    search_values,
)

NS = "my-coffee-company"


async def add_recipe(client: MeshClient, id_component: str, **locales: dict[str, str]) -> str:
    """A recipe with values per locale tag (`en`, `en_US` for en-US); its name."""
    created = await client.recipes.CreateRecipe(create_recipe(NS, id_component, 300))
    for tag, values in locales.items():
        language, _, country = tag.partition("_")
        await client.recipes.PutRecipeL10n(l10n(language, country, recipe_name=created.name, **values))
    return str(created.name)


async def search(
    client: MeshClient,
    language: str = "en",
    country: str = "",
    layout_name: str = SEARCH_LAYOUT,
    **kw: object,
) -> rpb.SearchRecipesResponse:
    request = rpb.SearchRecipesRequest(language_code=language, country_code=country, layout=layout_name, **kw)  # type: ignore[arg-type]
    return await client.recipes.SearchRecipes(request)


async def with_formatters(client: MeshClient) -> None:
    await client.formatters.PutVolumeFormatter(put_formatter(formatter("en", template="{volume} ml")))
    await client.formatters.PutVolumeFormatter(
        put_formatter(formatter("en", "US", template="{volume} fl oz", divide_by=30))
    )


async def test_fields_are_localised_and_the_volume_formatted_for_the_reader(
    partner: PartnerClient, anonymous: MeshClient
) -> None:
    await with_formatters(partner.client)
    name = await add_recipe(
        partner.client,
        "lungo-customato",
        en=search_values("Lungo customato", "A long coffee, made your way"),
        en_US={TITLE: "Long black, your way"},
    )
    us = await search(anonymous, "en", "US")
    assert len(us.results) == 1
    view = us.results[0]
    assert view.recipe == name and view.default_volume_ml == 300 and view.default_volume == "10 fl oz"
    assert [(f.field, f.text, f.truncated) for f in view.fields] == [
        (TITLE, "Long black, your way", False),
        (DESCRIPTION, "A long coffee, made your way", False),
    ]
    gb = (await search(anonymous, "en", "GB")).results[0]
    assert (gb.fields[0].text, gb.default_volume) == ("Lungo customato", "300 ml")


async def test_long_values_are_cut_under_the_layouts_overflow(partner: PartnerClient) -> None:
    await with_formatters(partner.client)
    await partner.client.layouts.CreateLayout(
        lpb.CreateLayoutRequest(
            layout_id=f"{NS}:tile",
            layout=layout(
                "recipe_tile",
                (TITLE,),
                search_title=(0, 10, ELLIPSIS),
                teaser=(0, 6, CLIP),
                badge=(0, 5, CLIP),
            ),
        )
    )
    await add_recipe(partner.client, "lungo", en={TITLE: "Lungo customato", "teaser": "Strong and long"})
    view = (await search(partner.client, layout_name=f"layouts/{NS}:tile")).results[0]
    assert [(f.field, f.text, f.truncated) for f in view.fields] == [
        (TITLE, "Lungo cus…", True),
        ("teaser", "Strong", True),
        ("badge", "", False),  # optional and without a value
    ]


async def test_recipes_without_a_required_field_are_left_out(partner: PartnerClient) -> None:
    await with_formatters(partner.client)
    complete = await add_recipe(partner.client, "complete", en=search_values("Complete", "Has every value"))
    await add_recipe(partner.client, "untitled", en={DESCRIPTION: "Has no title at all"})
    await add_recipe(partner.client, "silent")
    await add_recipe(partner.client, "french-only", fr=search_values("Français", "Seulement en français"))
    assert [r.recipe for r in (await search(partner.client)).results] == [complete]
    french = await partner.client.formatters.PutVolumeFormatter(put_formatter(formatter("fr")))
    assert french.name == "volumeFormatters/fr"
    assert [r.recipe for r in (await search(partner.client, "fr")).results] == [f"recipes/{NS}:french-only"]


async def test_query_matches_rendered_fields_ignoring_case(partner: PartnerClient) -> None:
    await with_formatters(partner.client)
    lungo = await add_recipe(partner.client, "lungo", en=search_values("Lungo", "A long coffee with crema"))
    await add_recipe(partner.client, "ristretto", en=search_values("Ristretto", "A short, strong coffee"))
    assert [r.recipe for r in (await search(partner.client, query="CREMA")).results] == [lungo]
    assert len((await search(partner.client, query="coffee")).results) == 2
    assert (await search(partner.client, query="macchiato")).results == []


async def test_namespace_filter(partner: PartnerClient, admin: MeshClient) -> None:
    await with_formatters(partner.client)
    mine = await add_recipe(partner.client, "lungo", en=search_values("Lungo", "A long coffee"))
    espresso = await admin.recipes.CreateRecipe(create_recipe("common", "espresso"))
    await admin.recipes.PutRecipeL10n(
        l10n("en", recipe_name=espresso.name, **search_values("Espresso", "The classic"))
    )
    assert [r.recipe for r in (await search(partner.client)).results] == [espresso.name, mine]
    assert [r.recipe for r in (await search(partner.client, namespace=NS)).results] == [mine]
    assert [r.recipe for r in (await search(partner.client, namespace="common")).results] == [espresso.name]


async def test_results_come_in_pages_bound_to_the_query(partner: PartnerClient) -> None:
    await with_formatters(partner.client)
    shown = []
    for i in range(9):
        values = {"en": search_values(f"Coffee {i}", "Good coffee")} if i % 3 else {}
        name = await add_recipe(partner.client, f"coffee-{i}", **values)
        if values:
            shown.append(name)
    names: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await search(partner.client, "en", "US", page_size=2, page_token=token)
        assert len(page.results) <= 2
        names += [r.recipe for r in page.results]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert names == shown and pages == 3

    first = await search(partner.client, "en", "US", page_size=2)
    fields = await invalid(search(partner.client, "en", "GB", page_size=2, page_token=first.next_page_token))
    assert list(fields) == ["page_token"]


async def test_no_formatter_for_the_language_is_a_failed_precondition(partner: PartnerClient) -> None:
    await with_formatters(partner.client)
    await add_recipe(partner.client, "lungo", de=search_values("Lungo", "Ein langer Kaffee"))
    error = await fails(search(partner.client, "de", "AT"), grpc.StatusCode.FAILED_PRECONDITION)
    assert error.details() == "no volume formatter for 'de-AT' or 'de': add one with PutVolumeFormatter"


async def test_an_unknown_layout_is_not_found(partner: PartnerClient) -> None:
    await with_formatters(partner.client)
    await fails(search(partner.client, layout_name=f"layouts/{NS}:nothing"), grpc.StatusCode.NOT_FOUND)


async def test_search_request_is_validated(anonymous: MeshClient) -> None:
    bad = {"namespace": "Not A Namespace", "page_size": -1, "query": "x" * 201}
    fields = await invalid(search(anonymous, "eng", "us", "recipe-search", **bad))
    assert set(fields) == {"language_code", "country_code", "layout", "namespace", "page_size", "query"}


class CountingTx:
    """A transaction that counts the queries run through it."""

    def __init__(self, tx: Tx) -> None:
        self.tx = tx
        self.queries = 0

    def execute(self, sql: str, params: Params = ()) -> int:
        self.queries += 1
        return self.tx.execute(sql, params)

    def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        self.queries += 1
        return self.tx.fetchone(sql, params)

    def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        self.queries += 1
        return self.tx.fetchall(sql, params)

    def after_commit(self, callback: Any) -> None:
        self.tx.after_commit(callback)

    def version(self) -> Hashable | None:
        return self.tx.version()


@embedded_only
async def test_a_search_page_costs_a_few_queries_however_many_recipes(
    partner: PartnerClient, mesh: Mesh
) -> None:
    for i in range(120):
        values = search_values(f"Coffee {i}", "Good coffee") if i % 2 else {TITLE: "Untitled"}
        await add_recipe(partner.client, f"coffee-{i:03d}", en=values)
    query = search_domain.Search(Locale("en", "US"), id_from_key("common:recipe-search"))
    formatter = VolumeFormatter(FormatterSpec(Locale("en"), "{volume} ml"), "common", datetime.now(UTC))
    for page_size in (1, 20, 100, 1000):

        def run(tx: Tx, size: int = page_size) -> tuple[int, int]:
            counting = CountingTx(tx)
            found = search_domain.search(counting, query, formatter, "", size + 1)
            return len(found), counting.queries

        found, queries = await mesh.runtime.store.read(run)
        assert found == min(page_size + 1, 60)
        assert queries <= 5, (page_size, queries)
