"""The package as a user installs it: a wheel built from the tracked files, in a fresh venv.

The wheel holds the generated stubs (built during the build, as in a fresh
clone) with their .pyi types and py.typed, and no top-level package but
`brewmesh` (the services/ folder is `brewmesh.services`). Installed with pip
into a new venv, its `brewmesh` command starts the mesh, and a Python client
makes a call that `mypy --strict` checks against the installed types (the `typed`
extra).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port, wait_for_serving

BUILD_SECONDS = 300
CLIENT = """
import asyncio, sys
from brewmesh.client import connect
from brewmesh.bus.v1 import event_bus_pb2

async def main() -> None:
    async with connect(sys.argv[1]) as mesh:
        apis = await mesh.bus.ListApis(event_bus_pb2.ListApisRequest())
        print(",".join(api.name for api in apis.apis))

asyncio.run(main())
"""
MISUSE = """
from brewmesh.client import MeshClient
from brewmesh.recipes.v1 import recipes_pb2


async def misuse(mesh: MeshClient) -> int:
    recipe = await mesh.recipes.GetRecipe(recipes_pb2.ListRecipesRequest())
    return recipe.no_such_field
"""


def _tracked_copy(target: Path) -> Path:
    """The tracked files of this checkout (as they are now), without anything generated."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            destination.symlink_to(source.readlink())
        elif source.is_file():
            shutil.copy2(source, destination)
    return target


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """(the built wheel, the build's output)."""
    source = _tracked_copy(tmp_path_factory.mktemp("source"))
    dist = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v",
         "-w", str(dist), str(source)],
        capture_output=True, text=True, timeout=BUILD_SECONDS, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    [found] = dist.glob("brewmesh-*.whl")
    yield found, built.stdout + built.stderr


def test_the_wheel_holds_the_stubs_and_only_brewmesh(wheel: tuple[Path, str]) -> None:
    path, output = wheel
    assert_holds_the_stubs_and_only_brewmesh(path)
    assert "would be ignored" not in output  # setuptools' warning for data in an unlisted package


def assert_holds_the_stubs_and_only_brewmesh(path: Path) -> None:
    names = zipfile.ZipFile(path).namelist()
    assert {n.split("/")[0] for n in names} == {"brewmesh", f"{path.name.split('-py3')[0]}.dist-info"}
    for module in ("recipes/v1/recipes_pb2", "runner/v1/program_runner_pb2_grpc", "bus/v1/events_pb2"):
        assert f"brewmesh/{module}.py" in names and f"brewmesh/{module}.pyi" in names
    assert "brewmesh/py.typed" in names and "brewmesh/services/runner/servicer.py" in names


def test_the_sdist_builds_the_same_wheel_from_its_protos(tmp_path: Path) -> None:
    """`python -m build`'s sdist carries the protos and the script that turns them into stubs."""
    source, dist = _tracked_copy(tmp_path / "source"), tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--no-isolation", "-o", str(dist), str(source)],
        capture_output=True, text=True, timeout=BUILD_SECONDS, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    [sdist] = dist.glob("brewmesh-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"protos/brewmesh/recipes/v1/recipes.proto", "scripts/build_protos.py", "setup.py"} <= names
    assert not {n for n in names if n.startswith(("tests/", "bench/", "brewmesh/recipes/v1/"))}
    wheeled = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "wheel"), str(sdist)],
        capture_output=True, text=True, timeout=BUILD_SECONDS, check=False,
    )  # fmt: skip
    assert wheeled.returncode == 0, wheeled.stdout[-3000:] + wheeled.stderr[-3000:]
    [wheel] = (tmp_path / "wheel").glob("brewmesh-*.whl")
    assert_holds_the_stubs_and_only_brewmesh(wheel)


def test_the_installed_command_serves_and_a_typed_client_calls_it(
    wheel: tuple[Path, str], tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", f"{wheel[0]}[typed]"],
        capture_output=True, text=True, timeout=BUILD_SECONDS, check=False,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-3000:]
    version = subprocess.run(
        [str(venv / "bin" / "brewmesh"), "--version"], capture_output=True, text=True, check=True, timeout=60
    )
    assert version.stdout.startswith("brewmesh 0.1.0")
    port = free_port()
    # Started outside the checkout: nothing but the installed package can be imported.
    mesh = subprocess.Popen(
        [str(venv / "bin" / "brewmesh"), "up", "--port", str(port), "--data-dir", str(tmp_path / "data")],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_for_serving(f"127.0.0.1:{port}", mesh)
        called = subprocess.run(
            [str(venv / "bin" / "python"), "-c", CLIENT, f"127.0.0.1:{port}"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        mesh.terminate()
        mesh.communicate(timeout=30)
    assert called.returncode == 0, called.stderr
    assert "brewmesh.recipes.v1.RecipeService" in called.stdout.split(",")

    # What the client developer's type checker sees: the installed stubs, typed with the extra.
    assert type_check(CLIENT, venv, tmp_path).returncode == 0
    misused = type_check(MISUSE, venv, tmp_path)
    assert 'incompatible type "ListRecipesRequest"; expected "GetRecipeRequest"' in misused.stdout
    assert '"Recipe" has no attribute "no_such_field"' in misused.stdout


def type_check(source: str, venv: Path, directory: Path) -> subprocess.CompletedProcess[str]:
    """`mypy --strict` on `source` against what `venv` has installed (mypy itself is this checkout's)."""
    path = directory / "client_code.py"
    path.write_text(source)
    mypy, python = Path(sys.executable).parent / "mypy", venv / "bin" / "python"
    command = [
        str(mypy),
        "--strict",
        "--python-executable",
        str(python),
        "--cache-dir",
        str(directory / "cache"),
        str(path),
    ]
    return subprocess.run(command, capture_output=True, text=True, cwd=directory, timeout=300, check=False)
