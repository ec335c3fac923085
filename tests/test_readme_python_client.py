"""The README's "Calling it from Python" example runs as written against a mesh."""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from brewmesh.bus.v1 import event_bus_pb2 as bus_pb
from tests.conftest import ROOT, MeshUnderTest, PartnerClient, embedded_only, start_machine_process
from tests.fleet import create_recipe, register_machines, run_request

NS = "my-coffee-company"


def readme_example(address: str) -> Callable[[str], Coroutine[Any, Any, None]]:
    section = (ROOT / "README.md").read_text().split("## Calling it from Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code, "the section has a python block"
    source = code.group(1).replace('asyncio.run(main("bmk_..."))', "").replace("127.0.0.1:50051", address)
    namespace: dict[str, Any] = {}
    exec(compile(source, "README.md", "exec"), namespace)
    main: Callable[[str], Coroutine[Any, Any, None]] = namespace["main"]
    return main


@embedded_only
async def test_the_python_client_example_runs(
    mesh: MeshUnderTest, partner: PartnerClient, capsys: pytest.CaptureFixture[str]
) -> None:
    machine = start_machine_process("cafe", brew_seconds=0.2)
    try:
        await register_machines(partner.client, NS, {"cafe-1": ("cafe", machine.address, ())})
        recipe = await create_recipe(partner.client, NS, "lungo-customato")
        await partner.client.runner.Run(
            run_request("order-1", f"partners/{NS}/coffeeMachines/cafe-1", recipe)
        )
        await readme_example(f"127.0.0.1:{mesh.port}")(partner.key)
    finally:
        machine.stop()
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "300"
    assert any(line.startswith("namespace - ") for line in printed)
    assert "finished" in printed  # the run's last event
    assert printed[-1] == "recipe_created"  # the first of the group's events: the recipe above
    listed = await partner.client.bus.ListListenerGroups(
        bus_pb.ListListenerGroupsRequest(api="brewmesh.recipes.v1.RecipeService")
    )
    [group] = listed.listener_groups
    assert (group.listener_name, group.pending_events) == ("search-index", 0)  # acknowledged
