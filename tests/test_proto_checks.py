"""The proto checks CI runs catch what they are there to catch.

`buf breaking` must turn CI red when a change breaks compatibility with the
protos as they landed, and `buf lint` when an element has no doc comment
(grpcurl users read the protos through those comments). Each test edits a
copy of the real protos and runs the real `buf` on it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.build_scripts import scripts_module

ROOT = Path(__file__).resolve().parent.parent
BUF = str(Path(sys.executable).parent / "buf")
PARTNERS_PROTO = Path("brewmesh/partners/v1/partners.proto")
DISPLAY_NAME = "  string display_name = 3 [(google.api.field_behavior) = REQUIRED];\n"


@pytest.fixture(scope="module")
def images() -> ModuleType:
    return scripts_module("buf_breaking")


def edited_protos(tmp_path: Path, old: str, new: str) -> Path:
    protos = tmp_path / "protos"
    shutil.copytree(ROOT / "protos", protos)
    path = protos / PARTNERS_PROTO
    text = path.read_text()
    assert old in text, "the test's anchor is gone from the proto: update the test"
    path.write_text(text.replace(old, new, 1))
    return protos


def buf(*args: str) -> subprocess.CompletedProcess[str]:
    command = [BUF, *args, "--path", "brewmesh"]
    return subprocess.run(command, check=False, capture_output=True, text=True, cwd=ROOT)


def test_buf_breaking_refuses_a_removed_field(images: ModuleType, tmp_path: Path) -> None:
    base = images.build_image(ROOT / "protos", tmp_path / "base.binpb")
    changed = edited_protos(tmp_path, "  // The name people see, 1 to 200 characters.\n" + DISPLAY_NAME, "")
    image = images.build_image(changed, tmp_path / "changed.binpb")
    result = buf("breaking", str(image), "--against", str(base))
    assert result.returncode != 0
    assert "display_name" in result.stdout + result.stderr


def test_buf_breaking_accepts_an_added_field(images: ModuleType, tmp_path: Path) -> None:
    base = images.build_image(ROOT / "protos", tmp_path / "base.binpb")
    added = "  // A new, documented field.\n  string nickname = 99;\n"
    image = images.build_image(
        edited_protos(tmp_path, DISPLAY_NAME, DISPLAY_NAME + added), tmp_path / "new.binpb"
    )
    result = buf("breaking", str(image), "--against", str(base))
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_lint_refuses_an_undocumented_field(images: ModuleType, tmp_path: Path) -> None:
    undocumented = DISPLAY_NAME + "  string nickname = 99;\n"
    protos = edited_protos(tmp_path, DISPLAY_NAME, undocumented)
    image = images.build_image(protos, tmp_path / "lint.binpb", source_info=True)
    result = buf("lint", str(image))
    assert result.returncode != 0
    assert 'Field "nickname" should have a non-empty comment' in result.stdout
