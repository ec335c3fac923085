"""LayoutService over gRPC: protos in, domain calls, protos out."""

from __future__ import annotations

from brewmesh.auth import check_namespace_access
from brewmesh.errors import Violations
from brewmesh.names import check_snake
from brewmesh.pagination import paging_query, read_page
from brewmesh.recipes.v1 import layouts_pb2, layouts_pb2_grpc
from brewmesh.runtime import Runtime
from brewmesh.services.recipes import convert, layouts, recipes, search
from brewmesh.services.recipes.changes import Announcer
from brewmesh.services.recipes.locales import check_locale
from brewmesh.services.recipes.rpc import Context, checked


class LayoutServicer(layouts_pb2_grpc.LayoutServiceServicer):
    def __init__(self, rt: Runtime, announce: Announcer) -> None:
        self.rt = rt
        self.announce = announce

    async def CreateLayout(  # noqa: N802
        self,
        request: layouts_pb2.CreateLayoutRequest,
        context: Context[layouts_pb2.CreateLayoutRequest, layouts_pb2.Layout],
    ) -> layouts_pb2.Layout:
        principal = await self.rt.auth.require_any(context)
        v = Violations()
        new = convert.new_layout(request)
        layout_id = checked(v, layouts.check_new_layout(v, new))
        check_namespace_access(principal, layout_id.namespace)
        layout = await self.rt.store.quick_write(
            lambda tx: layouts.create(tx, layout_id, new.spec, self.announce)
        )
        return convert.layout_proto(layout)

    async def GetLayout(  # noqa: N802
        self,
        request: layouts_pb2.GetLayoutRequest,
        context: Context[layouts_pb2.GetLayoutRequest, layouts_pb2.Layout],
    ) -> layouts_pb2.Layout:
        v = Violations()
        layout_id = checked(v, layouts.parse_layout_name(v, "name", request.name))
        return convert.layout_proto(await self.rt.store.lookup(lambda tx: layouts.get(tx, layout_id)))

    async def ListLayouts(  # noqa: N802
        self,
        request: layouts_pb2.ListLayoutsRequest,
        context: Context[layouts_pb2.ListLayoutsRequest, layouts_pb2.ListLayoutsResponse],
    ) -> layouts_pb2.ListLayoutsResponse:
        v = Violations()
        kind = request.kind
        if kind:
            check_snake(v, "kind", kind, "layout kind (e.g. 'recipe_search')")
        query = paging_query("ListLayouts", kind=kind)
        shown, token = await read_page(
            v, self.rt.store, self.rt.page_tokens, request, query,
            lambda tx, after, limit: layouts.list_page(tx, kind, after, limit),
            lambda layout: str(layout.id),
        )  # fmt: skip
        return layouts_pb2.ListLayoutsResponse(
            layouts=[convert.layout_proto(layout) for layout in shown], next_page_token=token
        )

    async def CheckRecipe(  # noqa: N802
        self,
        request: layouts_pb2.CheckRecipeRequest,
        context: Context[layouts_pb2.CheckRecipeRequest, layouts_pb2.CheckRecipeResponse],
    ) -> layouts_pb2.CheckRecipeResponse:
        v = Violations()
        parsed_recipe = recipes.parse_recipe_name(v, "recipe", request.recipe)
        parsed_layout = layouts.parse_layout_name(v, "layout", request.layout)
        parsed_locale = check_locale(v, request.language_code, request.country_code)
        recipe_id, layout_id = checked(v, parsed_recipe), checked(v, parsed_layout)
        locale = checked(v, parsed_locale)
        violations = await self.rt.store.read(
            lambda tx: search.check_recipe(tx, recipe_id, layout_id, locale)
        )
        return layouts_pb2.CheckRecipeResponse(
            satisfied=not violations, violations=[convert.violation_proto(found) for found in violations]
        )
