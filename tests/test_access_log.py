"""One access-log line per call (method, code, duration, caller, peer), never a key; JSON on demand."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from brewmesh.client import MeshClient
from brewmesh.mesh import Mesh
from brewmesh.recipes.v1 import recipes_pb2
from tests.conftest import PartnerClient, embedded_only, launch, wait_for_serving

WAIT_SECONDS = 10.0


class AccessLines(logging.Handler):
    """Access-log records as the server writes them."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        self._arrived = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self._arrived.set()

    async def of(self, method: str) -> logging.LogRecord:
        """The one line of `method`, once written: the server logs a call when it is done,
        which may be a moment after the client got its answer."""
        async with asyncio.timeout(WAIT_SECONDS):
            while not (found := [r for r in self.records if getattr(r, "grpc_method", "").endswith(method)]):
                self._arrived.clear()
                await self._arrived.wait()
        [line] = found
        return line

    @property
    def text(self) -> str:
        return "\n".join(r.getMessage() for r in self.records)


@pytest.fixture
def access_lines() -> Iterator[AccessLines]:
    logger = logging.getLogger("brewmesh.access")
    lines, level = AccessLines(), logger.level
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(lines)
    logger.setLevel(level)


@embedded_only
async def test_each_call_is_one_line_with_its_code_caller_and_peer(
    mesh: Mesh, partner: PartnerClient, access_lines: AccessLines
) -> None:
    with pytest.raises(grpc.aio.AioRpcError):
        await partner.client.recipes.GetRecipe(recipes_pb2.GetRecipeRequest(name="recipes/nobody:nothing"))
    line = await access_lines.of("/GetRecipe")
    assert line.grpc_code == "NOT_FOUND" and line.caller == partner.namespace  # type: ignore[attr-defined]
    assert line.peer.startswith("ipv4:127.0.0.1:") and line.duration_ms >= 0  # type: ignore[attr-defined]
    assert partner.key not in access_lines.text and mesh.admin_key not in access_lines.text


@embedded_only
async def test_a_refused_key_is_logged_without_the_key(
    mesh: Mesh, anonymous: MeshClient, access_lines: AccessLines
) -> None:
    bad = (("authorization", "Bearer bmk_not-a-real-key"),)
    with pytest.raises(grpc.aio.AioRpcError):
        await anonymous.recipes.GetRecipe(recipes_pb2.GetRecipeRequest(name="recipes/a:b"), metadata=bad)
    line = await access_lines.of("/GetRecipe")
    assert line.grpc_code == "UNAUTHENTICATED" and line.caller == "unknown-key"  # type: ignore[attr-defined]
    assert "not-a-real-key" not in access_lines.text


def test_json_logs_are_one_object_per_line(tmp_path: Path) -> None:
    port, process = launch(
        ["up", "--data-dir", str(tmp_path), "--log-format", "json"], 0, BREWMESH_LOG_LEVEL="INFO"
    )
    try:
        wait_for_serving(f"127.0.0.1:{port}", process)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    logged = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert logged, output
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in logged)
    checks = [e for e in logged if e.get("grpc_method") == "/grpc.health.v1.Health/Check"]
    assert checks and checks[0]["grpc_code"] == "OK" and checks[0]["caller"] == "anonymous"
    assert not any(isinstance(e, dict) and "Traceback" in json.dumps(e) for e in logged)
