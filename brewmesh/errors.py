"""Domain errors, and their one mapping to canonical gRPC status codes.

Domain code raises these; `ErrorMappingInterceptor` turns them into the
status a client sees. Invalid input carries its field violations, sent as a
`google.rpc.BadRequest` detail.

Errors are bounded here, whatever a call site writes: a client's value is
quoted cut short (`quote`), a request reports at most `MAX_VIOLATIONS`
violations (the message counts the rest), and the message and details stay
within a few KiB, far under the 16 KiB of trailers a default grpc client
accepts.

A request body that does not decode as the method's request type (malformed
protobuf, a string that is not UTF-8, nesting deeper than protobuf's limit)
is INVALID_ARGUMENT whose one field violation has field "" (the request as a
whole), logged as a rate-limited warning without a traceback.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2, descriptor_pool
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from brewmesh.interceptor_types import HandlerContinuation
from brewmesh.written_streams import as_generator

log = logging.getLogger(__name__)

MAX_VIOLATIONS = 100
"""Field violations listed in one response at most; the message counts the rest."""
MAX_QUOTED_CHARS = 60
"""Characters of a client's value that an error quotes."""
MAX_FIELD_CHARS = 200
"""Characters of a field path in a violation (a map key may be any length)."""
MAX_DESCRIPTION_CHARS = 300
"""Characters of one violation's description."""
MAX_MESSAGE_BYTES = 1024
"""The status message as grpc sends it (UTF-8, percent-encoded)."""
MAX_DETAILS_BYTES = 3072
"""The serialized BadRequest: base64 in the trailers, about 4 KiB."""
UNDECODABLE_LOG_SECONDS = 10.0
"""At most one warning about undecodable requests per this many seconds."""
_CUT = "..."


def quote(value: str) -> str:
    """A client's value for an error message: quoted, cut to `MAX_QUOTED_CHARS`, unprintable
    characters escaped (so a NUL or a newline shows as what it is)."""
    shown = value[:MAX_QUOTED_CHARS]
    if not shown.isprintable():
        shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in shown)
    if len(value) > MAX_QUOTED_CHARS:
        return f"'{shown}{_CUT}' ({len(value)} characters)"
    return f"'{shown}'"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(_CUT)] + _CUT


def _wire_size(char: str) -> int:
    """Bytes `char` takes in grpc-message: printable ASCII but '%' as is, others percent-encoded."""
    return 1 if " " <= char <= "~" and char != "%" else 3 * len(char.encode("utf-8", "replace"))


def wire_message(text: str, budget: int = MAX_MESSAGE_BYTES) -> str:
    """`text`, cut so that it takes at most `budget` bytes as grpc sends it."""
    sizes = [_wire_size(char) for char in text[:budget]]  # a character takes at least one byte
    if len(text) <= budget and sum(sizes) <= budget:
        return text
    room, used = budget - len(_CUT), 0
    for i, size in enumerate(sizes):
        if used + size > room:
            return text[:i] + _CUT
        used += size
    return text  # pragma: no cover (the sum above exceeded the budget)


@dataclass(frozen=True)
class FieldViolation:
    """One invalid field: its path in the request and what to change."""

    field: str
    description: str


class DomainError(Exception):
    """An error a client caused or must know about, with its status code."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def details(self) -> list[Any]:
        return []


class InvalidArgument(DomainError):
    """Field violations, bounded: at most `MAX_VIOLATIONS` and `MAX_DETAILS_BYTES` of them are
    sent; the message says how many there were in all."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: list[FieldViolation], omitted: int = 0, summary: str = "") -> None:
        self.violations = _within_budget([_bounded(v) for v in violations[:MAX_VIOLATIONS]])
        omitted += len(violations) - len(self.violations)
        listed = "; ".join(
            f"{v.field}: {v.description}" if v.field else v.description for v in self.violations
        )
        total = len(self.violations) + omitted
        tail = f" ({total} violations: {len(self.violations)} listed in the details)" if omitted else ""
        head = summary or "invalid request: "
        room = MAX_MESSAGE_BYTES - sum(map(_wire_size, head + tail))
        super().__init__(wire_message(head + wire_message(listed, room) + tail))
        self.omitted = omitted

    def details(self) -> list[Any]:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in self.violations
            ]
        )
        return [bad_request]


def _listed(violation: FieldViolation) -> str:
    return f"{violation.field}: {violation.description}" if violation.field else violation.description


def _bounded(violation: FieldViolation) -> FieldViolation:
    return FieldViolation(
        _cut(violation.field, MAX_FIELD_CHARS), _cut(violation.description, MAX_DESCRIPTION_CHARS)
    )


def _within_budget(violations: list[FieldViolation]) -> list[FieldViolation]:
    """The first violations whose BadRequest fits `MAX_DETAILS_BYTES` (at least one)."""
    used = 0
    for i, v in enumerate(violations):
        # Each violation: its two strings plus about 8 bytes of tags and lengths.
        used += len(v.field.encode()) + len(v.description.encode()) + 8
        if used > MAX_DETAILS_BYTES and i > 0:
            return violations[:i]
    return violations


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED


class Unavailable(DomainError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(DomainError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unimplemented(DomainError):
    """A method this server does not offer (e.g. ListRuns on a partner's machine)."""

    code = grpc.StatusCode.UNIMPLEMENTED


@dataclass
class Violations:
    """Collects the field violations of a request before failing it: the first
    `MAX_VIOLATIONS`, and how many more there were."""

    items: list[FieldViolation] = field(default_factory=list)
    omitted: int = 0
    _prefix: list[str] = field(default_factory=list)

    @property
    def full(self) -> bool:
        """Whether further violations are only counted: a check with many may skip describing them."""
        return len(self.items) >= MAX_VIOLATIONS

    def count(self, violations: int) -> None:
        """Count violations that are not listed."""
        self.omitted += violations

    def add(self, field_path: str, description: str) -> None:
        if self.full:
            self.omitted += 1
            return
        path = ".".join([*self._prefix, field_path]) if field_path else ".".join(self._prefix)
        self.items.append(FieldViolation(path, description))

    @contextmanager
    def under(self, prefix: str) -> Iterator[None]:
        """Report violations inside a nested message, e.g. `recipe.product_properties`."""
        self._prefix.append(prefix)
        try:
            yield
        finally:
            self._prefix.pop()

    def error(self) -> InvalidArgument | None:
        """The request's failure, if it has violations."""
        return InvalidArgument(list(self.items), self.omitted) if self.items else None

    def raise_if_any(self) -> None:
        if (error := self.error()) is not None:
            raise error

    def __bool__(self) -> bool:
        return bool(self.items)


def to_status(error: DomainError) -> grpc.Status:
    packed = []
    for detail in error.details():
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    message = wire_message(error.message)
    proto = status_pb2.Status(code=error.code.value[0], message=message, details=packed)
    status: grpc.Status = rpc_status.to_status(proto)  # grpc_status is untyped
    return status


async def abort(context: grpc.aio.ServicerContext[Any, Any], error: DomainError) -> NoReturn:
    status = to_status(error)
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


_INTERNAL = status_pb2.Status(code=code_pb2.INTERNAL, message="internal error; the server logged it")

Behaviour = Callable[..., Any]


_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Maps domain errors to status codes for every RPC, in one place.

    Unexpected exceptions are logged and reported as INTERNAL (never UNKNOWN
    with a Python traceback). A call whose deadline already passed is not
    started.
    """

    def __init__(self) -> None:
        # Each method's handler is wrapped once: it is the same for every call.
        # One entry per method, each of its own request and response types.
        self._wrapped: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: HandlerContinuation[_Req, _Resp],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Req, _Resp] | None:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = await continuation(handler_call_details)
            if handler is None:
                return handler  # unknown method: UNIMPLEMENTED
            wrapped = self._wrapped[method] = _wrap(handler, method)
        return wrapped


@dataclass(frozen=True)
class Undecodable:
    """What the request deserializer hands on for a body that does not decode."""

    type_name: str
    size: int

    def error(self) -> InvalidArgument:
        why = (
            f"its {self.size} bytes do not parse as that message (malformed protobuf, a string"
            " that is not UTF-8, or messages nested too deep)"
        )
        violation = FieldViolation("", f"{why}: send a serialized {self.type_name}")
        return InvalidArgument([violation], summary=f"the request is not a valid {self.type_name}: ")


class _RateLimitedWarning:
    """Logs at most one warning per `interval` seconds, counting the ones it held back."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._next = 0.0
        self._held_back = 0

    def warn(self, message: str) -> None:
        now = time.monotonic()
        if now < self._next:
            self._held_back += 1
            return
        held_back, self._held_back, self._next = self._held_back, 0, now + self._interval
        more = f" ({held_back} more since the last warning)" if held_back else ""
        log.warning("%s%s", message, more)


_undecodable_log = _RateLimitedWarning(UNDECODABLE_LOG_SECONDS)


def _request_type(method: str) -> str:
    """The full name of `/package.Service/Method`'s request type, or the method if unknown."""
    service, _, name = method.lstrip("/").partition("/")
    try:
        found = descriptor_pool.Default().FindServiceByName(service).FindMethodByName(name)
    except KeyError:
        return method
    return str(found.input_type.full_name) if found is not None else method


def _tolerant(deserializer: Callable[[bytes], Any] | None, method: str) -> Callable[[bytes], Any] | None:
    """A deserializer that hands an `Undecodable` on instead of raising.

    grpc.aio answers a deserializer's exception with UNKNOWN and logs a
    traceback; the wrapper can answer `Undecodable` with INVALID_ARGUMENT.
    """
    if deserializer is None:
        return None
    type_name = _request_type(method)

    def decode(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception:  # DecodeError, or whatever else a hostile body makes a parser raise
            return Undecodable(type_name, len(raw))

    return decode


def _wrap(handler: grpc.RpcMethodHandler[_Req, _Resp], method: str) -> grpc.RpcMethodHandler[_Req, _Resp]:
    deserializer = _tolerant(handler.request_deserializer, method)
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            _wrap_unary(handler.unary_unary, method),
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream:
        # A stream is an async generator, or a coroutine that writes with context.write (health's
        # Watch): made a generator here, the innermost layer, for every interceptor outside.
        stream: Behaviour = handler.unary_stream
        if not inspect.isasyncgenfunction(stream):
            stream = as_generator(stream)
        return grpc.unary_stream_rpc_method_handler(
            _wrap_stream(stream, method),
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler  # client- and bidi-streaming: none in brewmesh's protos


async def _fail(context: grpc.aio.ServicerContext[Any, Any], error: Exception, method: str) -> NoReturn:
    if isinstance(error, DomainError):
        await abort(context, error)
    if isinstance(error, NotImplementedError):  # what generated base servicers raise (health's List)
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented by this server")
    log.exception("unexpected error in %s", method, exc_info=error)
    status = rpc_status.to_status(_INTERNAL)
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


async def _refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any], method: str) -> None:
    """Abort a call that must not start: its deadline passed, or its body did not decode."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        await abort(context, DeadlineExceeded("the call's deadline passed before it started"))
    if isinstance(request, Undecodable):
        _undecodable_log.warn(
            f"refused {method}: a {request.size}-byte body that is not a {request.type_name}"
        )
        await abort(context, request.error())


def _wrap_unary(behaviour: Behaviour, method: str) -> Behaviour:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await _refuse(request, context, method)
        try:
            return await behaviour(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await _fail(context, error, method)

    return wrapper


def _wrap_stream(behaviour: Behaviour, method: str) -> Behaviour:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        await _refuse(request, context, method)
        try:
            async for response in behaviour(request, context):
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await _fail(context, error, method)

    return wrapper
