"""The `brewmesh` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import sys
from pathlib import Path

from brewmesh.backends import STORE_SCHEMES, without_password
from brewmesh.machines import DEFAULT_BREW_SECONDS, REFERENCE_MACHINES, ReferenceMachine
from brewmesh.mesh import BUS_SCHEMES, Backends, Mesh, all_components
from brewmesh.sdk import DEFAULT_PORT as DEFAULT_MACHINE_PORT

DEFAULT_PORT = 50051
DEFAULT_DATA_DIR = Path("brewmesh-data")
COMPONENTS = ("partners", "recipes", "runner")
STORE_ENV = "BREWMESH_STORE"
BUS_ENV = "BREWMESH_BUS"
DEFAULT_REDIS = "127.0.0.1:6379"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="brewmesh", description="A gRPC service mesh for partner coffee machines."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start every service of the mesh in one process on one port")
    _add_server_options(up, DEFAULT_PORT)
    serve = commands.add_parser("serve", help="start one service of the mesh in its own process")
    serve.add_argument("component", choices=COMPONENTS, help="the service to run")
    _add_server_options(serve, 0)
    for peer in COMPONENTS:
        variable = f"BREWMESH_{peer.upper()}_ADDRESS"
        serve.add_argument(
            f"--{peer}",
            metavar="HOST:PORT",
            default=os.environ.get(variable),
            help=f"where the {peer} service runs (default ${variable})",
        )
    machine = commands.add_parser("machine", help="run a reference partner machine (its own ProgramRunner)")
    machine.add_argument("--kind", required=True, choices=sorted(REFERENCE_MACHINES), help="which machine")
    machine.add_argument("--port", type=int, default=DEFAULT_MACHINE_PORT, help="port to serve on")
    machine.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    machine.add_argument(
        "--brew-seconds", type=float, default=DEFAULT_BREW_SECONDS, help="how long a brew takes"
    )
    acl = commands.add_parser(
        "redis-acl",
        help="print Redis ACL users that let each service write only its own APIs' events",
        description="Print one Redis ACL user per service: each may read every API's events but"
        " XADD only to its own APIs' streams, so Redis itself refuses a forged event. The ACL goes to"
        " stdout (pipe it into redis-cli, or save it as an aclfile with --acl-file); the --bus URL"
        " of each service goes to stderr, as comments.",
    )
    acl.add_argument(
        "--password",
        action="append",
        default=[],
        metavar="SERVICE=PASSWORD",
        help="a service's Redis password (repeat per service)",
    )
    acl.add_argument("--generate-passwords", action="store_true", help="generate the passwords not given")
    acl.add_argument(
        "--acl-file", action="store_true", help="aclfile lines (user ...) instead of ACL SETUSER commands"
    )
    acl.add_argument(
        "--redis",
        metavar="HOST:PORT",
        default=DEFAULT_REDIS,
        help="for the --bus URLs (default %(default)s)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command in ("up", "serve"):
        backends = _backends(parser, args)
    if args.command == "up":
        asyncio.run(_run(args.host, args.port, args.data_dir, None, {}, backends))
    elif args.command == "serve":
        if not backends.bus_url:
            parser.error(
                "serve: services in separate processes share events through Redis:"
                " pass --bus redis://host:port (or set BREWMESH_BUS)"
            )
        peers = {name: getattr(args, name) for name in COMPONENTS if getattr(args, name)}
        asyncio.run(_run(args.host, args.port, args.data_dir, args.component, peers, backends))
    elif args.command == "machine":
        asyncio.run(_machine(REFERENCE_MACHINES[args.kind], args.host, args.port, args.brew_seconds))
    elif args.command == "redis-acl":
        _redis_acl(parser, args)


def _redis_acl(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Print the ACL to stdout, ready for redis-cli or an aclfile; the --bus URLs to stderr, as comments."""
    from brewmesh.backends import redis_acl  # imports the Redis driver: only for this command

    services = redis_acl.apis_by_service(all_components())
    passwords: dict[str, str] = {}
    for given in args.password:
        service, _, password = given.partition("=")
        if service not in services or not password:
            parser.error(
                f"--password: '{service}=...' is not SERVICE=PASSWORD, SERVICE one of {', '.join(services)}"
            )
        passwords[service] = password
    missing = [s for s in services if s not in passwords]
    if missing and not args.generate_passwords:
        parser.error(
            f"redis-acl: no password for {', '.join(missing)}: pass --password or --generate-passwords"
        )
    passwords.update({s: secrets.token_urlsafe(24) for s in missing})
    print(redis_acl.render(services, passwords, acl_file=args.acl_file), end="", flush=True)
    notes = redis_acl.bus_urls(services, passwords, args.redis)
    if args.acl_file:
        notes += "# the aclfile needs a line for the default user too: without one, Redis leaves it open\n"
    print(notes, end="", file=sys.stderr, flush=True)


def _backends(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Backends:
    for option, url, schemes in (("--store", args.store, STORE_SCHEMES), ("--bus", args.bus, BUS_SCHEMES)):
        if url and url.partition("://")[0] not in schemes:
            parser.error(f"{option}: '{without_password(url)}' is not a {' or '.join(schemes)}:// URL")
    return Backends(store_url=args.store or None, bus_url=args.bus or None)


def _add_server_options(command: argparse.ArgumentParser, default_port: int) -> None:
    command.add_argument(
        "--port",
        type=int,
        default=default_port,
        help=f"port to serve on (default {default_port or 'any free'})",
    )
    command.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 for all)"
    )
    command.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help=f"where data lives (default ./{DEFAULT_DATA_DIR})",
    )
    command.add_argument(
        "--store",
        metavar="URL",
        default=os.environ.get(STORE_ENV),
        help="PostgreSQL for state, postgresql://user:password@host:port/db"
        f" (default ${STORE_ENV}, else SQLite in --data-dir)",
    )
    command.add_argument(
        "--bus",
        metavar="URL",
        default=os.environ.get(BUS_ENV),
        help=f"Redis for events, redis://[user:password@]host:port[/db] (default ${BUS_ENV},"
        " else the embedded log in the store; required by serve)",
    )


async def _run(
    host: str, port: int, data_dir: Path, only: str | None, peers: dict[str, str], backends: Backends
) -> None:
    components = [c for c in all_components() if only in (None, c.name)]
    mesh = await Mesh.start(data_dir.resolve(), f"{host}:{port}", components, peers, backends)
    _print_banner(mesh, host)
    await mesh.server.serve_until_signalled()
    await mesh.stop(grace=0)
    print("brewmesh stopped", flush=True)


async def _machine(reference: ReferenceMachine, host: str, port: int, brew_seconds: float) -> None:
    machine = reference.build(brew_seconds)
    try:
        await machine.start(f"{host}:{port}")
    except OSError as error:
        raise SystemExit(f"cannot serve on {host}:{port}: {error}") from None
    print(
        f"{reference.api_type} machine ({reference.summary}) serving brewmesh.runner.v1.ProgramRunner"
        f" on {host}:{machine.port}\n"
        f"  handles: {', '.join(reference.handles) or 'nothing but run, state and cancel'}\n"
        f"  emits: {', '.join(reference.emits) or 'only lifecycle events'}",
        flush=True,
    )
    await machine.server.serve_until_signalled()
    print(f"{reference.api_type} machine stopped", flush=True)


def _print_banner(mesh: Mesh, host: str) -> None:
    address = f"{host}:{mesh.port}"
    lines = [
        f"brewmesh is serving on {address}",
        "  services: " + ", ".join(b.name for b in mesh.server.services),
        "  plus grpc.health.v1.Health and server reflection",
        f"  data: {mesh.runtime.store.description}",
        "  events: " + ("Redis Streams" if mesh.runtime.bus.backend.crosses_processes else "embedded log"),
    ]
    elsewhere = {k: v for k, v in mesh.runtime.peers.items() if k not in {c.name for c in mesh.components}}
    lines += [f"  {name} service at {where}" for name, where in sorted(elsewhere.items())]
    if mesh.admin_key_generated:
        lines.append(f"  admin key (generated, shown once; kept in {mesh.runtime.data_dir}/admin.key):")
        lines.append(f"    {mesh.admin_key}")
    lines.append("try:")
    lines.append(f"  grpcurl -plaintext {address} list")
    print("\n".join(lines), flush=True)
