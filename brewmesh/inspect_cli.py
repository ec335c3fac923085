"""`brewmesh events ...` and `brewmesh runs ...`: what the mesh is doing, from a shell.

Each command is a gRPC client of a running mesh (`--address`, `--key` or
$BREWMESH_KEY, `--tls-ca` for a TLS mesh). Exit codes: 0 done, 1 the mesh
refused or could not be reached (the status code and message on stderr), 2 a
bad command line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format, message

from brewmesh.bus.v1 import event_bus_pb2, events_pb2
from brewmesh.client import MeshClient, connect
from brewmesh.runner.v1 import program_runner_pb2 as runner_pb

KEY_ENV = "BREWMESH_KEY"
ADDRESS_ENV = "BREWMESH_ADDRESS"
DEFAULT_ADDRESS = "127.0.0.1:50051"
FAILED = 1

Command = Callable[[MeshClient, argparse.Namespace], Coroutine[Any, Any, None]]


def add_commands(commands: Any) -> None:
    """The `events` and `runs` commands, on the `brewmesh` parser's subcommands."""
    events = commands.add_parser("events", help="follow events and see how far listener groups are")
    events_commands = events.add_subparsers(dest="events_command", required=True, metavar="{tail,lag}")
    tail = events_commands.add_parser("tail", help="print events as they are fired (every API by default)")
    _connection_options(tail)
    tail.add_argument("--api", action="append", default=[], help="only this API (repeatable)")
    tail.add_argument("--type", action="append", default=[], help="only this event type (repeatable)")
    tail.add_argument("--after", metavar="ID", default="", help="start after this event id (needs --api)")
    tail.add_argument("--new", action="store_true", help="only events fired from now on")
    tail.add_argument("--json", action="store_true", help="one JSON object per event")
    tail.set_defaults(call=_tail)
    lag = events_commands.add_parser("lag", help="each listener group: position, lag, pending, dead letters")
    _connection_options(lag)
    lag.add_argument("--api", default="", help="only this API's groups")
    lag.add_argument("--json", action="store_true", help="one JSON object per group")
    lag.set_defaults(call=_lag)

    runs = commands.add_parser("runs", help="see program runs (yours; every run with the admin key)")
    runs_commands = runs.add_subparsers(dest="runs_command", required=True, metavar="{list,get,watch}")
    listed = runs_commands.add_parser("list", help="list runs (yours; every run with the admin key)")
    _connection_options(listed)
    listed.add_argument(
        "--machine", default="", help="only runs on this machine (partners/P/coffeeMachines/M)"
    )
    listed.add_argument("--state", choices=STATES, help="only runs in this state")
    listed.add_argument("--json", action="store_true", help="one JSON object per run")
    listed.set_defaults(call=_list_runs)
    get = runs_commands.add_parser("get", help="print one run")
    _connection_options(get)
    get.add_argument("run", help="the run's name, programRuns/<id> (or just the id)")
    get.set_defaults(call=_get_run)
    watch = runs_commands.add_parser("watch", help="print a run's events until it ends")
    _connection_options(watch)
    watch.add_argument("run", help="the run's name, programRuns/<id> (or just the id)")
    watch.add_argument("--after-sequence", type=int, default=0, help="resume after this event's sequence")
    watch.set_defaults(call=_watch_run)


def run(args: argparse.Namespace) -> int:
    """Run the chosen command; its exit code."""
    try:
        credentials = _credentials(args.tls_ca)
    except OSError as error:
        print(f"brewmesh: --tls-ca: cannot read {args.tls_ca}: {error.strerror}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_call(args, credentials))
    except grpc.aio.AioRpcError as error:
        print(f"brewmesh: {args.address} answered {error.code().name}: {error.details()}", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # piped into `head`, say: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


async def _call(args: argparse.Namespace, credentials: grpc.ChannelCredentials | None) -> None:
    async with connect(args.address, args.key or None, credentials=credentials) as client:
        command: Command = args.call
        await command(client, args)


def _connection_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--address",
        default=os.environ.get(ADDRESS_ENV, DEFAULT_ADDRESS),
        metavar="HOST:PORT",
        help=f"the mesh (default ${ADDRESS_ENV}, else %(default)s)",
    )
    command.add_argument("--key", default=os.environ.get(KEY_ENV, ""), help=f"API key (default ${KEY_ENV})")
    command.add_argument("--tls-ca", type=Path, metavar="PEM", help="the mesh serves TLS, signed by this CA")


def _credentials(ca: Path | None) -> grpc.ChannelCredentials | None:
    return grpc.ssl_channel_credentials(ca.read_bytes()) if ca is not None else None


# -- events ----------------------------------------------------------------------------------


async def _tail(client: MeshClient, args: argparse.Namespace) -> None:
    declared = {
        api.name: [e.type for e in api.events]
        for api in (await client.bus.ListApis(event_bus_pb2.ListApisRequest())).apis
    }
    unknown = [api for api in args.api if api not in declared]
    if unknown:
        raise SystemExit(
            f"brewmesh events tail: --api {unknown[0]} is not an API of this mesh: {sorted(declared)}"
        )
    requests = [
        event_bus_pb2.SubscribeRequest(api=api, event_types=types, after_id=args.after, new_only=args.new)
        for api in args.api or sorted(declared)
        # --type may name events of several APIs: each stream asks for its API's own.
        if (types := [t for t in args.type if t in declared[api]]) or not args.type
    ]
    if not requests:
        raise SystemExit(f"brewmesh events tail: no API declares {', '.join(args.type)}")
    if args.after and len(requests) != 1:
        raise SystemExit("brewmesh events tail: --after is an event id of one API: give that --api")
    printer = _print_json if args.json else _print_line
    async for event in _merged([_follow(client, request) for request in requests]):
        printer(event)


async def _follow(
    client: MeshClient, request: event_bus_pb2.SubscribeRequest
) -> AsyncIterator[events_pb2.Event]:
    async for event in client.bus.Subscribe(request):
        yield event


async def _merged(streams: Sequence[AsyncIterator[events_pb2.Event]]) -> AsyncIterator[events_pb2.Event]:
    """The events of every stream as they arrive; the first stream that fails ends them all."""
    queue: asyncio.Queue[events_pb2.Event | BaseException] = asyncio.Queue()

    async def pump(stream: AsyncIterator[events_pb2.Event]) -> None:
        try:
            async for event in stream:
                await queue.put(event)
        except BaseException as error:
            await queue.put(error)
            raise

    pumps = [asyncio.create_task(pump(stream)) for stream in streams]
    try:
        while True:
            item = await queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        for task in pumps:
            task.cancel()


def event_as_dict(event: events_pb2.Event) -> dict[str, Any]:
    """An event as JSON-ready data, its payload unpacked (proto3 JSON names)."""
    shown: dict[str, Any] = json_format.MessageToDict(event)
    return shown


def _print_json(event: events_pb2.Event) -> None:
    print(json.dumps(event_as_dict(event)), flush=True)


def _print_line(event: events_pb2.Event) -> None:
    shown = {k: v for k, v in event_as_dict(event).get("payload", {}).items() if k != "@type"}
    payload = json.dumps(shown, separators=(",", ":"))
    when = event.time.ToDatetime().isoformat(timespec="milliseconds")
    print(f"{when}Z {event.api} {event.type} id={event.id} {payload}", flush=True)


async def every_page(call: Callable[[str], Awaitable[Any]], items: str) -> list[Any]:
    """The `items` of every page of a List call, following next_page_token (AIP-158)."""
    found: list[Any] = []
    token = ""
    while True:
        page = await call(token)
        found += getattr(page, items)
        if not (token := page.next_page_token):
            return found


async def _lag(client: MeshClient, args: argparse.Namespace) -> None:
    groups = await every_page(
        lambda token: client.bus.ListListenerGroups(
            event_bus_pb2.ListListenerGroupsRequest(api=args.api, page_token=token)
        ),
        "listener_groups",
    )
    if args.json:
        for group in groups:
            print(json.dumps(json_format.MessageToDict(group, always_print_fields_with_no_presence=True)))
        return
    _print_table(
        ["API", "GROUP", "TYPES", "POSITION", "LAG", "LAG SECONDS", "PENDING", "DEAD"],
        [_lag_row(group) for group in groups],
    )


def _lag_row(g: event_bus_pb2.ListenerGroup) -> list[str]:
    return [
        g.api,
        f"{g.namespace}/{g.listener_name}",
        ",".join(g.event_types) or "*",
        g.position or "-",
        str(g.lag_events),
        f"{g.lag.ToMilliseconds() / 1000:.3f}",
        str(g.pending_events),
        str(g.dead_letters),
    ]


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=False)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


# -- runs ------------------------------------------------------------------------------------


STATES = [name.removeprefix("STATE_").lower() for name in runner_pb.ProgramRun.State.keys()[1:]]


async def _list_runs(client: MeshClient, args: argparse.Namespace) -> None:
    state = runner_pb.ProgramRun.State.Value(f"STATE_{(args.state or 'unspecified').upper()}")
    runs = await every_page(
        lambda token: client.runner.ListRuns(
            runner_pb.ListRunsRequest(machine=args.machine, state=state, page_token=token)
        ),
        "program_runs",
    )
    if args.json:
        for run in runs:
            print(json.dumps(json_format.MessageToDict(run)))
        return
    _print_table(
        ["NAME", "MACHINE", "RECIPE", "STATE", "UPDATED"],
        [
            [
                run.name,
                run.machine,
                run.recipe,
                runner_pb.ProgramRun.State.Name(run.state).removeprefix("STATE_").lower(),
                run.update_time.ToDatetime().isoformat(timespec="seconds") + "Z",
            ]
            for run in runs
        ],
    )


def _run_name(text: str) -> str:
    return text if text.startswith("programRuns/") else f"programRuns/{text}"


def _print_message(shown: message.Message) -> None:
    print(json.dumps(json_format.MessageToDict(shown), indent=2), flush=True)


async def _get_run(client: MeshClient, args: argparse.Namespace) -> None:
    _print_message(await client.runner.GetRun(runner_pb.GetRunRequest(name=_run_name(args.run))))


async def _watch_run(client: MeshClient, args: argparse.Namespace) -> None:
    request = runner_pb.WatchRequest(run=_run_name(args.run), after_sequence=args.after_sequence)
    async for event in client.runner.Watch(request):
        print(json.dumps(json_format.MessageToDict(event)), flush=True)
