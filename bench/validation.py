"""How long the largest request of each shape holds the event loop while it is validated.

    .venv/bin/python -m bench.validation

Issue 7's bound: no single request holds the loop more than 10 ms while it
is checked. Each shape is as large as the server accepts (under its 4 MiB
receive limit, within every count bound) and as wrong as can be, so every
check runs and the error is built: a BuildRecipe with every l10n value,
layout property and formatter wrong; one with 100,000 recipe parameters; one
with 30,000 empty layouts. Figure: CPU time on this thread of the check and
the error's status, the least of 20 runs (others share the cores).
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable

from brewmesh.errors import InvalidArgument, Violations, to_status
from brewmesh.recipes.v1 import layouts_pb2 as lpb
from brewmesh.recipes.v1 import recipes_pb2 as rpb
from brewmesh.server import MAX_MESSAGE_BYTES
from brewmesh.services.recipes import builder, convert
from brewmesh.services.recipes.builder import MAX_FORMATTERS, MAX_L10N, MAX_LAYOUTS
from brewmesh.services.recipes.l10n import MAX_VALUES
from brewmesh.services.recipes.layouts import MAX_PROPERTIES

TARGET_MS = 10.0
RUNS = 20


def _recipe() -> rpb.CreateRecipeRequest:
    return rpb.CreateRecipeRequest(
        namespace="my-coffee-company",
        id_component="lungo",
        recipe=rpb.Recipe(
            product_properties=rpb.ProductProperties(default_volume_ml=300),
            execution_properties=rpb.ExecutionProperties(program_id="lungo"),
        ),
    )


def every_part_wrong() -> rpb.BuildRecipeRequest:
    build = rpb.BuildRecipeRequest(recipe=_recipe())
    for _ in range(MAX_L10N):
        entry = build.l10n.add(l10n=rpb.RecipeL10n(language_code="en", country_code="US"))
        entry.l10n.values.update({f"Bad Key {j}": "" for j in range(MAX_VALUES)})
    for _ in range(MAX_LAYOUTS):
        spec = build.layouts.add(layout_id="my-coffee-company:card").layout
        spec.properties.extend(lpb.LayoutProperty(field=f"Field {j}") for j in range(MAX_PROPERTIES))
        spec.required_fields.extend(f"Missing {j}" for j in range(MAX_PROPERTIES))
    for _ in range(MAX_FORMATTERS):
        build.volume_formatters.add().volume_formatter.template = "no placeholder"
    return build


def many_parameters() -> rpb.BuildRecipeRequest:
    build = rpb.BuildRecipeRequest(recipe=_recipe())
    build.recipe.recipe.execution_properties.parameters.update({f"k{i}": i for i in range(100_000)})
    return build


def many_layouts() -> rpb.BuildRecipeRequest:
    return rpb.BuildRecipeRequest(layouts=[lpb.CreateLayoutRequest()] * 30_000)


def check(request: rpb.BuildRecipeRequest) -> None:
    """What the server does with it before answering: every check, then the error's status."""
    v = Violations()
    builder.check_build(v, convert.build_input(v, request))
    try:
        v.raise_if_any()
    except InvalidArgument as refused:
        to_status(refused)


def cpu_ms(work: Callable[[], object]) -> float:
    spent = []
    for _ in range(RUNS):
        started = time.thread_time()
        work()
        spent.append(time.thread_time() - started)
    return min(spent) * 1000


def main() -> None:
    shapes = {
        "BuildRecipe, every part wrong": every_part_wrong(),
        "BuildRecipe, 100,000 parameters": many_parameters(),
        "BuildRecipe, 30,000 empty layouts": many_layouts(),
    }
    print(f"{'request':36} {'bytes':>9} {'CPU ms':>8} {'target':>8}  verdict")
    missed = False
    for name, request in shapes.items():
        size = request.ByteSize()
        assert size < MAX_MESSAGE_BYTES, f"{name} is larger than the server accepts"
        ms = cpu_ms(functools.partial(check, request))
        verdict = "met" if ms < TARGET_MS else "MISSED"
        missed = missed or ms >= TARGET_MS
        print(f"{name:36} {size:>9,} {ms:>8.2f} {'< ' + format(TARGET_MS, 'g'):>8}  {verdict}")
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
