"""Hostile requests for every RPC, built from the service descriptors (this module holds no tests).

`rpc_methods` lists every method of every brewmesh service the mesh serves;
`request_bodies(method)` is a Hypothesis strategy of request bodies for it:
structurally valid messages full of hostile values (empty, huge, unicode and
control characters, extreme numbers, NaN, unknown enum values, huge repeated
fields and maps, deep Structs), and bytes that do not decode as the request
type at all. `send` calls a method with raw bytes and `Outcome.problems`
says what a user could not live with in the answer.

Machine endpoints are only ever loopback addresses or invalid ones: the
partners service health-checks every endpoint it is given.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor, descriptor_pool, message, message_factory, struct_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from hypothesis import strategies as st

TRAILER_LIMIT = 8 * 1024
"""Bytes of trailers an error may take (a default grpc client accepts 16 KiB)."""
MAX_BODY_BYTES = 1024 * 1024
"""Bodies are kept under this: far from the server's 4 MiB limit on messages."""
UNARY_SECONDS = 10.0
STREAM_SECONDS = 0.3
"""A stream that stays open (a valid Subscribe) ends on this deadline of the client's own."""

ALWAYS_ALLOWED = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.UNAVAILABLE,
    }
)
STREAM_ENDINGS = frozenset({grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED})
"""Acceptable for a stream only: the client's own deadline ended one that legitimately kept open."""

STRUCT_TYPES = {"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"}
EXTREME_FLOATS = [math.nan, math.inf, -math.inf, -0.0, 0.0, 1e308, -1e308, 5e-324, 30.0, 2.0**63]

# Values that get past the first checks, so hostile values reach the deeper ones.
HINTS = [
    "my-coffee-company",
    "rival-roasters",
    "common",
    "lungo",
    "my-coffee-company:lungo",
    "recipes/my-coffee-company:lungo",
    "recipes/my-coffee-company:lungo/l10n/en",
    "recipes/common:x",
    "layouts/common:recipe-search",
    "layouts/my-coffee-company:card",
    "my-coffee-company:card",
    "recipe_search",
    "search_title",
    "search_description",
    "en",
    "US",
    "en-US",
    "volumeFormatters/en",
    "volumeFormatters/en-US",
    "{volume} ml",
    "partners/my-coffee-company",
    "partners/my-coffee-company/coffeeMachines/m1",
    "m1",
    "vending",
    "programRuns/r1",
    "r1",
    "takeout_requested",
    "order_canceled",
    "finished",
    "brewmesh.recipes.v1.RecipeService",
    "brewmesh.runner.v1.ProgramRunner",
    "brewmesh.partners.v1.PartnerService",
    "recipe_created",
    "program_event",
    "listener-1",
    "1",
    "0-0",
    "1-0",
    "9223372036854775808",
    "9" * 5000,
    "*",
    "product_properties",
    "execution_properties.parameters",
    "",
]
HOSTILE = [
    " ",
    "\x00",
    "\n\r\t",
    "\x7f\x1b[2J",
    "ü",
    "☕:☕",
    "\u202eevil",
    "\U0001f984" * 300,
    "a" * 9000,
    "recipes/" + "a" * 9000,
    "%00%ff",
    "'\"\\",
    "-",
    ":",
    "/",
    "recipes/:",
    "programRuns/",
]
RECIPE = "recipes/my-coffee-company:lungo"
MACHINE = "partners/my-coffee-company/coffeeMachines/m1"
RUN = "programRuns/r1"
# Values a field of that name takes in a valid request (the mesh under test is seeded with them).
FIELD_HINTS = {
    "name": [
        RECIPE,
        f"{RECIPE}/l10n/en",
        "layouts/common:recipe-search",
        "volumeFormatters/en",
        MACHINE,
        RUN,
        "partners/my-coffee-company",
    ],
    "recipe": [RECIPE],
    "layout": ["layouts/common:recipe-search"],
    "layout_id": ["my-coffee-company:card"],
    "namespace": ["my-coffee-company", "rival-roasters"],
    "id_component": ["lungo", "ristretto"],
    "language_code": ["en"],
    "country_code": ["", "US"],
    "parent": ["partners/my-coffee-company"],
    "machine": [MACHINE],
    "run": [RUN],
    "run_id": ["r1", "r2"],
    "event": ["takeout_requested", "order_canceled"],
    "api": ["brewmesh.recipes.v1.RecipeService", "brewmesh.runner.v1.ProgramRunner"],
    "event_types": ["recipe_created", "program_event"],
    "listener_name": ["listener-1"],
    "after_id": ["1", "0-0"],
    "template": ["{volume} ml"],
    "kind": ["recipe_search"],
    "field": ["search_title"],
    "required_fields": ["search_title"],
    "program_id": ["lungo"],
    "api_type": ["vending"],
    "handled_events": ["takeout_requested"],
    "display_name": ["Rival Roasters"],
    "paths": ["product_properties", "execution_properties.parameters", "*"],
    "service": ["", "brewmesh.recipes.v1.RecipeService"],
}
LOOPBACK_ENDPOINTS = ["127.0.0.1:1", "localhost:1", "[::1]:1", "127.0.0.1:65536", "", "x" * 9000, ":"]


@dataclass(frozen=True)
class Rpc:
    """One method of a served service."""

    path: str  # /package.Service/Method
    input_type: descriptor.Descriptor
    server_streaming: bool


def served_services(channel: Any) -> list[str]:
    """The services the server lists through reflection (a blocking channel)."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    return [service.name for reply in replies for service in reply.list_services_response.service]


def rpc_methods(services: Sequence[str]) -> list[Rpc]:
    """Every unary and server-streaming method of `services`, from the descriptor pool."""
    pool = descriptor_pool.Default()
    found = []
    for name in services:
        service = pool.FindServiceByName(name)
        for method in service.methods:
            if method.client_streaming:
                continue  # reflection's bidi stream: not a brewmesh API
            found.append(
                Rpc(f"/{service.full_name}/{method.name}", method.input_type, method.server_streaming)
            )
    return found


# -- strategies -------------------------------------------------------------------------------


def strings(field_name: str) -> st.SearchStrategy[str]:
    if field_name == "endpoint":
        return st.sampled_from(LOOPBACK_ENDPOINTS)  # never a host beyond this machine
    hints = st.sampled_from(FIELD_HINTS.get(field_name, HINTS))
    return st.one_of(
        hints,
        hints,
        hints,  # thrice: most requests get past the first check, so the later ones are reached
        st.sampled_from(HINTS),
        st.sampled_from(HOSTILE),
        st.text(max_size=40),
        st.builds(lambda hint, tail: hint + tail, st.sampled_from(HINTS), st.sampled_from(HOSTILE)),
    )


_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def integers(kind: int) -> st.SearchStrategy[int]:
    low, high = _INT_RANGES[kind]
    edges = sorted({low, high, 0, 1, -1 if low < 0 else 2, 300, 5001, 2**31 - 1 if high > 2**31 else high})
    return st.one_of(st.sampled_from([e for e in edges if low <= e <= high]), st.integers(low, high))


def scalars(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return strings(field.name)
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.one_of(
            st.sampled_from(EXTREME_FLOATS),
            st.floats(width=64 if kind == FieldDescriptor.TYPE_DOUBLE else 32),
        )
    if field.enum_type is not None:
        known = [value.number for value in field.enum_type.values]
        return st.one_of(st.sampled_from(known), st.sampled_from([-1, 999, 2**31 - 1]))
    return integers(kind)


def json_leaves() -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), st.booleans(), st.sampled_from(EXTREME_FLOATS), st.floats(), strings("value"))


def nested(levels: int, inner: Any) -> dict[str, Any]:
    """{"n": {"n": ... inner}}, `levels` objects deep."""
    for _ in range(levels):
        inner = {"n": inner}
    return dict(inner)


def structs() -> st.SearchStrategy[dict[str, Any]]:
    """What a Struct holds: small trees of values, or chains around the server's depth bound."""
    trees = st.recursive(
        json_leaves(),
        lambda children: st.one_of(
            st.lists(children, max_size=3), st.dictionaries(strings("key"), children, max_size=3)
        ),
        max_leaves=12,
    )
    return st.one_of(
        st.dictionaries(strings("key"), trees, max_size=4),
        st.builds(nested, st.sampled_from([9, 10, 11, 20]), json_leaves()),
    )


@st.composite
def messages(draw: st.DrawFn, kind: descriptor.Descriptor, depth: int = 0) -> message.Message:
    """A message of `kind` with a few of its fields set to hostile values."""
    if kind.full_name == "google.protobuf.Struct":
        struct = struct_pb2.Struct()
        struct.update(draw(structs()))
        return struct
    built = message_factory.GetMessageClass(kind)()
    for field in kind.fields:
        if draw(st.integers(0, 3)) > 0:  # most fields set: a request gets past "is required"
            _set(draw, built, field, depth)
    return built


def _one(draw: st.DrawFn, field: FieldDescriptor, depth: int) -> Any:
    if field.message_type is not None:
        if depth >= 4 and field.message_type.full_name not in STRUCT_TYPES:
            return message_factory.GetMessageClass(field.message_type)()
        return draw(messages(field.message_type, depth + 1))
    return draw(scalars(field))


def _count(draw: st.DrawFn, depth: int) -> int:
    """How many items a list or map gets: a few, or now and then very many (at the top level
    only: very many of very many would be a request of billions of items, built in memory)."""
    if depth == 0 and draw(st.integers(0, 15)) == 0:
        return draw(st.sampled_from([101, 1001, 5000, 30_000]))
    return draw(st.integers(0, 3))


def _set(draw: st.DrawFn, built: Any, field: FieldDescriptor, depth: int) -> None:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        _fill_map(draw, getattr(built, field.name), field.message_type, depth)
    elif field.is_repeated:
        size = _count(draw, depth)
        few = [_one(draw, field, depth) for _ in range(min(size, 3))]
        getattr(built, field.name).extend(few + few[-1:] * (size - len(few)) if few else [])
    elif field.message_type is not None:
        getattr(built, field.name).CopyFrom(_one(draw, field, depth))
    else:
        setattr(built, field.name, _one(draw, field, depth))


def _fill_map(draw: st.DrawFn, target: Any, entry: descriptor.Descriptor, depth: int) -> None:
    key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
    size = _count(draw, depth)
    text = key_field.type == FieldDescriptor.TYPE_STRING
    keys = [draw(scalars(key_field)) for _ in range(min(size, 3))]
    keys += [f"k{i}" if text else i for i in range(size - 3)]
    value = _one(draw, value_field, depth)
    for key in keys:
        if value_field.message_type is not None:
            target[key].CopyFrom(value)
        else:
            target[key] = value


# -- raw bytes ---------------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def delimited(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def deep_struct(levels: int) -> bytes:
    """A Struct `levels` deep: {"a": {"a": ...}}, three messages a level."""
    body = b""
    for _ in range(levels):
        value = delimited(5, body)  # Value.struct_value
        body = delimited(1, delimited(1, b"a") + delimited(2, value))  # Struct.fields entry
    return body


def _struct_path(kind: descriptor.Descriptor, seen: frozenset[str] = frozenset()) -> list[int] | None:
    """Field numbers from `kind` down to a Struct field, if it has one."""
    for field in kind.fields:
        target = field.message_type
        if target is None or target.full_name in seen or field.is_repeated:
            continue
        if target.full_name == "google.protobuf.Struct":
            return [field.number]
        below = _struct_path(target, seen | {kind.full_name})
        if below is not None:
            return [field.number, *below]
    return None


def _wrapped(path: list[int], payload: bytes) -> bytes:
    for number in reversed(path):
        payload = delimited(number, payload)
    return payload


@st.composite
def undecodable(draw: st.DrawFn, kind: descriptor.Descriptor) -> bytes:
    """Bytes that do not decode as `kind` (or, at times, barely do)."""
    options = [
        st.binary(min_size=1, max_size=64),
        st.just(b"\xff\xff\xff\xff"),
        st.just(b"\x08\xff"),  # a varint cut short
        st.just(b"\x0a\x05ab"),  # a length past the end
    ]
    text = next((f for f in kind.fields if f.type == FieldDescriptor.TYPE_STRING), None)
    if text is not None:
        options.append(st.just(delimited(text.number, b"\xff\xfe\xc0")))  # not UTF-8
    path = _struct_path(kind)
    if path is not None:
        options.append(st.sampled_from([_wrapped(path, deep_struct(n)) for n in (12, 50, 200)]))
    return draw(st.one_of(options))


@st.composite
def request_bodies(draw: st.DrawFn, rpc: Rpc) -> bytes:
    if draw(st.integers(0, 3)) == 0:
        return draw(undecodable(rpc.input_type))
    body = draw(messages(rpc.input_type)).SerializeToString()
    if len(body) > MAX_BODY_BYTES:
        return body[:MAX_BODY_BYTES]  # cut: it no longer decodes, which is hostile too
    return body


# -- calls and their outcomes --------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What a call got back."""

    rpc: Rpc
    code: grpc.StatusCode
    details: str
    trailers: tuple[tuple[str, str | bytes], ...]
    violations: list[error_details_pb2.BadRequest.FieldViolation]
    bad_details: str  # why the status details could not be read, if they could not

    def trailer_bytes(self) -> int:
        return trailer_bytes(self.details, self.trailers)

    def problems(self) -> list[str]:
        found = []
        allowed = ALWAYS_ALLOWED | (STREAM_ENDINGS if self.rpc.server_streaming else frozenset())
        if not self.rpc.path.startswith("/brewmesh."):
            allowed |= {grpc.StatusCode.UNIMPLEMENTED}  # health's List, which grpcio-health lacks
        if self.code not in allowed:
            found.append(f"{self.code.name}: {self.details[:300]}")
        if self.code == grpc.StatusCode.INVALID_ARGUMENT and not self.violations:
            found.append(
                f"INVALID_ARGUMENT without field violations ({self.bad_details}): {self.details[:300]}"
            )
        if self.trailer_bytes() > TRAILER_LIMIT:
            found.append(f"{self.trailer_bytes()} bytes of trailers: {self.details[:100]}")
        return found


def trailer_bytes(details: str, trailers: Iterable[tuple[str, str | bytes]]) -> int:
    """About what an error's trailers take on the wire: the status, its message percent-encoded,
    binary values in base64."""
    size = len("grpc-status") + 2 + len("grpc-message")
    size += sum(1 if " " <= c <= "~" and c != "%" else 3 * len(c.encode()) for c in details)
    for key, value in trailers:
        size += len(key) + (math.ceil(len(value) / 3) * 4 if isinstance(value, bytes) else len(value))
    return size


def outcome_of(rpc: Rpc, error: grpc.aio.AioRpcError | None) -> Outcome:
    if error is None:
        return Outcome(rpc, grpc.StatusCode.OK, "", (), [], "")
    trailers = tuple(error.trailing_metadata() or ())
    violations: list[error_details_pb2.BadRequest.FieldViolation] = []
    bad = ""
    try:
        status = rpc_status.from_call(error)
    except ValueError as mismatch:  # the details disagree with the call's code or message
        status, bad = None, str(mismatch)
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            holder = error_details_pb2.BadRequest()
            detail.Unpack(holder)
            violations += list(holder.field_violations)
    return Outcome(rpc, error.code(), error.details() or "", trailers, violations, bad)


async def send(channel: grpc.aio.Channel, rpc: Rpc, body: bytes, key: str | None) -> Outcome:
    """Call `rpc` with `body` as it is, as a default grpc client would."""
    metadata = (("authorization", f"Bearer {key}"),) if key else ()
    try:
        # No serializers: the body goes as it is, and answers come back as bytes.
        if rpc.server_streaming:
            stream: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(rpc.path)
            call = stream(body, metadata=metadata, timeout=STREAM_SECONDS)
            try:
                async for _ in call:
                    pass
            finally:
                call.cancel()
        else:
            unary: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(rpc.path)
            await unary(body, metadata=metadata, timeout=UNARY_SECONDS)
    except grpc.aio.AioRpcError as error:
        return outcome_of(rpc, error)
    return outcome_of(rpc, None)


@dataclass
class Latencies:
    """Seconds each call of a bystander took."""

    seconds: list[float]

    def p99(self) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


async def timed(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started
