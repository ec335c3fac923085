"""What the recipes domain announces when it changes something.

Domain operations call an `Announcer` inside the transaction that makes the
change, so an event is staged if and only if the change commits. The
implementation that turns these calls into bus events (with protos) lives
beside the servicers, in `publish.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from brewmesh.storage import Tx

if TYPE_CHECKING:
    from brewmesh.services.recipes.formatters import VolumeFormatter
    from brewmesh.services.recipes.l10n import L10n
    from brewmesh.services.recipes.layouts import Layout
    from brewmesh.services.recipes.recipes import Recipe


class Announcer(Protocol):
    def recipe_created(self, tx: Tx, recipe: Recipe) -> None: ...

    def recipe_updated(self, tx: Tx, recipe: Recipe, mask: Sequence[str]) -> None: ...

    def recipe_deleted(self, tx: Tx, name: str) -> None: ...

    def l10n_put(self, tx: Tx, l10n: L10n) -> None: ...

    def layout_created(self, tx: Tx, layout: Layout) -> None: ...

    def formatter_put(self, tx: Tx, formatter: VolumeFormatter) -> None: ...

    def formatter_deleted(self, tx: Tx, name: str) -> None: ...
