"""Volume formatters: how a volume in millilitres is shown in a locale.

A formatter belongs to a language, or to a language in one country; a reader
gets the country's formatter, else the language's. Formatters are shared by
every partner: anyone may add one where there is none, only its creator or
the admin may replace or delete it.
"""

from __future__ import annotations

import decimal
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum

from brewmesh.auth import Principal
from brewmesh.errors import NotFound, PermissionDenied, Violations, quote
from brewmesh.services.recipes.changes import Announcer
from brewmesh.services.recipes.locales import Locale, check_locale, parse_tag
from brewmesh.storage import Row, Tx

COLLECTION = "volumeFormatters"
PLACEHOLDER = "{volume}"
MAX_TEMPLATE_CHARS = 100
MAX_DECIMALS = 6
# Enough digits for any int32 volume times any finite double, to 6 decimals.
_ARITHMETIC = decimal.Context(prec=400, rounding=ROUND_HALF_UP)


class Operation(StrEnum):
    DIVIDE = "divide"
    MULTIPLY = "multiply"


@dataclass(frozen=True)
class Transform:
    """Shown number = volume_ml divided or multiplied by `operand`, rounded half away from zero.

    `operation` None: one the client sent that we do not know (invalid).
    """

    operation: Operation | None
    operand: float
    decimals: int = 0


@dataclass(frozen=True)
class FormatterSpec:
    """Everything a client defines about a formatter."""

    locale: Locale
    template: str
    transform: Transform | None = None


@dataclass(frozen=True)
class FormatterInput:
    """A formatter as a request carries it (not yet validated)."""

    language: str
    country: str
    template: str
    transform: Transform | None = None


@dataclass(frozen=True)
class VolumeFormatter:
    spec: FormatterSpec
    creator: str
    update_time: datetime

    @property
    def name(self) -> str:
        return formatter_name(self.spec.locale)


def formatter_name(locale: Locale) -> str:
    return f"{COLLECTION}/{locale.tag}"


# -- formatting --------------------------------------------------------------------


def format_volume(spec: FormatterSpec, volume_ml: int) -> str:
    return spec.template.replace(PLACEHOLDER, shown_number(spec.transform, volume_ml))


def shown_number(transform: Transform | None, volume_ml: int) -> str:
    if transform is None:
        return str(volume_ml)
    volume, operand = Decimal(volume_ml), Decimal(repr(transform.operand))
    if transform.operation is Operation.MULTIPLY:
        exact = _ARITHMETIC.multiply(volume, operand)
    else:
        exact = _ARITHMETIC.divide(volume, operand)
    rounded = exact.quantize(Decimal(1).scaleb(-transform.decimals), context=_ARITHMETIC)
    return f"{rounded:f}"


# -- validation ----------------------------------------------------------------------


def check_input(v: Violations, given: FormatterInput) -> FormatterSpec | None:
    """Fields of a VolumeFormatter message (`language_code`, `template`, `transform.*`)."""
    locale = check_locale(v, given.language, given.country)
    _check_template(v, given.template)
    if given.transform is not None:
        with v.under("transform"):
            _check_transform(v, given.transform)
    if locale is None:
        return None
    return FormatterSpec(locale, given.template, given.transform)


def _check_template(v: Violations, template: str) -> None:
    example = "e.g. '{volume} ml'"
    if not template:
        v.add("template", f"is required: the text with {PLACEHOLDER} where the number goes, {example}")
    elif len(template) > MAX_TEMPLATE_CHARS:
        v.add("template", f"is {len(template)} characters: use at most {MAX_TEMPLATE_CHARS}")
    elif template.count(PLACEHOLDER) != 1:
        found = "does not contain" if PLACEHOLDER not in template else "contains more than once"
        v.add(
            "template",
            f"{quote(template)} {found} {PLACEHOLDER}: put it exactly once where the number goes, {example}",
        )


def _check_transform(v: Violations, transform: Transform) -> None:
    if transform.operation is None:
        v.add(
            "operation", "is not set: choose OPERATION_DIVIDE or OPERATION_MULTIPLY, or leave transform unset"
        )
    if not math.isfinite(transform.operand) or transform.operand <= 0:
        what = "a divisor" if transform.operation is Operation.DIVIDE else "an operand"
        v.add("operand", f"is {transform.operand}: {what} must be a number greater than 0, e.g. 30")
    if not 0 <= transform.decimals <= MAX_DECIMALS:
        v.add("decimals", f"is {transform.decimals}: use 0 to {MAX_DECIMALS} digits after the decimal point")


def parse_formatter_name(v: Violations, field_path: str, name: str) -> Locale | None:
    """`volumeFormatters/en` or `volumeFormatters/en-US`."""
    prefix = f"{COLLECTION}/"
    if not name.startswith(prefix):
        v.add(
            field_path,
            f"{quote(name)} is not a volume formatter name: use one like '{prefix}en' or '{prefix}en-US'",
        )
        return None
    return parse_tag(v, field_path, name.removeprefix(prefix))


def check_volume(v: Violations, field_path: str, volume_ml: int) -> None:
    if volume_ml < 0:
        v.add(field_path, f"is {volume_ml} ml: a volume is 0 or more millilitres")


# -- repository --------------------------------------------------------------------------


def put(tx: Tx, spec: FormatterSpec, principal: Principal, announce: Announcer) -> VolumeFormatter:
    """Create or replace the locale's formatter; an identical one is reused as is, whoever made it."""
    existing = find(tx, spec.locale)
    if existing is not None and existing.spec == spec:
        return existing
    if existing is not None:
        _check_owner(existing, principal, "change")
    creator = existing.creator if existing is not None else str(principal.namespace)
    formatter = VolumeFormatter(spec, creator, datetime.now(UTC))
    tx.execute(
        "INSERT INTO volume_formatters"
        " (tag, language, country, template, operation, operand, decimals, creator, update_time)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tag) DO UPDATE SET"
        " template = excluded.template, operation = excluded.operation, operand = excluded.operand,"
        " decimals = excluded.decimals, creator = excluded.creator, update_time = excluded.update_time",
        _columns(formatter),
    )
    announce.formatter_put(tx, formatter)
    return formatter


def delete(tx: Tx, locale: Locale, principal: Principal, announce: Announcer) -> None:
    formatter = get(tx, locale)
    _check_owner(formatter, principal, "delete")
    tx.execute("DELETE FROM volume_formatters WHERE tag = ?", (locale.tag,))
    announce.formatter_deleted(tx, formatter.name)


def find(tx: Tx, locale: Locale) -> VolumeFormatter | None:
    row = tx.fetchone("SELECT * FROM volume_formatters WHERE tag = ?", (locale.tag,))
    return _formatter(row) if row else None


def get(tx: Tx, locale: Locale) -> VolumeFormatter:
    formatter = find(tx, locale)
    if formatter is None:
        raise NotFound(f"volume formatter '{formatter_name(locale)}' does not exist")
    return formatter


def missing_message(locale: Locale) -> str:
    return f"no volume formatter for {locale.describe_fallback()}: add one with PutVolumeFormatter"


def list_page(tx: Tx, language: str, after: str, limit: int) -> list[VolumeFormatter]:
    if language:
        rows = tx.fetchall(
            "SELECT * FROM volume_formatters WHERE language = ? AND tag > ? ORDER BY tag LIMIT ?",
            (language, after, limit),
        )
    else:
        rows = tx.fetchall(
            "SELECT * FROM volume_formatters WHERE tag > ? ORDER BY tag LIMIT ?", (after, limit)
        )
    return [_formatter(r) for r in rows]


def list_all(tx: Tx) -> list[VolumeFormatter]:
    return [_formatter(r) for r in tx.fetchall("SELECT * FROM volume_formatters ORDER BY tag")]


def _check_owner(formatter: VolumeFormatter, principal: Principal, action: str) -> None:
    if principal.is_admin or principal.namespace == formatter.creator:
        return
    raise PermissionDenied(
        f"volume formatter '{formatter.name}' was created by '{formatter.creator}': only it or the platform"
        f" admin may {action} it, and you are {principal.describe()}"
    )


def _columns(formatter: VolumeFormatter) -> tuple[object, ...]:
    spec, transform = formatter.spec, formatter.spec.transform
    return (
        spec.locale.tag,
        spec.locale.language,
        spec.locale.country,
        spec.template,
        transform.operation if transform else None,
        transform.operand if transform else None,
        transform.decimals if transform else None,
        formatter.creator,
        formatter.update_time.isoformat(),
    )


def _formatter(row: Row) -> VolumeFormatter:
    transform = None
    if row["operation"] is not None:
        transform = Transform(Operation(row["operation"]), row["operand"], row["decimals"])
    spec = FormatterSpec(Locale(row["language"], row["country"]), row["template"], transform)
    return VolumeFormatter(spec, row["creator"], datetime.fromisoformat(row["update_time"]))
