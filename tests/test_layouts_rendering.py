"""How a layout renders and checks values, for any value and any view rule."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from brewmesh.services.recipes.layouts import FieldView, LayoutProperty, LayoutSpec, Overflow
from brewmesh.services.recipes.rendering import ELLIPSIS, ViolationKind, check, render, render_fields

texts = st.text(max_size=300)
limits = st.integers(min_value=1, max_value=200)
overflows = st.sampled_from(Overflow)


@given(texts, limits, overflows)
def test_rendered_text_is_never_longer_than_max_length(
    text: str, max_length: int, overflow: Overflow
) -> None:
    shown = render(text, FieldView(0, max_length, overflow))
    assert len(shown.text) <= max_length
    assert shown.truncated == (len(text) > max_length)


@given(texts, limits, overflows)
def test_a_value_that_fits_is_shown_unchanged(text: str, max_length: int, overflow: Overflow) -> None:
    if len(text) <= max_length:
        assert render(text, FieldView(0, max_length, overflow)).text == text


@given(texts, limits)
def test_ellipsis_keeps_the_start_and_ends_with_the_ellipsis(text: str, max_length: int) -> None:
    shown = render(text, FieldView(0, max_length, Overflow.ELLIPSIS))
    if shown.truncated:
        assert len(shown.text) == max_length
        assert shown.text.endswith(ELLIPSIS)
        assert text.startswith(shown.text[:-1])


@given(texts, limits)
def test_clip_keeps_exactly_the_first_characters(text: str, max_length: int) -> None:
    shown = render(text, FieldView(0, max_length, Overflow.CLIP))
    assert shown.text == text[:max_length]


@given(texts)
def test_no_max_length_means_no_limit(text: str) -> None:
    shown = render(text, FieldView(0, 0, Overflow.CLIP))
    assert (shown.text, shown.truncated) == (text, False)


def test_lengths_count_characters_not_bytes() -> None:
    shown = render("Café crème ☕", FieldView(0, 12, Overflow.ELLIPSIS))
    assert (shown.text, shown.truncated) == ("Café crème ☕", False)
    assert render("Café crème ☕", FieldView(0, 5, Overflow.ELLIPSIS)).text == "Café…"


SPEC = LayoutSpec(
    "recipe_search",
    (
        LayoutProperty("title", FieldView(3, 10, Overflow.ELLIPSIS)),
        LayoutProperty("note", FieldView(0, 5, Overflow.CLIP)),
    ),
    ("title",),
)


@given(st.dictionaries(st.sampled_from(["title", "note", "other"]), st.text(min_size=1, max_size=30)))
def test_check_and_render_agree(values: dict[str, str]) -> None:
    violations = check(SPEC, values)
    rendered = render_fields(SPEC, values)
    missing = [v for v in violations if v.kind is ViolationKind.MISSING_REQUIRED]
    assert (rendered is None) == bool(missing)
    if rendered is not None:
        too_long = {v.field for v in violations if v.kind is ViolationKind.TOO_LONG}
        assert {r.field for r in rendered if r.truncated} == too_long
        assert [r.field for r in rendered] == ["title", "note"]
