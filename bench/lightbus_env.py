"""A venv of its own for Lightbus, the reference the event-bus benchmark compares against.

    python -m bench.lightbus_env     # makes it (once) and prints its python

Lightbus 1.1.2 (2021) needs aioredis 1.x, which cannot share a venv with
brewmesh's `redis` client, so it lives in `build/lightbus-venv` (build/ is
git-ignored), where `bench/lightbus_side.py` runs. Every package is pinned,
so every machine measures the same code; the pins were found by trying on
Python 3.11:

- aioredis==1.3.1: Lightbus asks only for aioredis>=1.2.0, so pip would take
  2.0.1, whose API Lightbus does not speak and which fails to import on
  3.11 ("duplicate base class TimeoutError").
- setuptools==70.3.0: Lightbus imports `pkg_resources` (to find its
  transports by entry point) without declaring it; setuptools 84 no longer
  has it, and 80 warns on every import.
- async-timeout==3.0.1: aioredis 1.3.1 (in its sentinel code) uses
  `with timeout(...)`, which async-timeout 4 removed.
- jsonschema==3.2.0 (with attrs, pyrsistent, six), PyYAML==6.0.4,
  hiredis==3.5.0: the era's jsonschema (4.x works too, no faster: Lightbus
  calls `jsonschema.validate` for every event either way), a PyYAML with
  3.11 wheels (Lightbus only calls `safe_load`), and the newest hiredis,
  whose `Reader` aioredis 1.3.1 still drives.

A stamp file records what was installed for which interpreter: while it
matches, the venv is reused at the cost of reading one small file.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import sys
import venv
from pathlib import Path
from typing import TextIO

PINS = (
    "lightbus==1.1.2",
    "aioredis==1.3.1",
    "async-timeout==3.0.1",
    "hiredis==3.5.0",
    "jsonschema==3.2.0",
    "attrs==26.1.0",
    "pyrsistent==0.20.0",
    "six==1.17.0",
    "PyYAML==6.0.4",
    "setuptools==70.3.0",
)
SIDE_SCRIPT = Path(__file__).with_name("lightbus_side.py")
STAMP = "brewmesh-lightbus-stamp.json"
INSTALL_SECONDS = 600


def venv_dir(root: Path) -> Path:
    """Where the venv lives: under build/, which git ignores."""
    return root / "build" / "lightbus-venv"


def venv_python(root: Path) -> Path:
    """The venv's interpreter, the one to run `SIDE_SCRIPT` with."""
    return venv_dir(root) / "bin" / "python"


def _wanted() -> dict[str, object]:
    """What the stamp must say: the pins, and the interpreter the venv was made from."""
    return {"python": sys.version, "base": sys.base_prefix, "pins": list(PINS)}


def _is_current(root: Path) -> bool:
    """Whether the venv is there and its stamp says what we want now."""
    stamp = venv_dir(root) / STAMP
    try:
        current = json.loads(stamp.read_text()) == _wanted()
    except (OSError, ValueError):
        return False
    return current and venv_python(root).exists()


def ensure_lightbus_venv(root: Path, *, out: TextIO = sys.stderr) -> Path:
    """The python of `root/build/lightbus-venv`, with the pinned Lightbus installed in it.

    The first call (or one after the pins or the interpreter changed)
    makes the venv anew and installs the pins from PyPI, printing to `out`
    what it installs; later calls only check the stamp. A lock file keeps
    two benchmark processes from building it at once. A failed install
    leaves no stamp, so the next call starts over.
    """
    target = venv_dir(root)
    if _is_current(root):
        return venv_python(root)
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / "lightbus-venv.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_current(root):  # built by another process meanwhile
            return venv_python(root)
        print(f"lightbus venv: making {target}", file=out, flush=True)
        if target.exists():
            shutil.rmtree(target)
        venv.EnvBuilder(with_pip=True, symlinks=True).create(target)
        print(f"lightbus venv: installing {' '.join(PINS)}", file=out, flush=True)
        python = venv_python(root)
        install = [str(python), "-m", "pip", "install", "--quiet", "--no-input", "--only-binary=:all:", *PINS]
        done = subprocess.run(install, check=False, capture_output=True, text=True, timeout=INSTALL_SECONDS)
        out.write(done.stdout + done.stderr)
        done.check_returncode()
        freeze = [str(python), "-m", "pip", "freeze", "--all"]
        installed = subprocess.run(freeze, check=True, capture_output=True, text=True, timeout=60).stdout
        print(f"lightbus venv: installed {' '.join(installed.split())}", file=out, flush=True)
        (target / STAMP).write_text(json.dumps(_wanted(), indent=1) + "\n")
    return python


if __name__ == "__main__":
    print(ensure_lightbus_venv(Path(__file__).resolve().parents[1]))
