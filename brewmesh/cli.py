"""The `brewmesh` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from brewmesh.mesh import DB_FILE, Mesh

DEFAULT_PORT = 50051
DEFAULT_DATA_DIR = Path("brewmesh-data")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="brewmesh", description="A gRPC service mesh for partner coffee machines."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start every service of the mesh in one process on one port")
    up.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port to serve on (default {DEFAULT_PORT})"
    )
    up.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 for all)"
    )
    up.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help=f"where data lives (default ./{DEFAULT_DATA_DIR})",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "up":
        asyncio.run(_up(args.host, args.port, args.data_dir))


async def _up(host: str, port: int, data_dir: Path) -> None:
    mesh = await Mesh.start(data_dir.resolve(), f"{host}:{port}")
    _print_banner(mesh, host)
    await mesh.server.serve_until_signalled()
    await mesh.stop(grace=0)
    print("brewmesh stopped", flush=True)


def _print_banner(mesh: Mesh, host: str) -> None:
    address = f"{host}:{mesh.port}"
    lines = [
        f"brewmesh is serving on {address}",
        "  services: " + ", ".join(b.name for b in mesh.server.services),
        "  plus grpc.health.v1.Health and server reflection",
        f"  data: {mesh.runtime.data_dir / DB_FILE}",
    ]
    if mesh.admin_key_generated:
        lines.append(f"  admin key (generated, shown once; kept in {mesh.runtime.data_dir}/admin.key):")
        lines.append(f"    {mesh.admin_key}")
    lines.append("try:")
    lines.append(f"  grpcurl -plaintext {address} list")
    print("\n".join(lines), flush=True)
