"""Domain errors, and their one mapping to canonical gRPC status codes.

Domain code raises these; `ErrorMappingInterceptor` turns them into the
status a client sees. Invalid input carries every field violation, sent as a
`google.rpc.BadRequest` detail.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

log = logging.getLogger(__name__)


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
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: list[FieldViolation]) -> None:
        listed = "; ".join(f"{v.field}: {v.description}" for v in violations)
        super().__init__(f"invalid request: {listed}")
        self.violations = violations

    def details(self) -> list[Any]:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in self.violations
            ]
        )
        return [bad_request]


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


@dataclass
class Violations:
    """Collects every field violation of a request before failing it."""

    items: list[FieldViolation] = field(default_factory=list)
    _prefix: list[str] = field(default_factory=list)

    def add(self, field_path: str, description: str) -> None:
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

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(list(self.items))

    def __bool__(self) -> bool:
        return bool(self.items)


def to_status(error: DomainError) -> grpc.Status:
    packed = []
    for detail in error.details():
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    proto = status_pb2.Status(code=error.code.value[0], message=error.message, details=packed)
    return rpc_status.to_status(proto)


async def abort(context: grpc.aio.ServicerContext[Any, Any], error: DomainError) -> NoReturn:
    status = to_status(error)
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


_INTERNAL = status_pb2.Status(code=code_pb2.INTERNAL, message="internal error; the server logged it")

Behaviour = Callable[..., Any]


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Maps domain errors to status codes for every RPC, in one place.

    Unexpected exceptions are logged and reported as INTERNAL (never UNKNOWN
    with a Python traceback). A call whose deadline already passed is not
    started.
    """

    def __init__(self) -> None:
        # Each method's handler is wrapped once: it is the same for every call.
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = await continuation(handler_call_details)
            if handler is None:
                return handler  # unknown method: UNIMPLEMENTED
            wrapped = self._wrapped[method] = _wrap(handler, method)
        return wrapped


def _wrap(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            _wrap_unary(handler.unary_unary, method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            _wrap_stream(handler.unary_stream, method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler  # client- and bidi-streaming: none in brewmesh's protos


async def _fail(context: grpc.aio.ServicerContext[Any, Any], error: Exception, method: str) -> NoReturn:
    if isinstance(error, DomainError):
        await abort(context, error)
    log.exception("unexpected error in %s", method, exc_info=error)
    status = rpc_status.to_status(_INTERNAL)
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


async def _refuse_expired(context: grpc.aio.ServicerContext[Any, Any]) -> None:
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        await abort(context, DeadlineExceeded("the call's deadline passed before it started"))


def _wrap_unary(behaviour: Behaviour, method: str) -> Behaviour:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await _refuse_expired(context)
        try:
            return await behaviour(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await _fail(context, error, method)

    return wrapper


def _wrap_stream(behaviour: Behaviour, method: str) -> Behaviour:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        await _refuse_expired(context)
        try:
            async for response in behaviour(request, context):
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await _fail(context, error, method)

    return wrapper
