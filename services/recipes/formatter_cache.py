"""Every volume formatter in memory: FormatVolume and SearchRecipes read no table.

Formatters are few (one per language or country) and read on every
FormatVolume and SearchRecipes. The cache is dropped when a change commits in
this process and when another process announces one on the bus; a load that
raced with a change is used once but not kept.
"""

from __future__ import annotations

from google.protobuf.message import Message

from brewmesh.services.recipes import formatters
from brewmesh.services.recipes.formatters import VolumeFormatter
from brewmesh.services.recipes.locales import Locale
from brewmesh.storage import Store, Tx


class FormatterCache:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._by_tag: dict[str, VolumeFormatter] | None = None
        self._generation = 0

    def invalidate(self) -> None:
        self._generation += 1
        self._by_tag = None

    def on_change(self, _: Message) -> None:
        """A formatter was put or deleted (observed on the bus)."""
        self.invalidate()

    async def resolve(self, locale: Locale) -> VolumeFormatter | None:
        """The formatter a reader in `locale` gets: the country's, else the language's."""
        by_tag = self._by_tag if self._by_tag is not None else await self._load()
        return by_tag.get(locale.tag) or by_tag.get(locale.language)

    async def _load(self) -> dict[str, VolumeFormatter]:
        generation = self._generation
        loaded = await self._store.read(_all)
        if generation == self._generation:
            self._by_tag = loaded
        return loaded


def _all(tx: Tx) -> dict[str, VolumeFormatter]:
    return {f.spec.locale.tag: f for f in formatters.list_all(tx)}
