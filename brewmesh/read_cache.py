"""A bounded cache of recently loaded values, kept in step by forgetting.

The owner forgets a key when a change to it is announced (usually from a
bus event). A load that was under way while anything was forgotten may have
read the old value: it is returned to its caller but not kept.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class ReadCache(Generic[K, V]):
    """Least recently used values, at most `limit` of them."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._values: OrderedDict[K, V] = OrderedDict()
        self._generation = 0

    def forget(self, key: K) -> None:
        self._generation += 1
        self._values.pop(key, None)

    def forget_where(self, matches: Callable[[K], bool]) -> None:
        self._generation += 1
        for key in [k for k in self._values if matches(k)]:
            del self._values[key]

    def peek(self, key: K) -> V | None:
        """The cached value, if there is one (without loading)."""
        if key not in self._values:
            return None
        self._values.move_to_end(key)
        return self._values[key]

    async def get(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        """The cached value, or `load()`'s (kept unless a change raced with it)."""
        if (cached := self.peek(key)) is not None:
            return cached
        generation = self._generation
        value = await load()
        if generation == self._generation:
            self._values[key] = value
            if len(self._values) > self._limit:
                self._values.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._values)
