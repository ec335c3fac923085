"""Announcing the recipes domain's changes as bus events, in the change's transaction."""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf import field_mask_pb2

from brewmesh.event_backend import PUBLIC
from brewmesh.events import Bus
from brewmesh.recipes.v1 import formatters_pb2, layouts_pb2, recipes_pb2
from brewmesh.services.recipes import convert
from brewmesh.services.recipes.formatters import VolumeFormatter
from brewmesh.services.recipes.l10n import L10n
from brewmesh.services.recipes.layouts import Layout
from brewmesh.services.recipes.recipes import Recipe
from brewmesh.storage import Tx

RECIPE_API = recipes_pb2.DESCRIPTOR.services_by_name["RecipeService"].full_name
LAYOUT_API = layouts_pb2.DESCRIPTOR.services_by_name["LayoutService"].full_name
FORMATTER_API = formatters_pb2.DESCRIPTOR.services_by_name["FormatterService"].full_name
APIS = (RECIPE_API, LAYOUT_API, FORMATTER_API)


class BusAnnouncer:
    """The domain's `Announcer`: each change becomes its API's declared event.

    The catalogue is public, so are its events.
    """

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    def recipe_created(self, tx: Tx, recipe: Recipe) -> None:
        event = recipes_pb2.RecipeCreatedEvent(recipe=convert.recipe_proto(recipe))
        self.bus.fire(tx, RECIPE_API, "recipe_created", event, PUBLIC)

    def recipe_updated(self, tx: Tx, recipe: Recipe, mask: Sequence[str]) -> None:
        event = recipes_pb2.RecipeUpdatedEvent(
            recipe=convert.recipe_proto(recipe), update_mask=field_mask_pb2.FieldMask(paths=list(mask))
        )
        self.bus.fire(tx, RECIPE_API, "recipe_updated", event, PUBLIC)

    def recipe_deleted(self, tx: Tx, name: str) -> None:
        self.bus.fire(tx, RECIPE_API, "recipe_deleted", recipes_pb2.RecipeDeletedEvent(name=name), PUBLIC)

    def l10n_put(self, tx: Tx, l10n: L10n) -> None:
        event = recipes_pb2.RecipeL10nPutEvent(l10n=convert.l10n_proto(l10n))
        self.bus.fire(tx, RECIPE_API, "recipe_l10n_put", event, PUBLIC)

    def layout_created(self, tx: Tx, layout: Layout) -> None:
        event = layouts_pb2.LayoutCreatedEvent(layout=convert.layout_proto(layout))
        self.bus.fire(tx, LAYOUT_API, "layout_created", event, PUBLIC)

    def formatter_put(self, tx: Tx, formatter: VolumeFormatter) -> None:
        event = formatters_pb2.VolumeFormatterPutEvent(volume_formatter=convert.formatter_proto(formatter))
        self.bus.fire(tx, FORMATTER_API, "volume_formatter_put", event, PUBLIC)

    def formatter_deleted(self, tx: Tx, name: str) -> None:
        event = formatters_pb2.VolumeFormatterDeletedEvent(name=name)
        self.bus.fire(tx, FORMATTER_API, "volume_formatter_deleted", event, PUBLIC)
