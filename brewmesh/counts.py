"""How many items a request may carry: checked before anything costly reads them.

A request may hold a million list items or map entries in a few MiB. The
conversion from protos keeps one more than the domain allows (`capped`), so
the domain's check (`check_count`) sees too many and the items past that are
never read; checks of each item run only when the count is within bounds.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence, Sized
from typing import TypeVar

from brewmesh.errors import Violations

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")


def capped(items: Sequence[T], limit: int) -> list[T]:
    """The first `limit` + 1 items: enough for `check_count` to tell there are too many."""
    return list(items[: limit + 1])


def capped_map(entries: Mapping[K, V], limit: int) -> dict[K, V]:
    """The first `limit` + 1 entries of a map."""
    return dict(itertools.islice(entries.items(), limit + 1))


def check_count(v: Violations, field_path: str, items: Sized, limit: int, what: str) -> bool:
    """Whether `items` holds at most `limit`; else a violation saying so."""
    if len(items) <= limit:
        return True
    v.add(field_path, f"has more than {limit} {what}: send at most {limit}")
    return False
