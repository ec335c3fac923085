"""Protos to domain types and back: the only place that knows both.

Conversion from a request never fails: it keeps what the client sent
(unknown enum values become None) so the domain's checks can report every
violation with its field path. It keeps at most one item more than the
domain allows of any list or map (`capped`), so a huge one costs nothing
before its count is refused. A Struct is checked as it is converted
(`check_struct`), its violations reported in the `Violations` given.
"""

from __future__ import annotations

from datetime import datetime

from google.protobuf import struct_pb2, timestamp_pb2

from brewmesh.counts import capped, capped_map
from brewmesh.errors import Violations
from brewmesh.recipes.v1 import formatters_pb2, layouts_pb2, recipes_pb2
from brewmesh.services.recipes.builder import MAX_FORMATTERS, MAX_L10N, MAX_LAYOUTS, BuildInput, Built
from brewmesh.services.recipes.formatters import FormatterInput, Operation, Transform, VolumeFormatter
from brewmesh.services.recipes.l10n import MAX_VALUES, L10n, L10nInput
from brewmesh.services.recipes.layouts import (
    MAX_PROPERTIES,
    FieldView,
    Layout,
    LayoutProperty,
    LayoutSpec,
    NewLayout,
    Overflow,
)
from brewmesh.services.recipes.recipes import (
    MAX_MASK_PATHS,
    PARAMETERS,
    PROGRAM,
    VOLUME,
    NewRecipe,
    Properties,
    Recipe,
)
from brewmesh.services.recipes.rendering import LayoutViolation, Rendered, ViolationKind
from brewmesh.services.recipes.search import RecipeView
from brewmesh.struct_values import check_struct

_OVERFLOWS = {
    layouts_pb2.FieldView.OVERFLOW_UNSPECIFIED: Overflow.ELLIPSIS,
    layouts_pb2.FieldView.OVERFLOW_ELLIPSIS: Overflow.ELLIPSIS,
    layouts_pb2.FieldView.OVERFLOW_CLIP: Overflow.CLIP,
}
_OVERFLOW_PROTOS = {
    Overflow.ELLIPSIS: layouts_pb2.FieldView.OVERFLOW_ELLIPSIS,
    Overflow.CLIP: layouts_pb2.FieldView.OVERFLOW_CLIP,
}
_OPERATIONS = {
    formatters_pb2.ValueTransform.OPERATION_DIVIDE: Operation.DIVIDE,
    formatters_pb2.ValueTransform.OPERATION_MULTIPLY: Operation.MULTIPLY,
}
_OPERATION_PROTOS = {domain: proto for proto, domain in _OPERATIONS.items()}
_VIOLATION_KINDS = {
    ViolationKind.MISSING_REQUIRED: layouts_pb2.LayoutViolation.KIND_MISSING_REQUIRED,
    ViolationKind.TOO_SHORT: layouts_pb2.LayoutViolation.KIND_TOO_SHORT,
    ViolationKind.TOO_LONG: layouts_pb2.LayoutViolation.KIND_TOO_LONG,
}


def timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    proto = timestamp_pb2.Timestamp()
    proto.FromDatetime(moment)
    return proto


# -- recipes -------------------------------------------------------------------------------


def properties(v: Violations, proto: recipes_pb2.Recipe, with_parameters: bool = True) -> Properties:
    """The recipe's properties; `parameters` only `with_parameters` (an update may leave them)."""
    given = proto.execution_properties.parameters
    parameters = check_struct(v, PARAMETERS, given) if with_parameters else {}
    return Properties(
        proto.product_properties.default_volume_ml, proto.execution_properties.program_id, parameters
    )


def mask_paths(proto: recipes_pb2.UpdateRecipeRequest) -> list[str]:
    return capped(proto.update_mask.paths, MAX_MASK_PATHS)


def fields_set(proto: recipes_pb2.Recipe) -> list[str]:
    """The leaf fields a recipe in an update request sets (for an empty update mask)."""
    found = []
    if proto.product_properties.default_volume_ml:
        found.append(VOLUME)
    if proto.execution_properties.program_id:
        found.append(PROGRAM)
    if proto.execution_properties.HasField("parameters"):
        found.append(PARAMETERS)
    return found


def new_recipe(v: Violations, request: recipes_pb2.CreateRecipeRequest) -> NewRecipe:
    """The recipe to create; a bad Struct reported under `recipe`."""
    with v.under("recipe"):
        props = properties(v, request.recipe)
    return NewRecipe(request.namespace, request.id_component, props)


def recipe_proto(recipe: Recipe) -> recipes_pb2.Recipe:
    parameters = struct_pb2.Struct()
    parameters.update(dict(recipe.properties.parameters))
    return recipes_pb2.Recipe(
        name=recipe.name,
        product_properties=recipes_pb2.ProductProperties(
            default_volume_ml=recipe.properties.default_volume_ml
        ),
        execution_properties=recipes_pb2.ExecutionProperties(
            program_id=recipe.properties.program_id, parameters=parameters
        ),
        create_time=timestamp(recipe.create_time),
        update_time=timestamp(recipe.update_time),
    )


# -- localised values ------------------------------------------------------------------------


def l10n_input(request: recipes_pb2.PutRecipeL10nRequest) -> L10nInput:
    given = request.l10n
    values = capped_map(given.values, MAX_VALUES)
    return L10nInput(request.recipe, given.language_code, given.country_code, values)


def l10n_proto(l10n: L10n) -> recipes_pb2.RecipeL10n:
    return recipes_pb2.RecipeL10n(
        name=l10n.name,
        language_code=l10n.locale.language,
        country_code=l10n.locale.country,
        values=dict(l10n.values),
        update_time=timestamp(l10n.update_time),
    )


# -- layouts -------------------------------------------------------------------------------------


def layout_spec(proto: layouts_pb2.Layout) -> LayoutSpec:
    properties = tuple(
        LayoutProperty(
            p.field,
            FieldView(p.view.min_length, p.view.max_length, _OVERFLOWS.get(p.view.overflow)),
        )
        for p in capped(proto.properties, MAX_PROPERTIES)
    )
    return LayoutSpec(proto.kind, properties, tuple(capped(proto.required_fields, MAX_PROPERTIES)))


def new_layout(request: layouts_pb2.CreateLayoutRequest) -> NewLayout:
    return NewLayout(request.layout_id, layout_spec(request.layout))


def layout_proto(layout: Layout) -> layouts_pb2.Layout:
    properties = [
        layouts_pb2.LayoutProperty(
            field=p.field,
            view=layouts_pb2.FieldView(
                min_length=p.view.min_length,
                max_length=p.view.max_length,
                overflow=_OVERFLOW_PROTOS[p.view.overflow or Overflow.ELLIPSIS],
            ),
        )
        for p in layout.spec.properties
    ]
    return layouts_pb2.Layout(
        name=layout.name,
        kind=layout.spec.kind,
        properties=properties,
        required_fields=layout.spec.required_fields,
        create_time=timestamp(layout.create_time),
    )


def violation_proto(violation: LayoutViolation) -> layouts_pb2.LayoutViolation:
    return layouts_pb2.LayoutViolation(
        field=violation.field,
        kind=_VIOLATION_KINDS[violation.kind],
        length=violation.length,
        limit=violation.limit,
        description=violation.description,
    )


# -- formatters ------------------------------------------------------------------------------------


def formatter_input(proto: formatters_pb2.VolumeFormatter) -> FormatterInput:
    transform = None
    if proto.HasField("transform"):
        t = proto.transform
        transform = Transform(_OPERATIONS.get(t.operation), t.operand, t.decimals)
    return FormatterInput(proto.language_code, proto.country_code, proto.template, transform)


def formatter_proto(formatter: VolumeFormatter) -> formatters_pb2.VolumeFormatter:
    spec = formatter.spec
    proto = formatters_pb2.VolumeFormatter(
        name=formatter.name,
        language_code=spec.locale.language,
        country_code=spec.locale.country,
        template=spec.template,
        creator=formatter.creator,
        update_time=timestamp(formatter.update_time),
    )
    if spec.transform is not None and spec.transform.operation is not None:
        proto.transform.CopyFrom(
            formatters_pb2.ValueTransform(
                operation=_OPERATION_PROTOS[spec.transform.operation],
                operand=spec.transform.operand,
                decimals=spec.transform.decimals,
            )
        )
    return proto


# -- builder and search ------------------------------------------------------------------------------


def build_input(v: Violations, request: recipes_pb2.BuildRecipeRequest) -> BuildInput:
    """The build as asked; a bad Struct reported under `recipe.recipe`."""
    with v.under("recipe"):
        recipe = new_recipe(v, request.recipe)
    return BuildInput(
        recipe=recipe,
        l10n=[l10n_input(entry) for entry in capped(request.l10n, MAX_L10N)],
        layouts=[new_layout(entry) for entry in capped(request.layouts, MAX_LAYOUTS)],
        formatters=[
            formatter_input(entry.volume_formatter)
            for entry in capped(request.volume_formatters, MAX_FORMATTERS)
        ],
    )


def built_proto(built: Built) -> recipes_pb2.BuildRecipeResponse:
    return recipes_pb2.BuildRecipeResponse(
        recipe=recipe_proto(built.recipe),
        l10n=[l10n_proto(entry) for entry in built.l10n],
        layouts=[layout_proto(layout) for layout in built.layouts],
        volume_formatters=[formatter_proto(formatter) for formatter in built.formatters],
    )


def view_proto(view: RecipeView) -> recipes_pb2.RecipeView:
    return recipes_pb2.RecipeView(
        recipe=view.recipe_name,
        fields=[_rendered_proto(field) for field in view.fields],
        default_volume=view.default_volume,
        default_volume_ml=view.default_volume_ml,
    )


def _rendered_proto(field: Rendered) -> recipes_pb2.RenderedField:
    return recipes_pb2.RenderedField(field=field.field, text=field.text, truncated=field.truncated)
