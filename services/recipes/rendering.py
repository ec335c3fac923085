"""Rendering localised values under a layout's view rules, and checking them.

Lengths are in characters (Unicode code points). A value longer than the
field's `max_length` is cut: with an ellipsis, to `max_length` characters the
last of which is `…`; clipped, to its first `max_length` characters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from brewmesh.services.recipes.layouts import FieldView, LayoutProperty, LayoutSpec, Overflow

ELLIPSIS = "…"


@dataclass(frozen=True)
class Rendered:
    """One layout field, ready to show; `text` is '' for an optional field without a value."""

    field: str
    text: str
    truncated: bool


class ViolationKind(StrEnum):
    MISSING_REQUIRED = "missing_required"
    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"


@dataclass(frozen=True)
class LayoutViolation:
    """One way localised values fail a layout."""

    field: str
    kind: ViolationKind
    length: int
    limit: int
    description: str


def render(text: str, view: FieldView) -> Rendered:
    """`text` as shown under `view` (the field name is left empty)."""
    limit = view.max_length
    if limit <= 0 or len(text) <= limit:
        return Rendered("", text, truncated=False)
    if view.overflow is Overflow.CLIP:
        return Rendered("", text[:limit], truncated=True)
    return Rendered("", text[: limit - 1] + ELLIPSIS, truncated=True)


def render_fields(spec: LayoutSpec, values: Mapping[str, str]) -> list[Rendered] | None:
    """Every field of the layout, in layout order; None if a required field has no value."""
    if any(not values.get(field) for field in spec.required_fields):
        return None
    return [_render_property(p, values.get(p.field, "")) for p in spec.properties]


def _render_property(prop: LayoutProperty, text: str) -> Rendered:
    shown = render(text, prop.view)
    return Rendered(prop.field, shown.text, shown.truncated)


def check(spec: LayoutSpec, values: Mapping[str, str]) -> list[LayoutViolation]:
    """Every violation of `values` against the layout, in the layout's field order."""
    found: list[LayoutViolation] = []
    for prop in spec.properties:
        violation = _check_property(prop, values.get(prop.field, ""), prop.field in spec.required_fields)
        if violation is not None:
            found.append(violation)
    return found


def _check_property(prop: LayoutProperty, text: str, required: bool) -> LayoutViolation | None:
    field, view, length = prop.field, prop.view, len(text)
    if not text:
        if not required:
            return None
        why = f"'{field}' is required by the layout but has no value: put it with PutRecipeL10n"
        return LayoutViolation(field, ViolationKind.MISSING_REQUIRED, 0, 0, why)
    if length < view.min_length:
        why = f"'{field}' is {length} characters, under the minimum of {view.min_length}: lengthen it"
        return LayoutViolation(field, ViolationKind.TOO_SHORT, length, view.min_length, why)
    if 0 < view.max_length < length:
        shown = "clipped" if view.overflow is Overflow.CLIP else "cut with an ellipsis"
        why = (
            f"'{field}' is {length} characters, over the maximum of {view.max_length}:"
            f" shorten it (until then it is shown {shown})"
        )
        return LayoutViolation(field, ViolationKind.TOO_LONG, length, view.max_length, why)
    return None
