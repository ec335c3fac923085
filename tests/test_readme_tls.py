"""The README's TLS commands work when pasted: certificates made with openssl, a TLS mesh listed
with grpcurl, and a run on a mutual-TLS mesh to a machine that serves only the runner."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BIN, ROOT, free_port

BLOCKS = re.compile(r"```bash\n(.*?)```", re.DOTALL)
PORTS = ("50071", "50072", "50073")
EXPECTED = (
    "brewmesh.runner.v1.ProgramRunner",  # grpcurl -cacert ... list
    '"callerTokenSet": true',  # the token is write-only
    '"event": "finished"',  # the runner's run on the token-guarded machine
    "Code: Unauthenticated",  # anyone else on that machine
)
SCRIPT_SECONDS = 120


def tls_script() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("<!-- tls:start -->")[1].split("<!-- tls:end -->")[0]
    return "\n".join(BLOCKS.findall(section))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the README makes its certificates with openssl")
def test_readme_tls_commands_run_as_written(tmp_path: Path) -> None:
    script = tls_script().replace("/tmp/bm-tls", str(tmp_path / "bm-tls"))
    for port in PORTS:
        script = script.replace(port, str(free_port()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BREWMESH_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    shell = subprocess.Popen(
        ["bash", "-c", script], cwd=ROOT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = shell.communicate(timeout=SCRIPT_SECONDS)
    finally:  # whatever the script left running (it stops its own servers) goes with it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGKILL)
        shell.communicate()
    for expected in EXPECTED:
        assert expected in output, f"missing {expected!r} in:\n{output}"
    assert output.count("Failed to dial target host") == 2, output  # plaintext; no client certificate
    assert "Traceback" not in output and "brewmesh stopped" in output, output
