"""Run `buf breaking` on the protos against those that last landed on main.

The baseline commit is named in .ci/proto-baseline (update it to the landed
commit after a proto change lands). Its protos are built into a descriptor
image with the same includes as the current ones, offline.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_protos

ROOT = build_protos.ROOT
BASELINE_FILE = ROOT / ".ci" / "proto-baseline"


def baseline_commit() -> str:
    return BASELINE_FILE.read_text().split("#", 1)[0].strip()


def build_baseline_image(commit: str, workdir: Path) -> Path:
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit, "protos"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(workdir, filter="data")
    return build_image(workdir / "protos", workdir / "base.binpb")


def build_image(protos: Path, image: Path, source_info: bool = False) -> Path:
    """A descriptor set (a buf image) of the protos under `protos`, imports included."""
    files = [str(p.relative_to(protos)) for p in sorted(protos.rglob("*.proto"))]
    includes = [f"-I{protos}", *(f"-I{d}" for d in build_protos.include_dirs()[1:])]
    options = ["--include_imports", f"--descriptor_set_out={image}"]
    if source_info:  # comments, for the lint rules about them
        options.append("--include_source_info")
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", *includes, *options, *files], check=True)
    return image


def main() -> None:
    commit = baseline_commit()
    buf = str(Path(sys.executable).parent / "buf")
    with tempfile.TemporaryDirectory() as tmp:
        base = build_baseline_image(commit, Path(tmp))
        print(f"buf breaking against protos of {commit}", flush=True)
        result = subprocess.run(
            [buf, "breaking", str(build_protos.IMAGE), "--against", str(base), "--path", "brewmesh"],
            cwd=ROOT,
            check=False,
        )
    if result.returncode:
        print("buf breaking: the protos break compatibility with what landed (see above)", file=sys.stderr)
        sys.exit(result.returncode)


if __name__ == "__main__":
    main()
