"""Layouts: which localised fields a UI shows, and how each one renders.

Domain types, validation and the SQL repository. The platform's standard
layout, `layouts/common:recipe-search`, is seeded by `ensure_standard`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from brewmesh.counts import check_count
from brewmesh.errors import AlreadyExists, NotFound, Violations, quote
from brewmesh.names import COMMON_NAMESPACE, CompositeId, check_composite_id, check_resource_name, check_snake
from brewmesh.services.recipes.changes import Announcer
from brewmesh.storage import Row, Tx

COLLECTION = "layouts"
MAX_PROPERTIES = 100
MAX_LENGTH_LIMIT = 100_000


class Overflow(StrEnum):
    """What happens to a value longer than the field's maximum length."""

    ELLIPSIS = "ellipsis"
    CLIP = "clip"


@dataclass(frozen=True)
class FieldView:
    """Lengths in characters (code points). `overflow` None: a value the client sent that we do not know."""

    min_length: int = 0
    max_length: int = 0
    overflow: Overflow | None = Overflow.ELLIPSIS


@dataclass(frozen=True)
class LayoutProperty:
    field: str
    view: FieldView = FieldView()


@dataclass(frozen=True)
class LayoutSpec:
    """Everything a client defines about a layout; two layouts with equal specs are the same."""

    kind: str
    properties: tuple[LayoutProperty, ...]
    required_fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class Layout:
    id: CompositeId
    spec: LayoutSpec
    create_time: datetime

    @property
    def name(self) -> str:
        return layout_name(self.id)


@dataclass(frozen=True)
class NewLayout:
    """A CreateLayout request as the domain sees it (not yet validated)."""

    layout_id: str
    spec: LayoutSpec


STANDARD_ID = CompositeId(COMMON_NAMESPACE, "recipe-search")
STANDARD_SPEC = LayoutSpec(
    kind="recipe_search",
    properties=(
        LayoutProperty("search_title", FieldView(3, 40, Overflow.ELLIPSIS)),
        LayoutProperty("search_description", FieldView(10, 160, Overflow.ELLIPSIS)),
    ),
    required_fields=("search_title", "search_description"),
)


def layout_name(layout_id: CompositeId) -> str:
    return f"{COLLECTION}/{layout_id}"


# -- validation ----------------------------------------------------------------


def check_new_layout(v: Violations, new: NewLayout) -> CompositeId | None:
    """Fields `layout_id` and `layout.*` of CreateLayoutRequest; the id when valid."""
    layout_id = check_composite_id(v, "layout_id", new.layout_id)
    with v.under("layout"):
        check_spec(v, new.spec)
    return layout_id


def check_spec(v: Violations, spec: LayoutSpec) -> None:
    check_snake(v, "kind", spec.kind, "layout kind (e.g. 'recipe_search')")
    if not spec.properties:
        v.add("properties", "is empty: list the fields the UI shows, e.g. 'search_title'")
    fits = check_count(v, "properties", spec.properties, MAX_PROPERTIES, "fields")
    # Required fields are among the properties: no more of them than that.
    if not check_count(v, "required_fields", spec.required_fields, MAX_PROPERTIES, "fields") or not fits:
        return
    seen: set[str] = set()
    for i, prop in enumerate(spec.properties):
        with v.under(f"properties[{i}]"):
            _check_property(v, prop, seen)
        seen.add(prop.field)
    _check_required(v, spec.required_fields, seen)


def _check_property(v: Violations, prop: LayoutProperty, earlier: set[str]) -> None:
    if check_snake(v, "field", prop.field, "field name (e.g. 'search_title')") and prop.field in earlier:
        v.add("field", f"{quote(prop.field)} is listed twice: field names are unique within a layout")
    with v.under("view"):
        check_view(v, prop.view)


def check_view(v: Violations, view: FieldView) -> None:
    if not 0 <= view.min_length <= MAX_LENGTH_LIMIT:
        v.add("min_length", f"is {view.min_length}: use 0 to {MAX_LENGTH_LIMIT} characters")
    if view.max_length < 0:
        v.add("max_length", f"is {view.max_length}: use 0 for no limit, or at least 1 character")
    elif view.max_length > MAX_LENGTH_LIMIT:
        v.add("max_length", f"is {view.max_length}: use at most {MAX_LENGTH_LIMIT}, or 0 for no limit")
    elif 0 < view.max_length < view.min_length:
        v.add(
            "max_length",
            f"is {view.max_length}, below min_length {view.min_length}: raise it, or lower min_length",
        )
    if view.overflow is None:
        v.add("overflow", "is not a known overflow: use OVERFLOW_ELLIPSIS or OVERFLOW_CLIP")


def _check_required(v: Violations, required: tuple[str, ...], fields: set[str]) -> None:
    earlier: set[str] = set()
    for i, name in enumerate(required):
        if name not in fields:
            v.add(
                f"required_fields[{i}]",
                f"{quote(name)} is not one of the layout's properties: add it to properties, or remove it",
            )
        elif name in earlier:
            v.add(f"required_fields[{i}]", f"{quote(name)} is listed twice: list each required field once")
        earlier.add(name)


def parse_layout_name(v: Violations, field_path: str, name: str) -> CompositeId | None:
    return check_resource_name(v, field_path, name, COLLECTION)


# -- repository ------------------------------------------------------------------


def create(tx: Tx, layout_id: CompositeId, spec: LayoutSpec, announce: Announcer) -> Layout:
    if find(tx, layout_id) is not None:
        raise AlreadyExists(f"layout '{layout_name(layout_id)}' already exists: choose another id")
    return _insert(tx, layout_id, spec, announce)


def create_or_reuse(tx: Tx, layout_id: CompositeId, spec: LayoutSpec, announce: Announcer) -> Layout:
    """The layout as asked: created, or the existing one if it has the same spec."""
    existing = find(tx, layout_id)
    if existing is None:
        return _insert(tx, layout_id, spec, announce)
    if existing.spec != spec:
        raise AlreadyExists(
            f"layout '{layout_name(layout_id)}' already exists with other content:"
            " use another id, or send exactly its content to reuse it"
        )
    return existing


def ensure_standard(tx: Tx, announce: Announcer) -> Layout:
    """The platform's standard search layout, created on first start."""
    existing = find(tx, STANDARD_ID)
    return existing if existing is not None else _insert(tx, STANDARD_ID, STANDARD_SPEC, announce)


def find(tx: Tx, layout_id: CompositeId) -> Layout | None:
    row = tx.fetchone("SELECT * FROM layouts WHERE id = ?", (str(layout_id),))
    return _layout(row) if row else None


def get(tx: Tx, layout_id: CompositeId) -> Layout:
    layout = find(tx, layout_id)
    if layout is None:
        raise NotFound(f"layout '{layout_name(layout_id)}' does not exist")
    return layout


def list_page(tx: Tx, kind: str, after: str, limit: int) -> list[Layout]:
    if kind:
        rows = tx.fetchall(
            "SELECT * FROM layouts WHERE kind = ? AND id > ? ORDER BY id LIMIT ?", (kind, after, limit)
        )
    else:
        rows = tx.fetchall("SELECT * FROM layouts WHERE id > ? ORDER BY id LIMIT ?", (after, limit))
    return [_layout(r) for r in rows]


def _insert(tx: Tx, layout_id: CompositeId, spec: LayoutSpec, announce: Announcer) -> Layout:
    layout = Layout(layout_id, spec, datetime.now(UTC))
    tx.execute(
        "INSERT INTO layouts (id, namespace, kind, spec, create_time) VALUES (?, ?, ?, ?, ?)",
        (str(layout_id), layout_id.namespace, spec.kind, _dump(spec), layout.create_time.isoformat()),
    )
    announce.layout_created(tx, layout)
    return layout


def _dump(spec: LayoutSpec) -> str:
    properties = [
        {"field": p.field, "min": p.view.min_length, "max": p.view.max_length, "overflow": p.view.overflow}
        for p in spec.properties
    ]
    return json.dumps({"properties": properties, "required": list(spec.required_fields)})


def _load(kind: str, text: str) -> LayoutSpec:
    data: dict[str, Any] = json.loads(text)
    properties = tuple(
        LayoutProperty(p["field"], FieldView(p["min"], p["max"], Overflow(p["overflow"])))
        for p in data["properties"]
    )
    return LayoutSpec(kind, properties, tuple(data["required"]))


def _layout(row: Row) -> Layout:
    namespace, _, component = str(row["id"]).partition(":")
    spec = _load(row["kind"], row["spec"])
    return Layout(CompositeId(namespace, component), spec, datetime.fromisoformat(row["create_time"]))
