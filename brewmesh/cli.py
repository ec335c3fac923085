"""The `brewmesh` command.

Every setting of a process is a field of `brewmesh.settings.Settings`: this
module turns each into an option of the commands that take it (with its
environment variable in the help), builds the settings from the command
line, the environment and `--config`, and hands them to the composition root.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import json
import os
import secrets
import sys
from dataclasses import replace as dataclass_replace
from pathlib import Path
from typing import Any, NoReturn

from brewmesh import inspect_cli, log_format, settings, tracing
from brewmesh.machines import DEFAULT_BREW_SECONDS, REFERENCE_MACHINES, ReferenceMachine
from brewmesh.mesh import Mesh, all_components
from brewmesh.sdk import DEFAULT_PORT as DEFAULT_MACHINE_PORT
from brewmesh.settings import Settings
from brewmesh.startup import Setting, StartError
from brewmesh.tls import Tls, load_tls

DEFAULT_PORTS = {"up": 50051, "serve": 0, "machine": DEFAULT_MACHINE_PORT}
COMPONENTS = ("partners", "recipes", "runner")
DEFAULT_REDIS = "127.0.0.1:6379"


class _Parser(argparse.ArgumentParser):
    """Reports a bad command line as one line (exit code 2), not the usage and then the error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        _command(parser, args)
    except StartError as error:
        # One line that names what to change; the traceback would only bury it.
        problem = " ".join(error.problem.split())  # a driver's message may span lines
        parser.exit(2, f"brewmesh {args.command}: {settings.describe(error.setting)}: {problem}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="brewmesh", description="A gRPC service mesh for partner coffee machines.")
    parser.add_argument("--version", action="version", version=f"brewmesh {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start every service of the mesh in one process on one port")
    _add_settings(up, "up")
    serve = commands.add_parser("serve", help="start one service of the mesh in its own process")
    serve.add_argument("component", choices=COMPONENTS, help="the service to run")
    _add_settings(serve, "serve")
    machine = commands.add_parser("machine", help="run a reference partner machine (its own ProgramRunner)")
    machine.add_argument("--kind", required=True, choices=sorted(REFERENCE_MACHINES), help="which machine")
    machine.add_argument(
        "--brew-seconds", type=float, default=DEFAULT_BREW_SECONDS, help="how long a brew takes"
    )
    _add_settings(machine, "machine")
    config = commands.add_parser("config", help="see the configuration a command would start with")
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="{show}")
    show = config_commands.add_parser(
        "show",
        help="print the effective settings (flags, environment, --config file, defaults), secrets masked",
    )
    show.add_argument("--for", dest="for_command", choices=settings.PROCESS_COMMANDS, default="up")
    show.add_argument("--json", action="store_true", help="as one JSON object")
    _add_settings(show, None)
    _add_redis_acl(commands)
    inspect_cli.add_commands(commands)
    return parser


def _add_settings(command: argparse.ArgumentParser, name: str | None) -> None:
    """An option for each setting `name` takes (every setting, for None), defaults left to `load`."""
    command.add_argument(
        "--config",
        type=Path,
        metavar="TOML",
        help=f"read settings from this file (keys: the options' names with _) (${settings.CONFIG_ENV})",
    )
    for field, option in settings.options():
        if option.flag is None or (name is not None and name not in option.commands):
            continue
        default = DEFAULT_PORTS[name] if field.name == "port" and name else field.default
        shown = "" if default is None or option.is_switch else f", default {default}"
        described = f"{option.help} (${option.env}{shown})"
        if option.is_switch:
            command.add_argument(
                option.flag, dest=field.name, action="store_const", const=True, help=described
            )
        else:
            kind: Any = settings.kind_of(field)
            command.add_argument(
                option.flag, dest=field.name, type=_typed(kind), metavar=option.metavar, help=described
            )


def _typed(kind: type) -> Any:
    def parse(text: str) -> object:
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None

    return parse


def _settings(args: argparse.Namespace, command: str) -> Settings:
    given = {f.name: getattr(args, f.name, None) for f, _ in settings.options()}
    config = args.config or (
        Path(os.environ[settings.CONFIG_ENV]) if os.environ.get(settings.CONFIG_ENV) else None
    )
    return settings.load(command, given, os.environ, config, {"port": DEFAULT_PORTS[command]})


def _command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.command in settings.PROCESS_COMMANDS:
        chosen = _settings(args, args.command)
        log_format.configure(chosen.log_level, chosen.log_format)  # type: ignore[arg-type]
    if args.command == "up":
        asyncio.run(_run(chosen, None))
    elif args.command == "serve":
        if not chosen.bus:
            raise StartError(
                Setting.BUS,
                "services in separate processes share events through Redis: give redis://host:port",
            )
        asyncio.run(_run(chosen, args.component))
    elif args.command == "machine":
        asyncio.run(_machine(REFERENCE_MACHINES[args.kind], args.brew_seconds, chosen))
    elif args.command == "config":
        _show(_settings(args, args.for_command), args.json)
    elif args.command == "redis-acl":
        _redis_acl(parser, args)
    elif args.command in ("events", "runs"):
        sys.exit(inspect_cli.run(args))


def _show(chosen: Settings, as_json: bool) -> None:
    shown = chosen.shown()
    if as_json:
        print(json.dumps(shown))
        return
    width = max(len(name) for name in shown)
    for name, value in shown.items():
        print(f"{name.ljust(width)}  {'-' if value is None else value}")


def _version() -> str:
    try:
        return importlib.metadata.version("brewmesh")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def _add_redis_acl(commands: Any) -> None:
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


async def _run(chosen: Settings, only: str | None) -> None:
    components = [c for c in all_components() if only in (None, c.name)]
    chosen = dataclass_replace(chosen, data_dir=chosen.data_dir.resolve())
    traced = tracing.from_environment(only or "mesh", os.environ)
    mesh = await Mesh.start(chosen, components, traced)
    # What start-up made lives as long as the process: keep it out of the collector's full
    # scans, which otherwise pause every call now and then for milliseconds. (Here, not in
    # Mesh.start: a process that starts many meshes, a test run, would never free them.)
    gc.freeze()
    _print_banner(mesh, chosen.host, chosen.tls_ca if mesh.runtime.tls else None)
    await mesh.server.serve_until_signalled()
    await mesh.stop(grace=0)
    print("brewmesh stopped", flush=True)


async def _machine(reference: ReferenceMachine, brew_seconds: float, chosen: Settings) -> None:
    tls = load_tls(chosen.tls_cert, chosen.tls_key, chosen.tls_ca)
    token = chosen.caller_token
    machine = reference.build(brew_seconds, token)
    await machine.start(chosen.address, tls, chosen.insecure, tracing.from_environment("machine", os.environ))
    callers = "the caller token's holder only" if token else "anyone"
    if tls and tls.mutual:
        callers += f", with a certificate signed by {chosen.tls_ca}"
    print(
        f"{reference.api_type} machine ({reference.summary}) serving brewmesh.runner.v1.ProgramRunner"
        f" on {chosen.host}:{machine.port} ({'TLS' if tls else 'plaintext'}; runs for {callers})\n"
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
