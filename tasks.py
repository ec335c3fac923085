#!/usr/bin/env python3
"""Set up brewmesh and run it or its checks. Needs only python3.

    python3 tasks.py up [brewmesh up options]   set up, then start the mesh
    python3 tasks.py test [pytest options]      set up (with PostgreSQL, Redis), then run every check and test
    python3 tasks.py setup                      set up only (.venv, stubs)

Setting up creates .venv, installs the project and its dev tools into it
(again only when pyproject.toml changed) and builds the stubs from protos/.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
PY = BIN / "python"
INSTALLED_STAMP = VENV / ".brewmesh-installed"


def run(*cmd: str | Path, **kwargs: object) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT, **kwargs)  # type: ignore[call-overload]


def setup() -> None:
    if not PY.exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
    wanted = hashlib.sha256(
        (ROOT / "pyproject.toml").read_bytes() + (ROOT / "setup.py").read_bytes()
    ).hexdigest()
    if not INSTALLED_STAMP.exists() or INSTALLED_STAMP.read_text() != wanted:
        run(PY, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
        run(PY, "-m", "pip", "install", "--quiet", "-e", ".[dev]")
        INSTALLED_STAMP.write_text(wanted)
    run(PY, "scripts/build_protos.py")


def check_protos() -> None:
    run(BIN / "buf", "lint", "brewmesh/_descriptors.binpb", "--path", "brewmesh")
    run(PY, "scripts/buf_breaking.py")


def install_engines() -> None:
    """The tests start real PostgreSQL and Redis servers: install their binaries if missing."""
    run("bash", ROOT / "scripts" / "install_engines.sh")


def test(args: list[str]) -> None:
    setup()
    install_engines()
    run(BIN / "ruff", "check", ".")
    run(BIN / "ruff", "format", "--check", ".")
    run(BIN / "mypy")
    check_protos()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    run(PY, "-m", "pytest", *args, env=env)


def up(args: list[str]) -> None:
    setup()
    os.execv(str(BIN / "brewmesh"), [str(BIN / "brewmesh"), "up", *args])


def main() -> None:
    command, *args = sys.argv[1:] or ["help"]
    try:
        if command == "setup":
            setup()
        elif command == "test":
            test(args)
        elif command == "up":
            up(args)
        else:
            print(__doc__)
            sys.exit(0 if command == "help" else 2)
    except subprocess.CalledProcessError as error:
        sys.exit(error.returncode or 1)


if __name__ == "__main__":
    main()
