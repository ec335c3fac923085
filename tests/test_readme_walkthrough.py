"""The README's grpcurl walkthrough works when pasted, against a fresh `brewmesh up`."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from pathlib import Path

from tests.conftest import BIN, ROOT, free_port, wait_for_serving

BLOCKS = re.compile(r"```bash\n(.*?)```", re.DOTALL)


def walkthrough_script() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("<!-- walkthrough:start -->")[1].split("<!-- walkthrough:end -->")[0]
    return "\n".join(BLOCKS.findall(section))


def test_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    mesh_port, machine_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "BREWMESH_ADMIN_KEY"}
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    mesh = subprocess.Popen(
        [str(BIN / "brewmesh"), "up", "--port", str(mesh_port)],  # default data dir, as a new user has it
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    script = walkthrough_script().replace("50051", str(mesh_port)).replace("50061", str(machine_port))
    try:
        wait_for_serving(f"127.0.0.1:{mesh_port}", mesh)
        walk = subprocess.Popen(
            ["bash", "-c", script], cwd=tmp_path, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            output, _ = walk.communicate(timeout=120)
        finally:
            if walk.poll() is None:
                os.killpg(walk.pid, signal.SIGKILL)
            _kill_leftovers(walk.pid)
    finally:
        mesh.send_signal(signal.SIGTERM)
        banner, _ = mesh.communicate(timeout=20)
    assert walk.returncode == 0, output
    assert "admin key (generated, shown once" in banner
    for expected in (
        "brewmesh.runner.v1.ProgramRunner",  # list
        "else the one for the language",  # describe shows the doc comment
        '"defaultVolume": "10 fl oz"',
        '"defaultVolume": "300 ml"',
        '"text": "10 fl oz"',
        "Code: PermissionDenied",
        "Code: InvalidArgument",
        '"field":"recipe.product_properties.default_volume_ml"',
        '"type": "recipe_created"',
        '"event": "takeout_ready"',
        '"takeout_ready": true',
        '"state": "STATE_FINISHED"',
    ):
        assert expected in output, f"missing {expected!r} in:\n{output}"
    # Exactly the failures the walkthrough shows on purpose: two refusals and the -max-time end.
    assert output.count("ERROR:") == 3, output


def _kill_leftovers(session: int) -> None:
    """Background jobs of the walkthrough (machine, watch) must not outlive the test."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(session, signal.SIGKILL)
