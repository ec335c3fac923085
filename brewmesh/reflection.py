"""Server reflection that includes the protos' doc comments.

Generated stubs carry descriptors without source info, so plain reflection
would show grpcurl users bare messages. This serves each file from the
descriptor set built with the stubs (`_descriptors.binpb`, with comments).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer

DESCRIPTORS = Path(__file__).with_name("_descriptors.binpb")
SERVICE_NAME = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"].full_name


@cache
def documented_files() -> dict[str, bytes]:
    """File name -> serialized FileDescriptorProto with source info."""
    if not DESCRIPTORS.exists():
        return {}
    files = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTORS.read_bytes()).file
    return {f.name: f.SerializeToString() for f in files}


class DocumentedReflectionServicer(ReflectionServicer):  # type: ignore[misc]
    async def ServerReflectionInfo(  # noqa: N802
        self, request_iterator: AsyncIterable[reflection_pb2.ServerReflectionRequest], context: Any
    ) -> AsyncIterator[reflection_pb2.ServerReflectionResponse]:
        documented = documented_files()
        async for response in super().ServerReflectionInfo(request_iterator, context):
            if response.HasField("file_descriptor_response"):
                protos = response.file_descriptor_response.file_descriptor_proto
                for i, raw in enumerate(protos):
                    name = descriptor_pb2.FileDescriptorProto.FromString(raw).name
                    protos[i] = documented.get(name, raw)
            yield response


def enable(service_names: Sequence[str], server: grpc.aio.Server) -> None:
    servicer = DocumentedReflectionServicer([*service_names, SERVICE_NAME])
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
