"""Recently read recipes, as the protos GetRecipe returns.

GetRecipe is the catalogue's hottest read. A recipe is forgotten when a
change to it commits in this process, and when another process announces
one on the bus (so another instance may serve the old recipe for up to the
bus poll interval). A load that raced with a change is used once, not kept.
"""

from __future__ import annotations

from google.protobuf.message import Message

from brewmesh.names import CompositeId
from brewmesh.read_cache import ReadCache
from brewmesh.recipes.v1 import recipes_pb2
from brewmesh.services.recipes import convert, recipes
from brewmesh.storage import Store

MAX_CACHED = 10_000


class RecipeCache:
    def __init__(self, store: Store, limit: int = MAX_CACHED) -> None:
        self._store = store
        self._protos: ReadCache[str, recipes_pb2.Recipe] = ReadCache(limit)

    def on_change(self, payload: Message) -> None:
        """A recipe was updated or deleted (observed on the bus)."""
        if isinstance(payload, recipes_pb2.RecipeUpdatedEvent):
            self._protos.forget(payload.recipe.name)
        elif isinstance(payload, recipes_pb2.RecipeDeletedEvent):
            self._protos.forget(payload.name)

    async def get(self, recipe_id: CompositeId) -> recipes_pb2.Recipe:
        """The recipe's proto (shared: callers must not change it); NOT_FOUND if there is none."""

        async def load() -> recipes_pb2.Recipe:
            return convert.recipe_proto(await self._store.lookup(lambda tx: recipes.get(tx, recipe_id)))

        return await self._protos.get(recipes.recipe_name(recipe_id), load)
