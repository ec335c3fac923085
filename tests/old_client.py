"""A client built from the protos of an older brewmesh: the acceptance scenario, as it was written then.

Run by tests/test_old_clients.py in a process whose `brewmesh` package holds
nothing but stubs generated from the protos at the commit named in
`.ci/proto-baseline`: it imports no current brewmesh code. It creates a
partner, builds the lungo-customato recipe, searches it, registers a vending
machine, runs the recipe with a takeout signal, watches the run to its end,
and prints what it saw as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import grpc
from google.protobuf import json_format

from brewmesh.partners.v1 import partners_pb2, partners_pb2_grpc
from brewmesh.recipes.v1 import recipes_pb2, recipes_pb2_grpc
from brewmesh.runner.v1 import program_runner_pb2, program_runner_pb2_grpc

NS = "old-client-coffee"
RECIPE = f"{NS}:lungo-customato"
MACHINE = f"partners/{NS}/coffeeMachines/vending-1"
TIMEOUT = 30.0

BUILD = {
    "recipe": {
        "namespace": NS,
        "idComponent": "lungo-customato",
        "recipe": {
            "productProperties": {"defaultVolumeMl": 300},
            "executionProperties": {"programId": "lungo", "parameters": {"strength": 4}},
        },
    },
    "l10n": [{"l10n": {"languageCode": "en", "values": {"search_title": "Lungo Customato"}}}],
    "layouts": [
        {
            "layoutId": f"{NS}:search",
            "layout": {
                "kind": "recipe_search",
                "properties": [{"field": "search_title", "view": {"maxLength": 30}}],
                "requiredFields": ["search_title"],
            },
        }
    ],
    "volumeFormatters": [
        {"volumeFormatter": {"languageCode": "en", "template": "{volume} ml"}},
        {
            "volumeFormatter": {
                "languageCode": "en",
                "countryCode": "US",
                "template": "{volume} fl oz",
                "transform": {"operation": "OPERATION_DIVIDE", "operand": 30},
            }
        },
    ],
}


def bearer(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


def scenario(address: str, admin_key: str, machine_address: str) -> dict[str, Any]:
    with grpc.insecure_channel(address) as channel:
        partners = partners_pb2_grpc.PartnerServiceStub(channel)
        recipes = recipes_pb2_grpc.RecipeServiceStub(channel)
        runner = program_runner_pb2_grpc.ProgramRunnerStub(channel)
        created = partners.CreatePartner(
            partners_pb2.CreatePartnerRequest(
                namespace=NS, partner=partners_pb2.Partner(display_name="Old Client Coffee")
            ),
            metadata=bearer(admin_key),
            timeout=TIMEOUT,
        )
        key = bearer(created.api_key)
        build = json_format.ParseDict(BUILD, recipes_pb2.BuildRecipeRequest())
        built = recipes.BuildRecipe(build, metadata=key, timeout=TIMEOUT)
        search = recipes_pb2.SearchRecipesRequest(
            language_code="en", country_code="US", layout=f"layouts/{NS}:search"
        )
        found = recipes.SearchRecipes(search, metadata=key, timeout=TIMEOUT)
        fleet = json_format.ParseDict(
            {
                "parent": f"partners/{NS}",
                "coffeeMachines": [
                    {
                        "name": MACHINE,
                        "apiType": "vending",
                        "programApi": {"endpoint": machine_address},
                        "handledEvents": ["takeout_requested", "order_canceled"],
                    }
                ],
            },
            partners_pb2.PutCoffeeMachinesRequest(),
        )
        partners.PutCoffeeMachines(fleet, metadata=key, timeout=TIMEOUT)
        run = program_runner_pb2.RunRequest(run_id="order-1", machine=MACHINE, recipe=f"recipes/{RECIPE}")
        started = runner.Run(run, metadata=key, timeout=TIMEOUT)
        watch = runner.Watch(program_runner_pb2.WatchRequest(run=started.name), metadata=key, timeout=TIMEOUT)
        signal = program_runner_pb2.SignalRequest(run=started.name, event="takeout_requested")
        signalled = runner.Signal(signal, metadata=key, timeout=TIMEOUT)
        events = [json_format.MessageToDict(event) for event in watch]  # ends with the run
        get = program_runner_pb2.GetRunRequest(name=started.name)
        got = runner.GetRun(get, metadata=key, timeout=TIMEOUT)
    return {
        "recipe": built.recipe.name,
        "search": [json_format.MessageToDict(result) for result in found.results],
        "started_volume_ml": started.volume_ml,
        "forwarded": signalled.forwarded,
        "watched": events,
        "run": json_format.MessageToDict(got),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--address", required=True)
    parser.add_argument("--admin-key", required=True)
    parser.add_argument("--machine", required=True, help="the vending machine's address")
    args = parser.parse_args()
    try:
        report = scenario(args.address, args.admin_key, args.machine)
    except grpc.RpcError as error:
        sys.exit(f"{error.code()}: {error.details()}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
