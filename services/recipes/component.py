"""The recipes component: RecipeService, LayoutService and FormatterService.

On start it seeds the platform's standard layout, `layouts/common:recipe-search`,
and keeps volume formatters and recipes cached, in step with their change
events (`bus.observe`: at commit here, within the poll interval from another
process).
"""

from __future__ import annotations

from brewmesh.recipes.v1 import formatters_pb2_grpc, layouts_pb2_grpc, recipes_pb2_grpc
from brewmesh.runtime import Component, Runtime
from brewmesh.server import ServiceBinding
from brewmesh.services.recipes import layouts
from brewmesh.services.recipes.formatter_cache import FormatterCache
from brewmesh.services.recipes.formatter_service import FormatterServicer
from brewmesh.services.recipes.layout_service import LayoutServicer
from brewmesh.services.recipes.publish import APIS, FORMATTER_API, LAYOUT_API, RECIPE_API, BusAnnouncer
from brewmesh.services.recipes.recipe_cache import RecipeCache
from brewmesh.services.recipes.recipe_service import RecipeServicer
from brewmesh.services.recipes.schema import MIGRATIONS

FORMATTER_EVENTS = ("volume_formatter_put", "volume_formatter_deleted")
RECIPE_CHANGES = ("recipe_updated", "recipe_deleted")


class Recipes:
    """The component's state in one process: the formatter cache."""

    def __init__(self) -> None:
        self.cache: FormatterCache | None = None
        self.recipes: RecipeCache | None = None

    def _cache(self, rt: Runtime) -> FormatterCache:
        if self.cache is None:
            self.cache = FormatterCache(rt.store)
        return self.cache

    def _recipes(self, rt: Runtime) -> RecipeCache:
        if self.recipes is None:
            self.recipes = RecipeCache(rt.store)
        return self.recipes

    async def start(self, rt: Runtime) -> None:
        announce = BusAnnouncer(rt.bus)
        await rt.store.write(lambda tx: layouts.ensure_standard(tx, announce))
        for event_type in FORMATTER_EVENTS:
            rt.bus.observe(f"{FORMATTER_API}.{event_type}", self._cache(rt).on_change)
        for event_type in RECIPE_CHANGES:
            rt.bus.observe(f"{RECIPE_API}.{event_type}", self._recipes(rt).on_change)

    def bindings(self, rt: Runtime) -> list[ServiceBinding]:
        announce, cache = BusAnnouncer(rt.bus), self._cache(rt)
        recipe = RecipeServicer(rt, announce, cache, self._recipes(rt))
        layout = LayoutServicer(rt, announce)
        formatter = FormatterServicer(rt, announce, cache)
        return [
            ServiceBinding(
                RECIPE_API, lambda s: recipes_pb2_grpc.add_RecipeServiceServicer_to_server(recipe, s)
            ),
            ServiceBinding(
                LAYOUT_API, lambda s: layouts_pb2_grpc.add_LayoutServiceServicer_to_server(layout, s)
            ),
            ServiceBinding(
                FORMATTER_API,
                lambda s: formatters_pb2_grpc.add_FormatterServiceServicer_to_server(formatter, s),
            ),
        ]


def component() -> Component:
    state = Recipes()
    return Component(
        name="recipes",
        apis=list(APIS),
        migrations=MIGRATIONS,
        bindings=state.bindings,
        start=state.start,
    )
