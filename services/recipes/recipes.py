"""Recipes: the identity of a beverage and its objective properties.

Domain types, their validation, update masks, and the SQL repository (plain
functions on a transaction). A recipe has no name or description: those are
localised values (`l10n.py`) rendered under a layout (`layouts.py`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from brewmesh.counts import check_count
from brewmesh.errors import AlreadyExists, NotFound, Violations, quote
from brewmesh.names import CompositeId, check_id_component, check_namespace, check_resource_name
from brewmesh.run_rules import MAX_VOLUME_ML
from brewmesh.services.recipes.changes import Announcer
from brewmesh.storage import Row, Tx

COLLECTION = "recipes"
MAX_PARAMETERS_CHARS = 10_000
MAX_MASK_PATHS = 10
PROGRAM_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,100}")

VOLUME = "product_properties.default_volume_ml"
PROGRAM = "execution_properties.program_id"
PARAMETERS = "execution_properties.parameters"
FIELDS = (VOLUME, PROGRAM, PARAMETERS)
MASK_PATHS: dict[str, tuple[str, ...]] = {
    "*": FIELDS,
    "product_properties": (VOLUME,),
    "execution_properties": (PROGRAM, PARAMETERS),
    **{path: (path,) for path in FIELDS},
}

JsonObject = Mapping[str, Any]


@dataclass(frozen=True)
class Properties:
    """What a client may set on a recipe."""

    default_volume_ml: int
    program_id: str
    parameters: JsonObject = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    id: CompositeId
    properties: Properties
    create_time: datetime
    update_time: datetime

    @property
    def name(self) -> str:
        return recipe_name(self.id)


@dataclass(frozen=True)
class NewRecipe:
    """A create request as the domain sees it (not yet validated)."""

    namespace: str
    id_component: str
    properties: Properties


def recipe_name(recipe_id: CompositeId) -> str:
    return f"{COLLECTION}/{recipe_id}"


# -- validation ----------------------------------------------------------------


def check_new_recipe(v: Violations, new: NewRecipe) -> CompositeId | None:
    """Fields `namespace`, `id_component` and `recipe.*`; the new id when valid."""
    namespace = check_namespace(v, "namespace", new.namespace)
    component = check_id_component(v, "id_component", new.id_component)
    with v.under("recipe"):
        check_properties(v, new.properties)
    if namespace is None or component is None:
        return None
    return CompositeId(namespace, component)


def check_properties(v: Violations, props: Properties, fields: Sequence[str] = FIELDS) -> None:
    """Report the invalid properties among `fields` (paths relative to the recipe)."""
    if VOLUME in fields:
        _check_volume(v, props.default_volume_ml)
    if PROGRAM in fields:
        _check_program_id(v, props.program_id)
    if PARAMETERS in fields:
        size = len(_dump(props.parameters))
        if size > MAX_PARAMETERS_CHARS:
            v.add(PARAMETERS, f"is {size} characters as JSON: keep it under {MAX_PARAMETERS_CHARS}")


def _check_volume(v: Violations, volume_ml: int) -> None:
    if volume_ml == 0:
        v.add(VOLUME, f"is required: the volume served by default, 1 to {MAX_VOLUME_ML} millilitres")
    elif not 1 <= volume_ml <= MAX_VOLUME_ML:
        v.add(VOLUME, f"is {volume_ml} ml: use 1 to {MAX_VOLUME_ML} millilitres")


def _check_program_id(v: Violations, program_id: str) -> None:
    if not program_id:
        v.add(PROGRAM, "is required: the machine program to run, e.g. 'lungo'")
    elif not PROGRAM_ID_RE.fullmatch(program_id):
        v.add(
            PROGRAM, f"{quote(program_id)} is not a program id: use 1 to 100 letters, digits, '-', '_' or '.'"
        )


def parse_recipe_name(v: Violations, field_path: str, name: str) -> CompositeId | None:
    return check_resource_name(v, field_path, name, COLLECTION)


def resolve_mask(v: Violations, paths: Sequence[str], set_in_request: Sequence[str]) -> tuple[str, ...]:
    """The leaf fields an update changes, in canonical order.

    `paths` is the request's update mask; empty means every field the
    request sets (`set_in_request`, leaf paths).
    """
    if not check_count(v, "update_mask.paths", paths, MAX_MASK_PATHS, "paths"):
        return ()
    if not paths:
        if not set_in_request:
            v.add(
                "update_mask",
                f"is empty and the recipe sets no field: name the fields to change, e.g. '{VOLUME}'",
            )
        return tuple(f for f in FIELDS if f in set_in_request)
    chosen: set[str] = set()
    for i, path in enumerate(paths):
        leaves = MASK_PATHS.get(path)
        if leaves is None:
            known = ", ".join(MASK_PATHS)
            v.add(
                f"update_mask.paths[{i}]", f"{quote(path)} is not a field you can update: use one of {known}"
            )
            continue
        chosen.update(leaves)
    return tuple(f for f in FIELDS if f in chosen)


def apply_mask(current: Properties, new: Properties, mask: Sequence[str]) -> Properties:
    changes: dict[str, Any] = {}
    if VOLUME in mask:
        changes["default_volume_ml"] = new.default_volume_ml
    if PROGRAM in mask:
        changes["program_id"] = new.program_id
    if PARAMETERS in mask:
        changes["parameters"] = new.parameters
    return replace(current, **changes)


# -- repository ------------------------------------------------------------------


def insert(tx: Tx, recipe_id: CompositeId, props: Properties, announce: Announcer) -> Recipe:
    if find(tx, recipe_id) is not None:
        raise AlreadyExists(f"recipe '{recipe_name(recipe_id)}' already exists: choose another id_component")
    now = datetime.now(UTC)
    recipe = Recipe(recipe_id, props, now, now)
    tx.execute(
        "INSERT INTO recipes"
        " (id, namespace, default_volume_ml, program_id, parameters, create_time, update_time)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (str(recipe_id), recipe_id.namespace, *_property_columns(props), now.isoformat(), now.isoformat()),
    )
    announce.recipe_created(tx, recipe)
    return recipe


def find(tx: Tx, recipe_id: CompositeId) -> Recipe | None:
    row = tx.fetchone("SELECT * FROM recipes WHERE id = ?", (str(recipe_id),))
    return _recipe(row) if row else None


def get(tx: Tx, recipe_id: CompositeId) -> Recipe:
    recipe = find(tx, recipe_id)
    if recipe is None:
        raise NotFound(f"recipe '{recipe_name(recipe_id)}' does not exist")
    return recipe


def list_page(tx: Tx, namespace: str, after: str, limit: int) -> list[Recipe]:
    """Recipes ordered by id after `after`, of `namespace` when not empty."""
    if namespace:
        rows = tx.fetchall(
            "SELECT * FROM recipes WHERE namespace = ? AND id > ? ORDER BY id LIMIT ?",
            (namespace, after, limit),
        )
    else:
        rows = tx.fetchall("SELECT * FROM recipes WHERE id > ? ORDER BY id LIMIT ?", (after, limit))
    return [_recipe(r) for r in rows]


def default_volumes(tx: Tx, namespace: str, after: str, limit: int) -> list[tuple[CompositeId, int]]:
    """(id, default volume) of recipes ordered by id after `after`: what a search needs, nothing more."""
    sql = "SELECT id, default_volume_ml FROM recipes WHERE id > ?"
    params: list[object] = [after]
    if namespace:
        sql += " AND namespace = ?"
        params.append(namespace)
    rows = tx.fetchall(sql + " ORDER BY id LIMIT ?", (*params, limit))
    return [(id_from_key(r["id"]), int(r["default_volume_ml"])) for r in rows]


def update(
    tx: Tx, recipe_id: CompositeId, new: Properties, mask: Sequence[str], announce: Announcer
) -> Recipe:
    current = get(tx, recipe_id)
    recipe = replace(
        current, properties=apply_mask(current.properties, new, mask), update_time=datetime.now(UTC)
    )
    tx.execute(
        "UPDATE recipes SET default_volume_ml = ?, program_id = ?, parameters = ?, update_time = ?"
        " WHERE id = ?",
        (*_property_columns(recipe.properties), recipe.update_time.isoformat(), str(recipe_id)),
    )
    announce.recipe_updated(tx, recipe, mask)
    return recipe


def delete(tx: Tx, recipe_id: CompositeId, announce: Announcer) -> None:
    get(tx, recipe_id)
    tx.execute("DELETE FROM recipe_l10n WHERE recipe_id = ?", (str(recipe_id),))
    tx.execute("DELETE FROM recipes WHERE id = ?", (str(recipe_id),))
    announce.recipe_deleted(tx, recipe_name(recipe_id))


def _property_columns(props: Properties) -> tuple[int, str, str]:
    return props.default_volume_ml, props.program_id, _dump(props.parameters)


def _dump(parameters: JsonObject) -> str:
    return json.dumps(parameters, sort_keys=True, separators=(",", ":"))


def id_from_key(key: str) -> CompositeId:
    """The id of a stored row (`namespace:id_component`, valid by construction)."""
    namespace, _, component = key.partition(":")
    return CompositeId(namespace, component)


def _recipe(row: Row) -> Recipe:
    props = Properties(row["default_volume_ml"], row["program_id"], json.loads(row["parameters"]))
    return Recipe(
        id_from_key(row["id"]),
        props,
        datetime.fromisoformat(row["create_time"]),
        datetime.fromisoformat(row["update_time"]),
    )
