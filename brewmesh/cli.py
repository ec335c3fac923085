"""The `brewmesh` command."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import logging
import os
import secrets
import sys
from pathlib import Path
from typing import NoReturn

from brewmesh import caller_tokens, inspect_cli
from brewmesh.backends import STORE_SCHEMES, without_password
from brewmesh.machines import DEFAULT_BREW_SECONDS, REFERENCE_MACHINES, ReferenceMachine
from brewmesh.mesh import BUS_SCHEMES, Backends, Mesh, all_components
from brewmesh.sdk import DEFAULT_PORT as DEFAULT_MACHINE_PORT
from brewmesh.server import MAX_PORT
from brewmesh.startup import Setting, StartError
from brewmesh.tls import Tls

DEFAULT_PORT = 50051
DEFAULT_DATA_DIR = Path("brewmesh-data")
COMPONENTS = ("partners", "recipes", "runner")
STORE_ENV = "BREWMESH_STORE"
BUS_ENV = "BREWMESH_BUS"
TLS_ENV = {"cert": "BREWMESH_TLS_CERT", "key": "BREWMESH_TLS_KEY", "ca": "BREWMESH_TLS_CA"}
DEFAULT_REDIS = "127.0.0.1:6379"

SETTING_NAMES = {
    Setting.HOST: "--host",
    Setting.PORT: "--port",
    Setting.DATA_DIR: "--data-dir",
    Setting.STORE: f"--store (${STORE_ENV})",
    Setting.BUS: f"--bus (${BUS_ENV})",
    Setting.PEERS: "--partners ($BREWMESH_PARTNERS_ADDRESS)",
    Setting.TLS_CERT: f"--tls-cert (${TLS_ENV['cert']})",
    Setting.TLS_KEY: f"--tls-key (${TLS_ENV['key']})",
    Setting.TLS_CA: f"--tls-ca (${TLS_ENV['ca']})",
    Setting.CALLER_TOKEN: f"${caller_tokens.ENV}",
    Setting.MACHINE_KEEPALIVE: "$BREWMESH_MACHINE_KEEPALIVE_SECONDS",
    Setting.MACHINE_RESUME: "$BREWMESH_MACHINE_RESUME_SECONDS",
}
"""How the command line names each setting a failed start blames."""


class _Parser(argparse.ArgumentParser):
    """Reports a bad command line as one line (exit code 2), not the usage and then the error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        _command(parser, args)
    except StartError as error:
        # One line that names what to change; the traceback would only bury it.
        problem = " ".join(error.problem.split())  # a driver's message may span lines
        parser.exit(2, f"brewmesh {args.command}: {SETTING_NAMES[error.setting]}: {problem}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="brewmesh", description="A gRPC service mesh for partner coffee machines.")
    parser.add_argument("--version", action="version", version=f"brewmesh {_version()}")
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
    machine.add_argument("--port", type=_port, default=DEFAULT_MACHINE_PORT, help="port to serve on")
    machine.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    machine.add_argument(
        "--brew-seconds", type=float, default=DEFAULT_BREW_SECONDS, help="how long a brew takes"
    )
    _add_tls_options(machine, "the runner")
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
    inspect_cli.add_commands(commands)
    return parser


def _command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.command in ("up", "serve", "machine"):
        tls = _tls(args)
    if args.command in ("up", "serve"):
        backends = _backends(parser, args)
    if args.command == "up":
        asyncio.run(_run(args, None, {}, backends, tls))
    elif args.command == "serve":
        if not backends.bus_url:
            parser.error(
                "serve: services in separate processes share events through Redis:"
                " pass --bus redis://host:port (or set BREWMESH_BUS)"
            )
        peers = {name: getattr(args, name) for name in COMPONENTS if getattr(args, name)}
        asyncio.run(_run(args, args.component, peers, backends, tls))
    elif args.command == "machine":
        asyncio.run(_machine(REFERENCE_MACHINES[args.kind], args, tls))
    elif args.command == "redis-acl":
        _redis_acl(parser, args)
    elif args.command in ("events", "runs"):
        sys.exit(inspect_cli.run(args))


def _version() -> str:
    try:
        return importlib.metadata.version("brewmesh")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


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


def _tls(args: argparse.Namespace) -> Tls | None:
    """The TLS the command line asks for (read and checked now), or None for plaintext."""
    if args.tls_cert is None and args.tls_key is None:
        if args.tls_ca:
            raise StartError(
                Setting.TLS_CA, "mutual TLS needs this process's own --tls-cert and --tls-key too"
            )
        return None
    if args.tls_cert is None:
        raise StartError(Setting.TLS_CERT, "--tls-key needs the certificate it is the key of")
    if args.tls_key is None:
        raise StartError(Setting.TLS_KEY, "--tls-cert needs its private key")
    return Tls.load(args.tls_cert, args.tls_key, args.tls_ca)


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > MAX_PORT:
        raise argparse.ArgumentTypeError(f"'{text}' is not a port: use 1 to {MAX_PORT} (0: any free port)")
    return int(text)


def _path_from_env(variable: str) -> Path | None:
    value = os.environ.get(variable)
    return Path(value) if value else None


def _add_tls_options(command: argparse.ArgumentParser, clients: str) -> None:
    command.add_argument(
        "--tls-cert",
        type=Path,
        metavar="PEM",
        default=_path_from_env(TLS_ENV["cert"]),
        help=f"serve TLS with this certificate (chain), with --tls-key (default ${TLS_ENV['cert']})",
    )
    command.add_argument(
        "--tls-key",
        type=Path,
        metavar="PEM",
        default=_path_from_env(TLS_ENV["key"]),
        help=f"the certificate's unencrypted private key (default ${TLS_ENV['key']})",
    )
    command.add_argument(
        "--tls-ca",
        type=Path,
        metavar="PEM",
        default=_path_from_env(TLS_ENV["ca"]),
        help=f"mutual TLS: serve only clients with a certificate this CA signed ({clients}); calls made"
        f" from here present --tls-cert and check servers against this CA (default ${TLS_ENV['ca']})",
    )
    command.add_argument(
        "--insecure",
        action="store_true",
        help="serve plaintext on an address beyond loopback (API keys then cross the network in clear)",
    )


def _add_server_options(command: argparse.ArgumentParser, default_port: int) -> None:
    _add_tls_options(command, "the mesh's other services")
    command.add_argument(
        "--port",
        type=_port,
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
    args: argparse.Namespace, only: str | None, peers: dict[str, str], backends: Backends, tls: Tls | None
) -> None:
    components = [c for c in all_components() if only in (None, c.name)]
    address = f"{args.host}:{args.port}"
    mesh = await Mesh.start(
        args.data_dir.resolve(), address, components, peers, backends, tls=tls, insecure=args.insecure
    )
    _print_banner(mesh, args.host, args.tls_ca if tls else None)
    await mesh.server.serve_until_signalled()
    await mesh.stop(grace=0)
    print("brewmesh stopped", flush=True)


async def _machine(reference: ReferenceMachine, args: argparse.Namespace, tls: Tls | None) -> None:
    token = os.environ.get(caller_tokens.ENV) or None
    if token is not None and not caller_tokens.is_valid(token):
        raise StartError(Setting.CALLER_TOKEN, f"the caller token is not {caller_tokens.TOKEN_RULE}")
    machine = reference.build(args.brew_seconds, token)
    await machine.start(f"{args.host}:{args.port}", tls, args.insecure)
    callers = "the caller token's holder only" if token else "anyone"
    if tls and tls.mutual:
        callers += f", with a certificate signed by {args.tls_ca}"
    print(
        f"{reference.api_type} machine ({reference.summary}) serving brewmesh.runner.v1.ProgramRunner"
        f" on {args.host}:{machine.port} ({'TLS' if tls else 'plaintext'}; runs for {callers})\n"
        f"  handles: {', '.join(reference.handles) or 'nothing but run, state and cancel'}\n"
        f"  emits: {', '.join(reference.emits) or 'only lifecycle events'}",
        flush=True,
    )
    await machine.server.serve_until_signalled()
    print(f"{reference.api_type} machine stopped", flush=True)


def _print_banner(mesh: Mesh, host: str, ca: Path | None) -> None:
    address = f"{host}:{mesh.port}"
    lines = [
        f"brewmesh is serving on {address}",
        "  services: " + ", ".join(b.name for b in mesh.server.services),
        "  plus grpc.health.v1.Health and server reflection",
        f"  data: {mesh.runtime.store.description}",
        "  events: " + ("Redis Streams" if mesh.runtime.bus.backend.crosses_processes else "embedded log"),
        f"  transport: {_transport(mesh.runtime.tls, ca)}",
    ]
    elsewhere = {k: v for k, v in mesh.runtime.peers.items() if k not in {c.name for c in mesh.components}}
    lines += [f"  {name} service at {where}" for name, where in sorted(elsewhere.items())]
    if mesh.admin_key_generated:
        lines.append(f"  admin key (generated, shown once; kept in {mesh.runtime.data_dir}/admin.key):")
        lines.append(f"    {mesh.admin_key}")
    lines.append("try:")
    if mesh.runtime.tls is None:
        lines.append(f"  grpcurl -plaintext {address} list")
    else:
        client_cert = " -cert CLIENT.pem -key CLIENT.key" if ca else ""
        lines.append(f"  grpcurl -cacert {ca or 'CA.pem'}{client_cert} {_dialable(host)}:{mesh.port} list")
    print("\n".join(lines), flush=True)


def _transport(tls: Tls | None, ca: Path | None) -> str:
    if tls is None:
        return "plaintext"
    return f"mutual TLS (clients need a certificate signed by {ca})" if tls.mutual else "TLS"


def _dialable(host: str) -> str:
    """An address to reach `host` by (not the wildcard address, which no certificate names)."""
    return "localhost" if host in ("0.0.0.0", "::", "[::]") else host
