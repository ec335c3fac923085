"""The README's partner machine example runs, and its grpcurl commands work on it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import BIN, ROOT, free_port, wait_for_serving


def section() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split("## Writing a partner machine")[1].split("### Reference machines")[0]


def test_readme_machine_serves_runs(tmp_path: Path) -> None:
    port = free_port()
    text = section()
    [program] = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    [commands] = re.findall(r"```bash\n(.*?)```", text, re.DOTALL)
    (tmp_path / "my_machine.py").write_text(program.replace("50061", str(port)))
    machine = subprocess.Popen(
        [sys.executable, "my_machine.py"], cwd=tmp_path, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for_serving(f"127.0.0.1:{port}", machine)
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        script = "set -e\n" + commands.replace("50061", str(port))
        done = subprocess.run(
            ["bash", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        machine.send_signal(signal.SIGTERM)
        machine.communicate(timeout=20)
    assert done.returncode == 0, done.stderr
    assert machine.returncode == 0
    objects = [json.loads(m) for m in _json_objects(done.stdout)]
    assert any(o.get("handled") is True for o in objects)  # Signal answered
    events = [o["event"] for o in objects if "event" in o and "sequence" in o]
    assert events[:2] == ["started", "brewing_started"]
    assert events[-3:] == ["context_set", "takeout_ready", "finished"]
    final = objects[-1]
    assert final["state"] == "STATE_FINISHED" and final["context"] == {"takeout_ready": True}


def _json_objects(text: str) -> list[str]:
    decoder, found, i = json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        obj, i = decoder.raw_decode(text, i)
        found.append(json.dumps(obj))
    return found
