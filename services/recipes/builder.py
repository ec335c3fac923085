"""The recipe builder: a recipe with its values, layouts and formatters, all or nothing.

`check_build` validates every part first (reporting every violation, with
paths into the BuildRecipe request; a part with too many entries is refused
by its count, its entries unread); `build` then does every write in the
one transaction it is given, so any failure (an existing recipe, a layout
that exists with other content, another partner's formatter) rolls back all
of it, events included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from brewmesh.auth import Principal, check_namespace_access
from brewmesh.counts import check_count
from brewmesh.errors import Violations
from brewmesh.names import CompositeId
from brewmesh.services.recipes import formatters, l10n, layouts, recipes
from brewmesh.services.recipes.changes import Announcer
from brewmesh.services.recipes.formatters import FormatterInput, FormatterSpec, VolumeFormatter
from brewmesh.services.recipes.l10n import L10n, L10nInput, Values
from brewmesh.services.recipes.layouts import Layout, LayoutSpec, NewLayout
from brewmesh.services.recipes.locales import Locale
from brewmesh.services.recipes.recipes import NewRecipe, Properties, Recipe
from brewmesh.storage import Tx

MAX_L10N = 50
"""Locales (a language, or a language in a country) one build puts values for."""
MAX_LAYOUTS = 5
MAX_FORMATTERS = 50


@dataclass(frozen=True)
class BuildInput:
    """A BuildRecipe request as the domain sees it (not yet validated)."""

    recipe: NewRecipe
    l10n: Sequence[L10nInput] = ()
    layouts: Sequence[NewLayout] = ()
    formatters: Sequence[FormatterInput] = ()


@dataclass(frozen=True)
class BuildPlan:
    """A valid build: every part checked, nothing written yet."""

    recipe_id: CompositeId
    properties: Properties
    l10n: tuple[tuple[Locale, Values], ...]
    layouts: tuple[tuple[CompositeId, LayoutSpec], ...]
    formatters: tuple[FormatterSpec, ...]

    def namespaces(self) -> list[str]:
        """Every namespace the build writes into."""
        return sorted({self.recipe_id.namespace, *(layout_id.namespace for layout_id, _ in self.layouts)})


@dataclass(frozen=True)
class Built:
    recipe: Recipe
    l10n: list[L10n]
    layouts: list[Layout]
    formatters: list[VolumeFormatter]


def check_build(v: Violations, given: BuildInput) -> BuildPlan | None:
    with v.under("recipe"):
        recipe_id = recipes.check_new_recipe(v, given.recipe)
    counts_fit = [
        check_count(v, "l10n", given.l10n, MAX_L10N, "locales"),
        check_count(v, "layouts", given.layouts, MAX_LAYOUTS, "layouts"),
        check_count(v, "volume_formatters", given.formatters, MAX_FORMATTERS, "formatters"),
    ]
    if not all(counts_fit):
        return None  # the entries are not checked one by one: there are too many
    entries = _check_l10n(v, given.l10n)
    new_layouts = _check_layouts(v, given.layouts)
    specs = _check_formatters(v, given.formatters)
    if recipe_id is None or v:
        return None
    return BuildPlan(recipe_id, given.recipe.properties, entries, new_layouts, specs)


def check_access(plan: BuildPlan, principal: Principal) -> None:
    """PERMISSION_DENIED unless the caller may write every namespace the build touches."""
    for namespace in plan.namespaces():
        check_namespace_access(principal, namespace)


def build(tx: Tx, plan: BuildPlan, principal: Principal, announce: Announcer) -> Built:
    recipe = recipes.insert(tx, plan.recipe_id, plan.properties, announce)
    return Built(
        recipe,
        [l10n.put(tx, recipe.id, locale, values, announce) for locale, values in plan.l10n],
        [layouts.create_or_reuse(tx, layout_id, spec, announce) for layout_id, spec in plan.layouts],
        [formatters.put(tx, spec, principal, announce) for spec in plan.formatters],
    )


def _check_l10n(v: Violations, entries: Sequence[L10nInput]) -> tuple[tuple[Locale, Values], ...]:
    checked: list[tuple[Locale, Values]] = []
    for i, entry in enumerate(entries):
        with v.under(f"l10n[{i}]"):
            if entry.recipe:
                v.add("recipe", "must be empty inside BuildRecipe: the values are for the recipe being built")
            locale = l10n.check_entry(v, entry)
            if locale is not None and any(locale == seen for seen, _ in checked):
                v.add("l10n", f"repeats locale '{locale.tag}': give each language (and country) once")
            elif locale is not None:
                checked.append((locale, entry.values))
    return tuple(checked)


def _check_layouts(v: Violations, given: Sequence[NewLayout]) -> tuple[tuple[CompositeId, LayoutSpec], ...]:
    checked: list[tuple[CompositeId, LayoutSpec]] = []
    for i, new in enumerate(given):
        with v.under(f"layouts[{i}]"):
            layout_id = layouts.check_new_layout(v, new)
            if layout_id is not None and any(layout_id == seen for seen, _ in checked):
                v.add("layout_id", f"repeats '{layout_id}': give each layout once")
            elif layout_id is not None:
                checked.append((layout_id, new.spec))
    return tuple(checked)


def _check_formatters(v: Violations, given: Sequence[FormatterInput]) -> tuple[FormatterSpec, ...]:
    checked: list[FormatterSpec] = []
    for i, formatter in enumerate(given):
        with v.under(f"volume_formatters[{i}].volume_formatter"):
            spec = formatters.check_input(v, formatter)
            if spec is not None and any(spec.locale == seen.locale for seen in checked):
                v.add("language_code", f"repeats locale '{spec.locale.tag}': give each formatter once")
            elif spec is not None:
                checked.append(spec)
    return tuple(checked)
