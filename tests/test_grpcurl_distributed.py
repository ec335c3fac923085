"""The grpcurl story against the distributed mesh: every service its own process, nothing shared.

Redis, PostgreSQL, partners, recipes and runner as separate processes (each
service with a data directory of its own), plus a vending machine: the
lungo-customato story, then a run with takeout, each call sent with the real
grpcurl to the process that serves it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import BIN, DistributedBackends, grpcurl, separate_services, start_machine_process
from tests.test_grpcurl_scenario import BUILD, NS, RECIPE, call, search

MACHINE = f"partners/{NS}/coffeeMachines/vending-1"


def test_the_lungo_customato_story_and_a_run_with_takeout(
    tmp_path: Path, distributed_backends: DistributedBackends
) -> None:
    machine = start_machine_process("vending", brew_seconds=0.3)
    try:
        with separate_services(tmp_path, distributed_backends) as services:
            partners, recipes, runner = services.partners, services.recipes, services.runner
            admin_key = partners.admin_key
            created = call(
                partners,
                "brewmesh.partners.v1.PartnerService/CreatePartner",
                {"namespace": NS, "partner": {"displayName": "My Coffee Company"}},
                key=admin_key,
            )
            key = str(created["apiKey"])
            built = call(recipes, "brewmesh.recipes.v1.RecipeService/BuildRecipe", BUILD, key=key)
            assert built["recipe"]["name"] == f"recipes/{RECIPE}"
            [us] = search(recipes, "US")
            assert us["defaultVolume"] == "10 fl oz"
            [gb] = search(recipes, "GB")
            assert gb["defaultVolume"] == "300 ml"

            fleet = {
                "parent": f"partners/{NS}",
                "coffeeMachines": [
                    {
                        "name": MACHINE,
                        "apiType": "vending",
                        "programApi": {"endpoint": machine.address},
                        "handledEvents": ["takeout_requested", "order_canceled"],
                    }
                ],
            }
            call(partners, "brewmesh.partners.v1.PartnerService/PutCoffeeMachines", fleet, key=key)
            run = {"runId": "order-1", "machine": MACHINE, "recipe": f"recipes/{RECIPE}"}
            started = call(runner, "brewmesh.runner.v1.ProgramRunner/Run", run, key=key)
            assert started["volumeMl"] == 300  # the recipe's default, from the recipes process
            watch = subprocess.Popen(
                [str(BIN / "grpcurl"), "-plaintext", "-H", f"authorization: Bearer {key}",
                 "-d", json.dumps({"run": "programRuns/order-1"}),
                 runner.address, "brewmesh.runner.v1.ProgramRunner/Watch"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip
            try:
                signal = {"run": "programRuns/order-1", "event": "takeout_requested"}
                signalled = call(runner, "brewmesh.runner.v1.ProgramRunner/Signal", signal, key=key)
                watched, _ = watch.communicate(timeout=30)  # the watch ends with the run
            finally:
                if watch.poll() is None:
                    watch.kill()
                    watch.wait()
            name = {"name": "programRuns/order-1"}
            got = call(runner, "brewmesh.runner.v1.ProgramRunner/GetRun", name, key=key)
            rival = grpcurl(
                runner.address,
                "brewmesh.runner.v1.ProgramRunner/GetRun",
                key=admin_key,
                data=json.dumps(name),
            )
    finally:
        machine.stop()
    assert signalled["forwarded"] is True
    assert watch.returncode == 0, watched
    assert '"takeout_ready"' in watched and '"finished"' in watched
    assert got["state"] == "STATE_FINISHED" and got["context"] == {"takeout_ready": True}
    assert rival.returncode == 0  # the admin sees every run, through the runner's own key check
