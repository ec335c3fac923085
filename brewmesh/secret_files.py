"""Secrets kept in the data directory, created once even by racing processes."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def read_or_create(path: Path, make: Callable[[], str]) -> tuple[str, bool]:
    """The secret in `path`, creating it (mode 0600) if absent; and whether it was created now."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return _read(path), False
    with os.fdopen(fd, "w") as file:
        file.write(make() + "\n")
    return _read(path), True


def _read(path: Path) -> str:
    # Another process may have created the file and not yet written it.
    for _ in range(100):
        text = path.read_text().strip()
        if text:
            return text
        os.sched_yield()
    raise RuntimeError(f"{path} is empty: delete it and start again")
