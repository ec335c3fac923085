"""The recipes component (being built)."""

from brewmesh.runtime import Component


def component() -> Component:
    return Component(name="recipes", apis=[], migrations=(), bindings=lambda rt: [])
