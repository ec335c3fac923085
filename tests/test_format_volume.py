"""Volume formatters: the fallback from country to language, rounding, and who may change them."""

from __future__ import annotations

import math
from fractions import Fraction

import grpc
from hypothesis import given
from hypothesis import strategies as st

from brewmesh.client import MeshClient
from brewmesh.mesh import Mesh
from brewmesh.recipes.v1 import formatters_pb2 as fpb
from brewmesh.services.recipes.formatters import FormatterSpec, Operation, Transform, format_volume
from brewmesh.services.recipes.locales import Locale
from tests.conftest import PartnerClient, embedded_only
from tests.test_recipes_support import FORMATTERS_API, event_types, fails, formatter, invalid, put_formatter


async def put_us_and_en(client: MeshClient) -> None:
    await client.formatters.PutVolumeFormatter(put_formatter(formatter("en", template="{volume} ml")))
    await client.formatters.PutVolumeFormatter(
        put_formatter(formatter("en", "US", template="{volume} fl oz", divide_by=30))
    )


async def format_text(client: MeshClient, volume_ml: int, language: str, country: str = "") -> str:
    request = fpb.FormatVolumeRequest(volume_ml=volume_ml, language_code=language, country_code=country)
    return str((await client.formatters.FormatVolume(request)).text)


async def test_country_formatter_else_language_formatter(
    partner: PartnerClient, anonymous: MeshClient
) -> None:
    await put_us_and_en(partner.client)
    us = await anonymous.formatters.FormatVolume(
        fpb.FormatVolumeRequest(volume_ml=300, language_code="en", country_code="US")
    )
    assert (us.text, us.formatter) == ("10 fl oz", "volumeFormatters/en-US")
    gb = await anonymous.formatters.FormatVolume(
        fpb.FormatVolumeRequest(volume_ml=300, language_code="en", country_code="GB")
    )
    assert (gb.text, gb.formatter) == ("300 ml", "volumeFormatters/en")
    assert await format_text(anonymous, 300, "en") == "300 ml"
    assert await format_text(anonymous, 0, "en", "US") == "0 fl oz"


async def test_no_formatter_is_not_found_naming_what_is_missing(partner: PartnerClient) -> None:
    await put_us_and_en(partner.client)
    request = fpb.FormatVolumeRequest(volume_ml=300, language_code="fr", country_code="FR")
    error = await fails(partner.client.formatters.FormatVolume(request), grpc.StatusCode.NOT_FOUND)
    assert error.details() == "no volume formatter for 'fr-FR' or 'fr': add one with PutVolumeFormatter"
    request = fpb.FormatVolumeRequest(volume_ml=300, language_code="de")
    error = await fails(partner.client.formatters.FormatVolume(request), grpc.StatusCode.NOT_FOUND)
    assert "'de'" in (error.details() or "")


async def test_decimals_round_half_away_from_zero(admin: MeshClient) -> None:
    await admin.formatters.PutVolumeFormatter(
        put_formatter(formatter("en", "US", template="{volume} fl oz", divide_by=29.5735, decimals=1))
    )
    await admin.formatters.PutVolumeFormatter(
        put_formatter(formatter("en", "GB", template="{volume} cl", divide_by=10, decimals=0))
    )
    await admin.formatters.PutVolumeFormatter(
        put_formatter(formatter("nl", template="{volume} l", divide_by=1000, decimals=2))
    )
    assert await format_text(admin, 300, "en", "US") == "10.1 fl oz"
    assert await format_text(admin, 45, "en", "GB") == "5 cl"  # 4.5 rounds up
    assert await format_text(admin, 44, "en", "GB") == "4 cl"
    assert await format_text(admin, 5, "nl") == "0.01 l"  # 0.005 rounds up
    assert await format_text(admin, 1500, "nl") == "1.50 l"


async def test_put_get_and_replace_a_formatter(partner: PartnerClient, anonymous: MeshClient) -> None:
    put = await partner.client.formatters.PutVolumeFormatter(
        put_formatter(formatter("en", "US", template="{volume} fl oz", divide_by=30))
    )
    assert put.name == "volumeFormatters/en-US"
    assert put.creator == "my-coffee-company"
    assert put.transform.operation == fpb.ValueTransform.OPERATION_DIVIDE and put.transform.operand == 30
    fetched = await anonymous.formatters.GetVolumeFormatter(fpb.GetVolumeFormatterRequest(name=put.name))
    assert fetched == put

    replaced = await partner.client.formatters.PutVolumeFormatter(
        put_formatter(formatter("en", "US", template="{volume} oz", divide_by=29.57, decimals=1))
    )
    assert replaced.template == "{volume} oz" and replaced.creator == "my-coffee-company"
    assert await format_text(anonymous, 300, "en", "US") == "10.1 oz"


async def test_only_the_creator_or_the_admin_may_change_a_formatter(
    partner: PartnerClient, other_partner: PartnerClient, admin: MeshClient
) -> None:
    await partner.client.formatters.PutVolumeFormatter(put_formatter(formatter("fr", template="{volume} ml")))
    rival = other_partner.client.formatters
    error = await fails(
        rival.PutVolumeFormatter(put_formatter(formatter("fr", template="{volume} millilitres"))),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert "my-coffee-company" in (error.details() or "")
    await fails(
        rival.DeleteVolumeFormatter(fpb.DeleteVolumeFormatterRequest(name="volumeFormatters/fr")),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    # Asking for exactly what exists changes nothing, so anyone may.
    same = await rival.PutVolumeFormatter(put_formatter(formatter("fr", template="{volume} ml")))
    assert same.creator == "my-coffee-company"
    # Any partner opens a region that has no formatter yet.
    opened = await rival.PutVolumeFormatter(put_formatter(formatter("fr", "CA", template="{volume} mL")))
    assert opened.creator == "rival-roasters"

    by_admin = await admin.formatters.PutVolumeFormatter(
        put_formatter(formatter("fr", template="{volume} mL"))
    )
    assert by_admin.creator == "my-coffee-company"  # the admin's change keeps the creator
    await admin.formatters.DeleteVolumeFormatter(
        fpb.DeleteVolumeFormatterRequest(name="volumeFormatters/fr-CA")
    )
    await partner.client.formatters.DeleteVolumeFormatter(
        fpb.DeleteVolumeFormatterRequest(name="volumeFormatters/fr")
    )
    listed = await admin.formatters.ListVolumeFormatters(fpb.ListVolumeFormattersRequest())
    assert list(listed.volume_formatters) == []


async def test_writing_a_formatter_needs_a_key(anonymous: MeshClient) -> None:
    await fails(
        anonymous.formatters.PutVolumeFormatter(put_formatter(formatter("en"))),
        grpc.StatusCode.UNAUTHENTICATED,
    )


async def test_formatting_follows_every_change_at_once(partner: PartnerClient, anonymous: MeshClient) -> None:
    await partner.client.formatters.PutVolumeFormatter(put_formatter(formatter("it", template="{volume} ml")))
    assert await format_text(anonymous, 250, "it", "IT") == "250 ml"
    await partner.client.formatters.PutVolumeFormatter(
        put_formatter(formatter("it", "IT", template="{volume} cl", divide_by=10))
    )
    assert await format_text(anonymous, 250, "it", "IT") == "25 cl"
    await partner.client.formatters.DeleteVolumeFormatter(
        fpb.DeleteVolumeFormatterRequest(name="volumeFormatters/it-IT")
    )
    assert await format_text(anonymous, 250, "it", "IT") == "250 ml"
    await partner.client.formatters.DeleteVolumeFormatter(
        fpb.DeleteVolumeFormatterRequest(name="volumeFormatters/it")
    )
    await fails(
        anonymous.formatters.FormatVolume(fpb.FormatVolumeRequest(volume_ml=1, language_code="it")),
        grpc.StatusCode.NOT_FOUND,
    )


@embedded_only
async def test_put_and_delete_fire_events_and_a_reused_put_fires_none(
    partner: PartnerClient, mesh: Mesh
) -> None:
    await partner.client.formatters.PutVolumeFormatter(put_formatter(formatter("en")))
    await partner.client.formatters.PutVolumeFormatter(put_formatter(formatter("en")))
    await partner.client.formatters.DeleteVolumeFormatter(
        fpb.DeleteVolumeFormatterRequest(name="volumeFormatters/en")
    )
    assert await event_types(mesh, FORMATTERS_API) == ["volume_formatter_put", "volume_formatter_deleted"]


async def test_get_or_delete_a_missing_formatter_is_not_found(admin: MeshClient) -> None:
    name = "volumeFormatters/pt-BR"
    await fails(
        admin.formatters.GetVolumeFormatter(fpb.GetVolumeFormatterRequest(name=name)),
        grpc.StatusCode.NOT_FOUND,
    )
    await fails(
        admin.formatters.DeleteVolumeFormatter(fpb.DeleteVolumeFormatterRequest(name=name)),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_list_formatters_by_language_in_pages(admin: MeshClient) -> None:
    for country in ("", "AU", "GB", "US", "CA"):
        await admin.formatters.PutVolumeFormatter(put_formatter(formatter("en", country)))
    await admin.formatters.PutVolumeFormatter(put_formatter(formatter("de")))
    names: list[str] = []
    token = ""
    while True:
        page = await admin.formatters.ListVolumeFormatters(
            fpb.ListVolumeFormattersRequest(language_code="en", page_size=2, page_token=token)
        )
        names += [f.name for f in page.volume_formatters]
        token = page.next_page_token
        if not token:
            break
    assert names == [f"volumeFormatters/{tag}" for tag in ("en", "en-AU", "en-CA", "en-GB", "en-US")]


async def test_a_formatter_reports_every_violation(admin: MeshClient) -> None:
    bad = fpb.VolumeFormatter(
        language_code="EN",
        country_code="usa",
        template="ml",
        transform=fpb.ValueTransform(operand=0, decimals=9),
    )
    fields = await invalid(admin.formatters.PutVolumeFormatter(put_formatter(bad)))
    assert set(fields) == {
        "volume_formatter.language_code",
        "volume_formatter.country_code",
        "volume_formatter.template",
        "volume_formatter.transform.operation",
        "volume_formatter.transform.operand",
        "volume_formatter.transform.decimals",
    }
    assert "{volume}" in fields["volume_formatter.template"]


async def test_a_formatter_name_must_be_a_locale(anonymous: MeshClient) -> None:
    for name in (
        "volumeFormatters/english",
        "formatters/en",
        "volumeFormatters/en-",
        "volumeFormatters/en-us",
    ):
        fields = await invalid(
            anonymous.formatters.GetVolumeFormatter(fpb.GetVolumeFormatterRequest(name=name))
        )
        assert list(fields) == ["name"], name


# -- the arithmetic, for any input ----------------------------------------------------------------

volumes = st.integers(min_value=0, max_value=2**31 - 1)
operands = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False)
decimals = st.integers(min_value=0, max_value=6)


def half_away_from_zero(value: Fraction, digits: int) -> Fraction:
    scaled = value * 10**digits
    return Fraction(math.floor(scaled + Fraction(1, 2)), 10**digits)


def spec(transform: Transform | None) -> FormatterSpec:
    return FormatterSpec(Locale("en"), "≈ {volume} units", transform)


@given(volumes)
def test_without_a_transform_the_volume_is_shown_as_is(volume: int) -> None:
    assert format_volume(spec(None), volume) == f"≈ {volume} units"


@given(volumes, operands, decimals, st.sampled_from(Operation))
def test_the_shown_number_is_the_exact_result_rounded(
    volume: int, operand: float, digits: int, operation: Operation
) -> None:
    text = format_volume(spec(Transform(operation, operand, digits)), volume)
    assert text.startswith("≈ ") and text.endswith(" units")
    shown = text.removeprefix("≈ ").removesuffix(" units")
    whole, _, fraction = shown.partition(".")
    assert len(fraction) == digits and whole.isdigit()
    exact_operand = Fraction(repr(operand))
    exact = Fraction(volume) / exact_operand if operation is Operation.DIVIDE else volume * exact_operand
    assert Fraction(shown) == half_away_from_zero(exact, digits)
