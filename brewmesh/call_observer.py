"""Every call, seen once: Prometheus counters and latencies, and one access-log line.

The server interceptor is the outermost, so a call refused by the key check
or by the error mapping is counted and logged like any other. The access log
names the method, the status code, the duration, the caller's namespace and
the peer; never a key or a request's content.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from brewmesh.interceptor_types import HandlerContinuation
from brewmesh.layered_channel import CallKind, LayeredChannel, MultiCallable
from brewmesh.metrics import Metrics, rpc_labels

access_log = logging.getLogger("brewmesh.access")

CallerOf = Callable[[Iterable[tuple[str, str | bytes]]], str]
"""The namespace (or "admin", "anonymous") of a call's metadata, from what is already known."""

Behaviour = Callable[..., Any]
Labels = tuple[str, str, str]


_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


class CallObserverInterceptor(grpc.aio.ServerInterceptor):
    """Times each call and reports it to the metrics and the access log."""

    def __init__(self, metrics: Metrics, caller_of: CallerOf) -> None:
        self._metrics = metrics
        self._caller_of = caller_of
        # Handlers of every method, each of its own request and response types.
        self._wrapped: dict[tuple[str, int], grpc.RpcMethodHandler[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: HandlerContinuation[_Req, _Resp],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Req, _Resp] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler  # unknown method: UNIMPLEMENTED, answered by grpc itself
        method = handler_call_details.method
        # Keyed by the handler too: a refusal (bad key) is a different handler for the same method.
        key = (method, id(handler))
        wrapped = self._wrapped.get(key)
        if wrapped is None:
            wrapped = self._wrapped[key] = self._wrap(handler, method)
        return wrapped

    def _wrap(
        self, handler: grpc.RpcMethodHandler[_Req, _Resp], method: str
    ) -> grpc.RpcMethodHandler[_Req, _Resp]:
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # client- and bidi-streaming: none in brewmesh's protos

    def _unary(self, behaviour: Behaviour, method: str) -> Behaviour:
        labels = rpc_labels(method, "unary")

        async def observed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            self._on_done(context, method, labels, time.perf_counter())
            return await behaviour(request, context)

        return observed

    def _stream(self, behaviour: Behaviour, method: str) -> Behaviour:
        labels = rpc_labels(method, "server_stream")
        open_streams = self._metrics.server_open_streams.labels(*labels)
        # The outermost layer writes the stream's messages with context.write: grpc.aio then
        # drives a coroutine, not one more generator, per stream (less CPU per message). Inside,
        # every stream is a generator: the error mapping makes it one (brewmesh.written_streams).

        async def observed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            self._on_done(context, method, labels, time.perf_counter())
            open_streams.inc()
            try:
                async for response in behaviour(request, context):
                    await context.write(response)
            finally:
                open_streams.dec()

        return observed

    def _on_done(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        method: str,
        labels: tuple[str, str, str],
        start: float,
    ) -> None:
        # The done callback sees the final status, whether the handler returned, aborted or was cancelled.
        def report(_: object) -> None:
            seconds = time.perf_counter() - start
            code = _final_code(context)
            self._metrics.server_handled.labels(*labels, code.name).inc()
            self._metrics.server_latency.labels(*labels).observe(seconds)
            if access_log.isEnabledFor(logging.INFO):
                caller = self._caller_of(context.invocation_metadata() or ())
                fields = {
                    "grpc_method": method,
                    "grpc_code": code.name,
                    "duration_ms": round(seconds * 1000, 3),
                    "caller": caller,
                    "peer": context.peer(),
                }
                access_log.info("%(grpc_method)s %(grpc_code)s %(duration_ms).1f ms caller=%(caller)s"
                                " peer=%(peer)s", fields, extra=fields)  # fmt: skip

        # types-grpcio declares the callback as its own (type-check-only) class, not a
        # protocol, so no function matches it; grpc calls it with the context.
        context.add_done_callback(report)  # type: ignore[arg-type]


def _final_code(context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    if context.cancelled():
        return grpc.StatusCode.CANCELLED
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):  # grpc.aio reports an abort's code as its integer value
        return next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
    return grpc.StatusCode.OK


# -- client side: the calls this process makes -----------------------------------------------------


class _Counted:
    """A multi-callable whose calls are counted, with their final code and latency, once done.

    Reported from the call's done callback, after the caller has its answer: the caller
    awaits grpc's own call, nothing of ours (see brewmesh.layered_channel)."""

    def __init__(self, call: MultiCallable, metrics: Metrics, method: str, kind: CallKind) -> None:
        self._call = call
        self._metrics = metrics
        self._labels = rpc_labels(method, kind)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        call = self._call(*args, **kwargs)
        call.add_done_callback(functools.partial(self._done, start))
        return call

    def _done(self, start: float, finished: grpc.aio.Call) -> None:
        # Done, so its status is known: code() answers at once, but only as a coroutine.
        asking = asyncio.ensure_future(finished.code())
        asking.add_done_callback(functools.partial(self._report, start))

    def _report(self, start: float, answered: asyncio.Future[grpc.StatusCode]) -> None:
        self._metrics.client_handled.labels(*self._labels, _code_of(answered).name).inc()
        self._metrics.client_latency.labels(*self._labels).observe(time.perf_counter() - start)


def _code_of(answered: asyncio.Future[grpc.StatusCode]) -> grpc.StatusCode:
    if answered.cancelled() or answered.exception() is not None:
        return grpc.StatusCode.CANCELLED
    code = answered.result()
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def counted_channel(channel: grpc.aio.Channel, metrics: Metrics) -> grpc.aio.Channel:
    """`channel`, each of whose calls `metrics` counts (grpc_client_handled_total, latency)."""
    return LayeredChannel(channel, lambda call, method, kind: _Counted(call, metrics, method, kind))


@dataclass(frozen=True)
class ClientObservers:
    """How a process sees the calls it makes: counted in `metrics` (None: not counted), and
    through `interceptors` (tracing)."""

    metrics: Metrics | None = None
    interceptors: tuple[grpc.aio.ClientInterceptor, ...] = ()


NOT_OBSERVED = ClientObservers()
