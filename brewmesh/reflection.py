"""Server reflection that includes the protos' doc comments.

Generated stubs carry descriptors without source info, so plain reflection
would show grpcurl users bare messages. This serves each file from the
descriptor set built with the stubs (`_descriptors.binpb`, with comments),
and also resolves symbols the runtime pool cannot (e.g. `Service.Method`,
which grpcurl asks for by name).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer

DESCRIPTORS = Path(__file__).with_name("_descriptors.binpb")
SERVICE_NAME = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"].full_name


@dataclass(frozen=True)
class DocumentedFiles:
    """The descriptor set with comments: files by name and the file of each symbol."""

    files: dict[str, descriptor_pb2.FileDescriptorProto]
    symbols: dict[str, str]

    def with_dependencies(self, name: str) -> list[bytes]:
        seen: dict[str, bytes] = {}
        pending = [name]
        while pending:
            current = pending.pop()
            if current in seen or current not in self.files:
                continue
            seen[current] = self.files[current].SerializeToString()
            pending.extend(self.files[current].dependency)
        return list(seen.values())


@cache
def documented() -> DocumentedFiles:
    if not DESCRIPTORS.exists():
        return DocumentedFiles({}, {})
    files = {f.name: f for f in descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTORS.read_bytes()).file}
    symbols = {symbol: name for name, f in files.items() for symbol in _symbols(f)}
    return DocumentedFiles(files, symbols)


def _symbols(file: descriptor_pb2.FileDescriptorProto) -> Iterator[str]:
    prefix = f"{file.package}." if file.package else ""
    for message in file.message_type:
        yield from _message_symbols(prefix, message)
    for enum in file.enum_type:
        yield prefix + enum.name
    for extension in file.extension:
        yield prefix + extension.name
    for service in file.service:
        yield prefix + service.name
        for method in service.method:
            yield f"{prefix}{service.name}.{method.name}"


def _message_symbols(prefix: str, message: descriptor_pb2.DescriptorProto) -> Iterator[str]:
    name = prefix + message.name
    yield name
    for nested in message.nested_type:
        yield from _message_symbols(f"{name}.", nested)
    for enum in message.enum_type:
        yield f"{name}.{enum.name}"


class DocumentedReflectionServicer(ReflectionServicer):  # type: ignore[misc]
    async def ServerReflectionInfo(  # noqa: N802
        self, request_iterator: AsyncIterable[reflection_pb2.ServerReflectionRequest], context: Any
    ) -> AsyncIterator[reflection_pb2.ServerReflectionResponse]:
        async for response in super().ServerReflectionInfo(request_iterator, context):
            yield _documented(response, documented())


def _documented(
    response: reflection_pb2.ServerReflectionResponse, docs: DocumentedFiles
) -> reflection_pb2.ServerReflectionResponse:
    request = response.original_request
    if response.HasField("error_response") and request.HasField("file_containing_symbol"):
        file = docs.symbols.get(request.file_containing_symbol)
        return _files_response(request, docs.with_dependencies(file)) if file else response
    if response.HasField("file_descriptor_response"):
        protos = response.file_descriptor_response.file_descriptor_proto
        for i, raw in enumerate(protos):
            name = descriptor_pb2.FileDescriptorProto.FromString(raw).name
            if name in docs.files:
                protos[i] = docs.files[name].SerializeToString()
    return response


def _files_response(
    request: reflection_pb2.ServerReflectionRequest, files: list[bytes]
) -> reflection_pb2.ServerReflectionResponse:
    return reflection_pb2.ServerReflectionResponse(
        original_request=request,
        file_descriptor_response=reflection_pb2.FileDescriptorResponse(file_descriptor_proto=files),
    )


def enable(service_names: Sequence[str], server: grpc.aio.Server) -> None:
    servicer = DocumentedReflectionServicer([*service_names, SERVICE_NAME])
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
