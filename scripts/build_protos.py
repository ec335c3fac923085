"""Generate the Python stubs (and .pyi types) and the buf image from protos/.

Run by every entry point (tasks.py, the wheel build), so the stubs are always
built from the protos and never kept by hand. Writes a stamp with the protos'
hash that `brewmesh.stubs` checks on import in a source checkout.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT  # protos/brewmesh/x/v1/*.proto -> brewmesh/x/v1/*_pb2.py
# Descriptor set with every import and the doc comments: served by reflection
# (so grpcurl shows the comments) and checked by buf.
IMAGE = ROOT / "brewmesh" / "_descriptors.binpb"
STAMP = ROOT / "brewmesh" / "_stubs_stamp.py"


def proto_files() -> list[Path]:
    return sorted(PROTOS.rglob("*.proto"))


def protos_digest() -> str:
    digest = hashlib.sha256()
    for path in proto_files():
        digest.update(path.relative_to(PROTOS).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def include_dirs() -> list[str]:
    import google.api  # googleapis-common-protos
    import grpc_tools

    googleapis = Path(google.api.__path__[0]).parent.parent
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    return [str(PROTOS), str(googleapis), str(well_known)]


def plugin(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found: install mypy-protobuf")
    return found


def protoc(*args: str) -> None:
    includes = [f"-I{d}" for d in include_dirs()]
    files = [str(p.relative_to(PROTOS)) for p in proto_files()]
    cmd = [sys.executable, "-m", "grpc_tools.protoc", *includes, *args, *files]
    subprocess.run(cmd, check=True)


def clean_generated() -> None:
    # Remove stubs of protos that no longer exist, so nothing stale survives.
    for area in (PROTOS / "brewmesh").iterdir():
        target = OUT / "brewmesh" / area.name
        if target.exists():
            shutil.rmtree(target)


def add_init_files() -> None:
    for proto in proto_files():
        package_dir = OUT / proto.relative_to(PROTOS).parent
        for folder in [package_dir, *package_dir.parents]:
            if folder == OUT / "brewmesh" or folder == OUT or OUT not in folder.parents:
                break
            (folder / "__init__.py").touch()


def main() -> None:
    clean_generated()
    protoc(
        f"--python_out={OUT}",
        f"--grpc_python_out={OUT}",
        f"--plugin=protoc-gen-mypy={plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={plugin('protoc-gen-mypy_grpc')}",
        f"--mypy_out={OUT}",
        f"--mypy_grpc_out={OUT}",
    )
    add_init_files()
    protoc("--include_imports", "--include_source_info", f"--descriptor_set_out={IMAGE}")
    STAMP.write_text(
        '"""Written by scripts/build_protos.py: the hash of the protos the stubs were built from."""\n\n'
        f'PROTOS_SHA256 = "{protos_digest()}"\n'
    )
    print(f"stubs generated from {len(proto_files())} proto files")


if __name__ == "__main__":
    main()
