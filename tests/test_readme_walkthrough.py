"""The README's grpcurl walkthrough works when pasted, and when pasted again: twice against a
fresh `brewmesh up`, then once more after restarting it on the same data directory."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import BIN, ROOT, free_ports, wait_for_serving

BLOCKS = re.compile(r"```bash\n(.*?)```", re.DOTALL)
EXPECTED = (
    "brewmesh.runner.v1.ProgramRunner",  # list
    "else the one for the language",  # describe shows the doc comment
    "new partner key: bmk_",  # the partner rotated its own key
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
)
SHOWN_FAILURES = 3
"""The failures the walkthrough shows on purpose: two refusals and the -max-time end."""


def walkthrough_script() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("<!-- walkthrough:start -->")[1].split("<!-- walkthrough:end -->")[0]
    return "\n".join(BLOCKS.findall(section))


def test_readme_walkthrough_runs_as_written_again_and_after_a_restart(tmp_path: Path) -> None:
    mesh_port, machine_port = free_ports(2)
    env = {k: v for k, v in os.environ.items() if k != "BREWMESH_ADMIN_KEY"}
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    script = walkthrough_script().replace("50051", str(mesh_port)).replace("50061", str(machine_port))
    with _mesh(tmp_path, mesh_port, env) as first_start:
        first = _walk(script, tmp_path, env)
        second = _walk(script, tmp_path, env)
    with _mesh(tmp_path, mesh_port, env) as restart:
        after_restart = _walk(script, tmp_path, env)
    assert "admin key (generated, shown once" in "".join(first_start)
    assert "admin key (generated" not in "".join(restart)  # the same data, the same admin key
    for output in (first, second, after_restart):
        for expected in EXPECTED:
            assert expected in output, f"missing {expected!r} in:\n{output}"
        assert "Traceback" not in output and "malformed" not in output, output
    assert first.count("ERROR:") == SHOWN_FAILURES, first
    # Again, BuildRecipe answers that the recipe exists; nothing else fails.
    for again in (second, after_restart):
        assert again.count("ERROR:") == SHOWN_FAILURES + 1 and "Code: AlreadyExists" in again, again


@contextlib.contextmanager
def _mesh(cwd: Path, port: int, env: dict[str, str]) -> Iterator[list[str]]:
    """`brewmesh up` in `cwd` with its default data directory, as a new user has it; yields a
    list that holds its output once it stopped."""
    mesh = subprocess.Popen(
        [str(BIN / "brewmesh"), "up", "--port", str(port)],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    banner: list[str] = []
    try:
        wait_for_serving(f"127.0.0.1:{port}", mesh)
        yield banner
    finally:
        mesh.send_signal(signal.SIGTERM)
        banner.append(mesh.communicate(timeout=20)[0])


def _walk(script: str, cwd: Path, env: dict[str, str]) -> str:
    walk = subprocess.Popen(
        ["bash", "-c", script], cwd=cwd, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = walk.communicate(timeout=120)
    finally:
        if walk.poll() is None:
            os.killpg(walk.pid, signal.SIGKILL)
        _kill_leftovers(walk.pid)
    assert walk.returncode == 0, output
    return output


def _kill_leftovers(session: int) -> None:
    """Background jobs of the walkthrough (machine, watch) must not outlive the test."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(session, signal.SIGKILL)
