"""Every call, seen once: Prometheus counters and latencies, and one access-log line.

The server interceptor is the outermost, so a call refused by the key check
or by the error mapping is counted and logged like any other. The access log
names the method, the status code, the duration, the caller's namespace and
the peer; never a key or a request's content.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import grpc

from brewmesh.interceptor_types import HandlerContinuation, StreamContinuation, UnaryContinuation
from brewmesh.metrics import Metrics, rpc_labels

access_log = logging.getLogger("brewmesh.access")

CallerOf = Callable[[Iterable[tuple[str, str | bytes]]], str]
"""The namespace (or "admin", "anonymous") of a call's metadata, from what is already known."""

Behaviour = Callable[..., Any]
Labels = tuple[str, str, str]
Continuation = Callable[..., Any]


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


class _ClientObserver:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def _report(self, method: str | bytes, kind: str, code: grpc.StatusCode, start: float) -> None:
        name = method.decode() if isinstance(method, bytes) else method
        labels = rpc_labels(name, kind)
        self._metrics.client_handled.labels(*labels, code.name).inc()
        self._metrics.client_latency.labels(*labels).observe(time.perf_counter() - start)


class _UnaryClientObserver(_ClientObserver, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self,
        continuation: UnaryContinuation[_Req, _Resp],
        details: grpc.aio.ClientCallDetails,
        request: _Req,
    ) -> grpc.aio.UnaryUnaryCall[_Req, _Resp]:
        start = time.perf_counter()
        call = await continuation(details, request)
        code = grpc.StatusCode.CANCELLED
        try:
            await call  # the caller awaits it again and gets the same answer
            code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as error:
            code = error.code()
        finally:
            self._report(details.method, "unary", code, start)
        return call


class _StreamClientObserver(_ClientObserver, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self,
        continuation: StreamContinuation[_Req, _Resp],
        details: grpc.aio.ClientCallDetails,
        request: _Req,
    ) -> grpc.aio.UnaryStreamCall[_Req, _Resp]:
        start = time.perf_counter()
        call = await continuation(details, request)

        def done(finished: grpc.aio.UnaryStreamCall[_Req, _Resp]) -> None:
            # Done, so its status is known: code() answers at once, but only as a coroutine.
            asking = asyncio.ensure_future(finished.code())
            asking.add_done_callback(
                lambda answered: self._report(details.method, "server_stream", _code_of(answered), start)
            )

        call.add_done_callback(done)
        return call


def _code_of(answered: asyncio.Future[grpc.StatusCode]) -> grpc.StatusCode:
    if answered.cancelled() or answered.exception() is not None:
        return grpc.StatusCode.CANCELLED
    code = answered.result()
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def client_interceptors(metrics: Metrics) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors for a grpc.aio channel whose calls `metrics` should count."""
    return [_UnaryClientObserver(metrics), _StreamClientObserver(metrics)]
