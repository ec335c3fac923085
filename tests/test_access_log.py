"""One access-log line per call (method, code, duration, caller, peer), never a key; JSON on demand."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from brewmesh.client import MeshClient
from brewmesh.mesh import Mesh
from brewmesh.recipes.v1 import recipes_pb2
from tests.conftest import PartnerClient, embedded_only, launch, wait_for_serving


@embedded_only
async def test_each_call_is_one_line_with_its_code_caller_and_peer(
    mesh: Mesh, partner: PartnerClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="brewmesh.access")
    with pytest.raises(grpc.aio.AioRpcError):
        await partner.client.recipes.GetRecipe(recipes_pb2.GetRecipeRequest(name="recipes/nobody:nothing"))
    [line] = [r for r in caplog.records if getattr(r, "grpc_method", "").endswith("/GetRecipe")]
    assert line.grpc_code == "NOT_FOUND" and line.caller == partner.namespace  # type: ignore[attr-defined]
    assert line.peer.startswith("ipv4:127.0.0.1:") and line.duration_ms >= 0  # type: ignore[attr-defined]
    assert partner.key not in caplog.text and mesh.admin_key not in caplog.text


@embedded_only
async def test_a_refused_key_is_logged_without_the_key(
    mesh: Mesh, anonymous: MeshClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="brewmesh.access")
    bad = (("authorization", "Bearer bmk_not-a-real-key"),)
    with pytest.raises(grpc.aio.AioRpcError):
        await anonymous.recipes.GetRecipe(recipes_pb2.GetRecipeRequest(name="recipes/a:b"), metadata=bad)
    [line] = [r for r in caplog.records if getattr(r, "grpc_method", "").endswith("/GetRecipe")]
    assert line.grpc_code == "UNAUTHENTICATED" and line.caller == "unknown-key"  # type: ignore[attr-defined]
    assert "not-a-real-key" not in caplog.text


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
