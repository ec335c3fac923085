"""Free-form values from clients (`google.protobuf.Struct`): checked, then plain Python.

Every request field that takes a Struct (a recipe's `parameters`, a
signal's `attributes`) goes through `check_struct`, the one place that
bounds them: nesting depth, how many values in all, and numbers JSON can
carry (no NaN or Infinity). The walk stops at the first bound it passes, so
a hostile Struct costs at most `MAX_VALUES` steps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format, struct_pb2

from brewmesh.errors import Violations, quote

MAX_DEPTH = 10
"""Objects and lists nested in one another, the Struct itself being the first."""
MAX_VALUES = 2000
"""Values in all: every object member and list item counts one."""

MAX_KEY_SHOWN = 40
"""Characters of each key shown in the path of a bad value."""

Container = dict[str, Any] | list[Any]
Members = Any  # a Struct's fields (a map of Values) or a ListValue's values (a list of them)
Where = tuple[str | int, ...]  # keys and indexes from the top; a text only for an error
Pending = list[tuple[Container, int, Members, Where]]


class _Refused(Exception):
    """Ends the walk at the first value past a bound: `description` says which."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


def check_struct(v: Violations, field_path: str, struct: struct_pb2.Struct) -> dict[str, Any]:
    """`struct` as plain values (dicts, lists, str, float, bool, None); on a violation
    (reported at `field_path`), {}."""
    top: dict[str, Any] = {}
    # Each entry: the container to fill, its depth, the members that go in it, where it is.
    pending: Pending = [(top, 1, struct.fields, ())]
    seen = 0
    try:
        while pending:
            container, depth, members, where = pending.pop()
            seen += len(members)  # counted before any is read: a huge one costs nothing
            if seen > MAX_VALUES:
                raise _Refused(f"holds more than {MAX_VALUES} values: send at most {MAX_VALUES}")
            if isinstance(container, dict):
                for key, value in members.items():
                    container[key] = _plain(value, depth, (*where, key), pending)
            else:
                container.extend(
                    _plain(value, depth, (*where, i), pending) for i, value in enumerate(members)
                )
    except _Refused as error:
        v.add(field_path, error.description)
        return {}
    return top


def _plain(value: struct_pb2.Value, depth: int, where: Where, pending: Pending) -> Any:
    """One value as plain Python; an object or list is returned empty and queued in `pending`."""
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        if not math.isfinite(value.number_value):
            raise _Refused(
                f"has {value.number_value} at {_path(where)}: JSON numbers are finite;"
                " send a finite number, or the text in a string"
            )
        return value.number_value
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind not in ("struct_value", "list_value"):
        return None  # null_value, or no kind set: JSON null
    if depth >= MAX_DEPTH:
        raise _Refused(f"nests objects and lists more than {MAX_DEPTH} deep: flatten it")
    if kind == "struct_value":
        members: dict[str, Any] = {}
        pending.append((members, depth + 1, value.struct_value.fields, where))
        return members
    items: list[Any] = []
    pending.append((items, depth + 1, value.list_value.values, where))
    return items


def _path(where: Where) -> str:
    """Where a value is, e.g. 'steps[2].temperature' (each key cut short)."""
    text = "".join(f"[{step}]" if isinstance(step, int) else f".{step[:MAX_KEY_SHOWN]}" for step in where)
    return quote(text.lstrip("."))


def to_struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    """JSON-like values as a Struct; ValueError/TypeError for anything else."""
    struct = struct_pb2.Struct()
    struct.update(dict(values))
    return struct


def from_struct(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as plain values (numbers as floats, as JSON has them)."""
    plain: dict[str, Any] = json_format.MessageToDict(struct)
    return plain
