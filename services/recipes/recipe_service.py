"""RecipeService over gRPC: protos in, domain calls, protos out."""

from __future__ import annotations

from google.protobuf import empty_pb2

from brewmesh.auth import check_namespace_access
from brewmesh.errors import Violations
from brewmesh.names import check_namespace
from brewmesh.pagination import check_page, paging_query, read_page
from brewmesh.recipes.v1 import recipes_pb2, recipes_pb2_grpc
from brewmesh.runtime import Runtime
from brewmesh.services.recipes import builder, convert, l10n, recipes, search
from brewmesh.services.recipes.changes import Announcer
from brewmesh.services.recipes.formatter_cache import FormatterCache
from brewmesh.services.recipes.recipe_cache import RecipeCache
from brewmesh.services.recipes.rpc import Context, checked


class RecipeServicer(recipes_pb2_grpc.RecipeServiceServicer):
    def __init__(
        self, rt: Runtime, announce: Announcer, formatters: FormatterCache, recipe_cache: RecipeCache
    ) -> None:
        self.rt = rt
        self.announce = announce
        self.formatters = formatters
        self.recipe_cache = recipe_cache

    async def CreateRecipe(  # noqa: N802
        self,
        request: recipes_pb2.CreateRecipeRequest,
        context: Context[recipes_pb2.CreateRecipeRequest, recipes_pb2.Recipe],
    ) -> recipes_pb2.Recipe:
        principal = await self.rt.auth.require_any(context)
        v = Violations()
        new = convert.new_recipe(v, request)
        recipe_id = checked(v, recipes.check_new_recipe(v, new))
        check_namespace_access(principal, recipe_id.namespace)
        recipe = await self.rt.store.quick_write(
            lambda tx: recipes.insert(tx, recipe_id, new.properties, self.announce)
        )
        return convert.recipe_proto(recipe)

    async def GetRecipe(  # noqa: N802
        self,
        request: recipes_pb2.GetRecipeRequest,
        context: Context[recipes_pb2.GetRecipeRequest, recipes_pb2.Recipe],
    ) -> recipes_pb2.Recipe:
        v = Violations()
        recipe_id = checked(v, recipes.parse_recipe_name(v, "name", request.name))
        return await self.recipe_cache.get(recipe_id)

    async def ListRecipes(  # noqa: N802
        self,
        request: recipes_pb2.ListRecipesRequest,
        context: Context[recipes_pb2.ListRecipesRequest, recipes_pb2.ListRecipesResponse],
    ) -> recipes_pb2.ListRecipesResponse:
        v = Violations()
        namespace = request.namespace
        if namespace:
            check_namespace(v, "namespace", namespace)
        query = paging_query("ListRecipes", namespace=namespace)
        shown, token = await read_page(
            v, self.rt.store, self.rt.page_tokens, request, query,
            lambda tx, after, limit: recipes.list_page(tx, namespace, after, limit),
            lambda recipe: str(recipe.id),
        )  # fmt: skip
        return recipes_pb2.ListRecipesResponse(
            recipes=[convert.recipe_proto(r) for r in shown], next_page_token=token
        )

    async def UpdateRecipe(  # noqa: N802
        self,
        request: recipes_pb2.UpdateRecipeRequest,
        context: Context[recipes_pb2.UpdateRecipeRequest, recipes_pb2.Recipe],
    ) -> recipes_pb2.Recipe:
        principal = await self.rt.auth.require_any(context)
        v = Violations()
        parsed_id = recipes.parse_recipe_name(v, "recipe.name", request.recipe.name)
        mask = recipes.resolve_mask(v, convert.mask_paths(request), convert.fields_set(request.recipe))
        with v.under("recipe"):
            new = convert.properties(v, request.recipe, with_parameters=recipes.PARAMETERS in mask)
            recipes.check_properties(v, new, mask)
        recipe_id = checked(v, parsed_id)
        check_namespace_access(principal, recipe_id.namespace)
        recipe = await self.rt.store.quick_write(
            lambda tx: recipes.update(tx, recipe_id, new, mask, self.announce)
        )
        return convert.recipe_proto(recipe)

    async def DeleteRecipe(  # noqa: N802
        self,
        request: recipes_pb2.DeleteRecipeRequest,
        context: Context[recipes_pb2.DeleteRecipeRequest, empty_pb2.Empty],
    ) -> empty_pb2.Empty:
        principal = await self.rt.auth.require_any(context)
        v = Violations()
        recipe_id = checked(v, recipes.parse_recipe_name(v, "name", request.name))
        check_namespace_access(principal, recipe_id.namespace)
        await self.rt.store.quick_write(lambda tx: recipes.delete(tx, recipe_id, self.announce))
        return empty_pb2.Empty()

    async def PutRecipeL10n(  # noqa: N802
        self,
        request: recipes_pb2.PutRecipeL10nRequest,
        context: Context[recipes_pb2.PutRecipeL10nRequest, recipes_pb2.RecipeL10n],
    ) -> recipes_pb2.RecipeL10n:
        principal = await self.rt.auth.require_any(context)
        v = Violations()
        given = convert.l10n_input(request)
        parsed_id, parsed_locale = l10n.check_put(v, given)
        recipe_id, locale = checked(v, parsed_id), checked(v, parsed_locale)
        check_namespace_access(principal, recipe_id.namespace)
        put = await self.rt.store.quick_write(
            lambda tx: l10n.put(tx, recipe_id, locale, given.values, self.announce)
        )
        return convert.l10n_proto(put)

    async def GetRecipeL10n(  # noqa: N802
        self,
        request: recipes_pb2.GetRecipeL10nRequest,
        context: Context[recipes_pb2.GetRecipeL10nRequest, recipes_pb2.RecipeL10n],
    ) -> recipes_pb2.RecipeL10n:
        v = Violations()
        recipe_id, locale = checked(v, l10n.parse_l10n_name(v, "name", request.name))
        return convert.l10n_proto(await self.rt.store.lookup(lambda tx: l10n.get(tx, recipe_id, locale)))

    async def BuildRecipe(  # noqa: N802
        self,
        request: recipes_pb2.BuildRecipeRequest,
        context: Context[recipes_pb2.BuildRecipeRequest, recipes_pb2.BuildRecipeResponse],
    ) -> recipes_pb2.BuildRecipeResponse:
        principal = await self.rt.auth.require_any(context)
        v = Violations()
        plan = checked(v, builder.check_build(v, convert.build_input(v, request)))
        builder.check_access(plan, principal)
        built = await self.rt.store.write(lambda tx: builder.build(tx, plan, principal, self.announce))
        return convert.built_proto(built)

    async def SearchRecipes(  # noqa: N802
        self,
        request: recipes_pb2.SearchRecipesRequest,
        context: Context[recipes_pb2.SearchRecipesRequest, recipes_pb2.SearchRecipesResponse],
    ) -> recipes_pb2.SearchRecipesResponse:
        v = Violations()
        given = search.SearchInput(
            request.language_code, request.country_code, request.layout, request.namespace, request.query
        )
        parsed = search.check_search(v, given)
        query = paging_query("SearchRecipes", **vars(given))
        page = check_page(v, self.rt.page_tokens, request.page_size, request.page_token, query)
        wanted = checked(v, parsed)
        formatter = await self.formatters.resolve(wanted.locale)
        found = await self.rt.store.read(
            lambda tx: search.search(tx, wanted, formatter, page.after, page.limit)
        )
        shown, token = page.finish(found, lambda view: str(view.recipe_id), self.rt.page_tokens)
        return recipes_pb2.SearchRecipesResponse(
            results=[convert.view_proto(view) for view in shown], next_page_token=token
        )
