"""Clients built from the protos that last landed keep working against the current server.

Stubs are generated from the protos at the commit named in
`.ci/proto-baseline` (the one `buf breaking` checks against) into a
directory of their own; tests/old_client.py runs the acceptance scenario
with them, in a process that imports nothing of the current brewmesh.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tarfile
from io import BytesIO
from pathlib import Path

import pytest

from tests.build_scripts import scripts_module
from tests.conftest import ROOT, MeshUnderTest, start_machine_process

buf_breaking = scripts_module("buf_breaking")
build_protos = scripts_module("build_protos")

CLIENT_SECONDS = 120


@pytest.fixture(scope="session")
def old_stubs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Python stubs of the baseline commit's protos, as the only `brewmesh` package on the path."""
    commit = buf_breaking.baseline_commit()
    root = tmp_path_factory.mktemp("old-stubs")
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit, "protos"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(root, filter="data")
    protos, out = root / "protos", root / "stubs"
    out.mkdir()
    files = [str(p.relative_to(protos)) for p in sorted(protos.rglob("*.proto"))]
    includes = [f"-I{protos}", *(f"-I{d}" for d in build_protos.include_dirs()[1:])]
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", *includes, f"--python_out={out}",
         f"--grpc_python_out={out}", *files],
        check=True,
    )  # fmt: skip
    for package in [out / "brewmesh", *(out / "brewmesh").rglob("*")]:
        if package.is_dir():
            (package / "__init__.py").touch()  # a regular package: it wins over the installed brewmesh
    return out


async def test_the_acceptance_scenario_passes_with_the_last_landed_stubs(
    mesh: MeshUnderTest, old_stubs: Path, tmp_path: Path
) -> None:
    machine = start_machine_process("vending", brew_seconds=0.2)
    try:
        # Asynchronously: the embedded mesh serves on this test's event loop.
        client = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "tests" / "old_client.py"), "--address", f"127.0.0.1:{mesh.port}",
            "--admin-key", mesh.admin_key, "--machine", machine.address,
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(old_stubs)}, cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        async with asyncio.timeout(CLIENT_SECONDS):
            out, err = await client.communicate()
    finally:
        machine.stop()
    assert client.returncode == 0, err.decode()
    report = json.loads(out)
    assert report["recipe"] == "recipes/old-client-coffee:lungo-customato"
    [found] = report["search"]
    assert found["defaultVolume"] == "10 fl oz"
    assert report["started_volume_ml"] == 300 and report["forwarded"] is True
    watched = json.dumps(report["watched"])
    assert '"takeout_ready"' in watched and '"finished"' in watched
    assert report["run"]["state"] == "STATE_FINISHED"
    assert report["run"]["context"] == {"takeout_ready": True}


def test_the_old_client_imports_only_the_baseline_stubs(old_stubs: Path, tmp_path: Path) -> None:
    """The scenario above proves nothing if the old client silently imported the current stubs."""
    probe = "import brewmesh, brewmesh.recipes.v1.recipes_pb2 as m; print(m.__file__, brewmesh.__file__)"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(old_stubs)},
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    stub_file, package_file = done.stdout.split()
    assert Path(stub_file).is_relative_to(old_stubs) and Path(package_file).is_relative_to(old_stubs)
