"""Guard against stubs that no longer match the protos they came from."""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHECKOUT_PROTOS = Path(__file__).resolve().parent.parent / "protos"


class StaleStubsError(ImportError):
    """The generated stubs were built from other protos than those in protos/."""


def _digest(protos: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(protos.rglob("*.proto")):
        digest.update(path.relative_to(protos).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def check_fresh() -> None:
    """In a source checkout, refuse to run on stubs built from other protos."""
    if not _CHECKOUT_PROTOS.is_dir():
        return  # an installed wheel: its stubs were built with it
    try:
        from brewmesh._stubs_stamp import PROTOS_SHA256
    except ImportError:
        raise StaleStubsError("proto stubs are missing: run `python3 tasks.py setup`") from None
    if _digest(_CHECKOUT_PROTOS) != PROTOS_SHA256:
        raise StaleStubsError("proto stubs are older than protos/: run `python3 tasks.py setup`")
