"""One access-log line per call (method, code, duration, caller, peer), never a key; JSON on demand."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from brewmesh.client import MeshClient, connect
from brewmesh.mesh import Mesh
from brewmesh.partners.v1 import partners_pb2
from brewmesh.recipes.v1 import recipes_pb2
from tests.conftest import DistributedBackends, PartnerClient, checked_once, embedded_only, separate_services

WAIT_SECONDS = 10.0
NS = "logged-coffee"


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
    _, output = checked_once(
        ["up", "--data-dir", str(tmp_path), "--log-format", "json"], BREWMESH_LOG_LEVEL="INFO"
    )
    logged = json_lines(output)
    assert logged, output
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in logged)
    checks = [e for e in logged if e.get("grpc_method") == "/grpc.health.v1.Health/Check"]
    assert checks and checks[0]["grpc_code"] == "OK" and checks[0]["caller"] == "anonymous"
    assert not any(isinstance(e, dict) and "Traceback" in json.dumps(e) for e in logged)


async def test_service_processes_on_postgresql_and_redis_log_each_call_by_caller(
    tmp_path: Path, distributed_backends: DistributedBackends
) -> None:
    """Distributed: the recipes process names the partner it asked the partners process about."""
    json_info = {"BREWMESH_LOG_LEVEL": "INFO", "BREWMESH_LOG_FORMAT": "json"}
    with separate_services(tmp_path, distributed_backends, env_vars=json_info) as services:
        async with connect(services.partners.address, key=services.partners.admin_key) as admin:
            created = await admin.partners.CreatePartner(
                partners_pb2.CreatePartnerRequest(
                    namespace=NS, partner=partners_pb2.Partner(display_name="Logged")
                )
            )
        async with connect(services.recipes.address, key=created.api_key) as catalogue:
            with pytest.raises(grpc.aio.AioRpcError):
                await catalogue.recipes.GetRecipe(recipes_pb2.GetRecipeRequest(name=f"recipes/{NS}:nothing"))
    logged = {name: json_lines(output) for name, output in services.outputs.items()}
    [get] = [e for e in logged["recipes"] if e.get("grpc_method", "").endswith("/GetRecipe")]
    assert get["grpc_code"] == "NOT_FOUND" and get["caller"] == NS and get["peer"].startswith("ipv4:")
    [create] = [e for e in logged["partners"] if e.get("grpc_method", "").endswith("/CreatePartner")]
    assert create["grpc_code"] == "OK" and create["caller"] == "admin"
    for output in services.outputs.values():
        assert created.api_key not in output and services.partners.admin_key not in output


def json_lines(output: str) -> list[dict[str, Any]]:
    """The JSON log objects of a process's output (grpc's own C-core lines are not JSON)."""
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]
