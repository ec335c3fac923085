"""The platform's first day, driven with the real grpcurl against `brewmesh up`.

The admin creates a partner; the partner builds a recipe in one BuildRecipe;
SearchRecipes shows it localised per country; another partner cannot write
into its namespace; bad input lists every violation; a restart loses nothing;
a live EventBus subscriber saw the recipe being created.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.conftest import BIN, MeshProcess, grpcurl, start_mesh_process

NS = "my-coffee-company"
RECIPE = f"{NS}:lungo-customato"

BUILD = {
    "recipe": {
        "namespace": NS,
        "idComponent": "lungo-customato",
        "recipe": {
            "productProperties": {"defaultVolumeMl": 300},
            "executionProperties": {"programId": "lungo", "parameters": {"strength": 4}},
        },
    },
    "l10n": [
        {
            "l10n": {
                "languageCode": "en",
                "values": {
                    "search_title": "Lungo Customato",
                    "search_description": "A long, smooth coffee, made just the way you like it.",
                },
            }
        }
    ],
    "layouts": [
        {
            "layoutId": f"{NS}:search",
            "layout": {
                "kind": "recipe_search",
                "properties": [
                    {"field": "search_title", "view": {"minLength": 3, "maxLength": 30}},
                    {
                        "field": "search_description",
                        "view": {"maxLength": 24, "overflow": "OVERFLOW_ELLIPSIS"},
                    },
                ],
                "requiredFields": ["search_title", "search_description"],
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


def call(
    mesh: MeshProcess, method: str, data: Mapping[str, object], key: str | None = None
) -> dict[str, Any]:
    done = grpcurl(mesh.address, method, key=key, data=json.dumps(data))
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def search(mesh: MeshProcess, country: str) -> list[dict[str, object]]:
    found = call(
        mesh,
        "brewmesh.recipes.v1.RecipeService/SearchRecipes",
        {"languageCode": "en", "countryCode": country, "layout": f"layouts/{NS}:search"},
    )
    results: list[dict[str, object]] = found["results"]
    return results


def test_first_day_of_the_platform(tmp_path: Path) -> None:
    data = tmp_path / "data"
    mesh = start_mesh_process(data)
    seen_file = (tmp_path / "subscriber.out").open("w")
    subscriber = subprocess.Popen(
        [str(BIN / "grpcurl"), "-plaintext", "-H", f"authorization: Bearer {mesh.admin_key}",
         "-d", json.dumps({"api": "brewmesh.recipes.v1.RecipeService", "eventTypes": ["recipe_created"]}),
         mesh.address, "brewmesh.bus.v1.EventBus/Subscribe"],
        stdout=seen_file, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        partner = call(
            mesh,
            "brewmesh.partners.v1.PartnerService/CreatePartner",
            {"namespace": NS, "partner": {"displayName": "My Coffee Company"}},
            key=mesh.admin_key,
        )
        key = str(partner["apiKey"])
        built = call(mesh, "brewmesh.recipes.v1.RecipeService/BuildRecipe", BUILD, key=key)
        assert built["recipe"]["name"] == f"recipes/{RECIPE}"

        [us] = search(mesh, "US")
        fields = {f["field"]: f for f in us["fields"]}  # type: ignore[attr-defined]
        assert fields["search_title"]["text"] == "Lungo Customato"
        assert fields["search_description"]["text"] == "A long, smooth coffee, …"  # 24 characters
        assert fields["search_description"]["truncated"] is True
        assert us["defaultVolume"] == "10 fl oz"
        [gb] = search(mesh, "GB")
        assert gb["defaultVolume"] == "300 ml"

        rival = call(
            mesh,
            "brewmesh.partners.v1.PartnerService/CreatePartner",
            {"namespace": "rival-roasters", "partner": {"displayName": "Rival Roasters"}},
            key=mesh.admin_key,
        )
        intrusion = grpcurl(
            mesh.address,
            "brewmesh.recipes.v1.RecipeService/CreateRecipe",
            key=str(rival["apiKey"]),
            data=json.dumps({**BUILD["recipe"], "idComponent": "fake-lungo"}),  # type: ignore[dict-item]
        )
        assert intrusion.returncode != 0 and "Code: PermissionDenied" in intrusion.stderr

        invalid = grpcurl(
            mesh.address,
            "brewmesh.recipes.v1.RecipeService/CreateRecipe",
            key=key,
            data=json.dumps(
                {
                    "namespace": "My Coffee!",
                    "idComponent": "lungo customato",
                    "recipe": {"productProperties": {"defaultVolumeMl": -1}},
                }
            ),
        )
        assert "Code: InvalidArgument" in invalid.stderr
        for field in (
            '"field":"namespace"',
            '"field":"id_component"',
            '"field":"recipe.product_properties.default_volume_ml"',
            '"field":"recipe.execution_properties.program_id"',
        ):
            assert field in invalid.stderr.replace(" ", ""), invalid.stderr

        deadline = time.monotonic() + 10
        while (
            "recipe_created" not in (tmp_path / "subscriber.out").read_text() and time.monotonic() < deadline
        ):
            time.sleep(0.2)
    finally:
        subscriber.terminate()
        subscriber.wait(timeout=10)
        seen_file.close()
        mesh.stop()
    seen_out = (tmp_path / "subscriber.out").read_text()
    assert "recipe_created" in seen_out and f"recipes/{RECIPE}" in seen_out

    restarted = start_mesh_process(data, port=mesh.port)
    try:
        [again] = search(restarted, "US")
        assert again["defaultVolume"] == "10 fl oz"
        got = call(restarted, "brewmesh.recipes.v1.RecipeService/GetRecipe", {"name": f"recipes/{RECIPE}"})
        assert got["productProperties"] == {"defaultVolumeMl": 300}
        assert call(restarted, "brewmesh.partners.v1.PartnerService/GetPartner", {"name": f"partners/{NS}"})
    finally:
        restarted.stop()
