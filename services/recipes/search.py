"""Where the contexts meet: searching recipes as a UI shows them, and checking one.

For a reader's locale and a layout: each recipe's localised values (country
over language) rendered under the layout's view rules, and its default volume
formatted by the locale's formatter. Recipes lacking a required field are left
out. Recipes are read in batches of ids with their values in one query per
batch, never one query per recipe.
"""

from __future__ import annotations

from dataclasses import dataclass

from brewmesh.errors import FailedPrecondition, Violations
from brewmesh.names import CompositeId, check_namespace
from brewmesh.services.recipes import formatters, l10n, layouts, recipes, rendering
from brewmesh.services.recipes.formatters import FormatterSpec, VolumeFormatter
from brewmesh.services.recipes.layouts import LayoutSpec
from brewmesh.services.recipes.locales import Locale, check_locale
from brewmesh.services.recipes.rendering import LayoutViolation, Rendered
from brewmesh.storage import Tx

MIN_BATCH = 100
MAX_BATCH = 5000
MAX_QUERY_CHARS = 200


@dataclass(frozen=True)
class SearchInput:
    """A search request as the domain sees it (not yet validated)."""

    language: str
    country: str
    layout: str
    namespace: str = ""
    query: str = ""


@dataclass(frozen=True)
class Search:
    locale: Locale
    layout_id: CompositeId
    namespace: str = ""
    query: str = ""


@dataclass(frozen=True)
class RecipeView:
    """One recipe as the UI shows it."""

    recipe_id: CompositeId
    fields: list[Rendered]
    default_volume: str
    default_volume_ml: int

    @property
    def recipe_name(self) -> str:
        return recipes.recipe_name(self.recipe_id)


def check_search(v: Violations, given: SearchInput) -> Search | None:
    locale = check_locale(v, given.language, given.country)
    layout_id = layouts.parse_layout_name(v, "layout", given.layout)
    if given.namespace:
        check_namespace(v, "namespace", given.namespace)
    if len(given.query) > MAX_QUERY_CHARS:
        v.add("query", f"is {len(given.query)} characters: search for at most {MAX_QUERY_CHARS}")
    if locale is None or layout_id is None:
        return None
    return Search(locale, layout_id, given.namespace, given.query)


def search(
    tx: Tx, query: Search, formatter: VolumeFormatter | None, after: str, limit: int
) -> list[RecipeView]:
    """Up to `limit` views of recipes with id after `after`, in id order.

    `formatter` is the one for the query's locale (None: there is none).
    """
    spec = layouts.get(tx, query.layout_id).spec
    if formatter is None:
        raise FailedPrecondition(formatters.missing_message(query.locale))
    if query.namespace:  # its ids all sort after 'namespace:', so skip what comes before
        after = max(after, f"{query.namespace}:")
    return _scan(tx, query, spec, formatter.spec, after, limit)


def _scan(
    tx: Tx, query: Search, spec: LayoutSpec, formatter: FormatterSpec, after: str, limit: int
) -> list[RecipeView]:
    found: list[RecipeView] = []
    batch_size = max(MIN_BATCH, limit)
    while len(found) < limit:
        batch = recipes.default_volumes(tx, query.namespace, after, batch_size)
        if batch:
            last = str(batch[-1][0])
            values = l10n.for_readers_in_range(tx, query.locale, after, last)
            found += _views(batch, values, spec, formatter, query.query)
            after = last
        if len(batch) < batch_size:
            break
        batch_size = min(2 * batch_size, MAX_BATCH)  # few matches so far: read further ahead
    return found[:limit]


def check_recipe(
    tx: Tx, recipe_id: CompositeId, layout_id: CompositeId, locale: Locale
) -> list[LayoutViolation]:
    """Every way the recipe's values for a reader in `locale` fail the layout."""
    recipes.get(tx, recipe_id)
    spec = layouts.get(tx, layout_id).spec
    return rendering.check(spec, l10n.for_reader(tx, recipe_id, locale))


def _views(
    batch: list[tuple[CompositeId, int]],
    values: dict[str, dict[str, str]],
    spec: LayoutSpec,
    formatter: FormatterSpec,
    text: str,
) -> list[RecipeView]:
    views = (
        _view(recipe_id, volume, values.get(str(recipe_id), {}), spec, formatter, text)
        for recipe_id, volume in batch
    )
    return [view for view in views if view is not None]


def _view(
    recipe_id: CompositeId,
    volume: int,
    values: dict[str, str],
    spec: LayoutSpec,
    formatter: FormatterSpec,
    text: str,
) -> RecipeView | None:
    fields = rendering.render_fields(spec, values)
    if fields is None or not _matches(fields, text):
        return None
    return RecipeView(recipe_id, fields, formatters.format_volume(formatter, volume), volume)


def _matches(fields: list[Rendered], text: str) -> bool:
    if not text:
        return True
    wanted = text.casefold()
    return any(wanted in f.text.casefold() for f in fields)
