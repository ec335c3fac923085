"""Identifiers and codes: composite ids, resource names, language/country codes.

Each `check_*` adds a violation (with a message saying what to change) and
returns the parsed value, or None when invalid, so a request reports every
bad field at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from brewmesh.errors import Violations, quote

COMMON_NAMESPACE = "common"

NAMESPACE_RE = re.compile(r"[a-z][a-z0-9-]{1,62}")
ID_COMPONENT_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
LANGUAGE_RE = re.compile(r"[a-z]{2}")
COUNTRY_RE = re.compile(r"[A-Z]{2}")
SNAKE_RE = re.compile(r"[a-z][a-z0-9_]{0,62}")

NAMESPACE_RULE = "2 to 63 lowercase letters, digits or '-', starting with a letter"
ID_COMPONENT_RULE = "1 to 63 lowercase letters, digits, '-' or '_', starting with a letter or digit"
SNAKE_RULE = "lower_snake_case: 1 to 63 lowercase letters, digits or '_', starting with a letter"


@dataclass(frozen=True, order=True)
class CompositeId:
    """`namespace:id_component`, the id of anything a partner creates."""

    namespace: str
    id_component: str

    def __str__(self) -> str:
        return f"{self.namespace}:{self.id_component}"


def check_namespace(v: Violations, field: str, value: str) -> str | None:
    if not value:
        v.add(field, f"is required: the namespace, {NAMESPACE_RULE}, e.g. 'my-coffee-company'")
        return None
    if not NAMESPACE_RE.fullmatch(value):
        v.add(field, f"{quote(value)} is not a valid namespace: use {NAMESPACE_RULE}")
        return None
    return value


def check_id_component(v: Violations, field: str, value: str) -> str | None:
    if not value:
        v.add(field, f"is required: {ID_COMPONENT_RULE}, e.g. 'lungo-customato'")
        return None
    if not ID_COMPONENT_RE.fullmatch(value):
        v.add(field, f"{quote(value)} is not a valid id: use {ID_COMPONENT_RULE}")
        return None
    return value


def check_composite_id(v: Violations, field: str, value: str) -> CompositeId | None:
    namespace, sep, component = value.partition(":")
    if not value or not sep:
        example = "'my-coffee-company:lungo-customato'"
        v.add(field, f"{quote(value)} is not a composite id: use 'namespace:id_component', e.g. {example}")
        return None
    ok_ns = _quiet(check_namespace, namespace)
    ok_id = _quiet(check_id_component, component)
    if not (ok_ns and ok_id):
        v.add(
            field,
            f"{quote(value)} is not a valid id: namespace {NAMESPACE_RULE}; id component {ID_COMPONENT_RULE}",
        )
        return None
    return CompositeId(namespace, component)


def check_resource_name(v: Violations, field: str, value: str, collection: str) -> CompositeId | None:
    """Parse `{collection}/{namespace}:{id_component}`, e.g. `recipes/a:b`."""
    prefix = f"{collection}/"
    if not value:
        v.add(field, f"is required: a name like '{prefix}my-coffee-company:lungo-customato'")
        return None
    if not value.startswith(prefix):
        v.add(field, f"{quote(value)} is not a {collection} name: it starts with '{prefix}'")
        return None
    return check_composite_id(v, field, value.removeprefix(prefix))


def check_language(v: Violations, field: str, value: str) -> str | None:
    if not value:
        v.add(field, "is required: an ISO 639-1 language code, two lowercase letters, e.g. 'en'")
        return None
    if not LANGUAGE_RE.fullmatch(value):
        v.add(
            field, f"{quote(value)} is not an ISO 639-1 language code: use two lowercase letters, e.g. 'en'"
        )
        return None
    return value


def check_country(v: Violations, field: str, value: str) -> str | None:
    """An optional country code: '' is valid (no country)."""
    if value and not COUNTRY_RE.fullmatch(value):
        v.add(
            field,
            f"{quote(value)} is not an ISO 3166-1 alpha-2 country code: use two uppercase letters, e.g. 'US'",
        )
        return None
    return value


def check_snake(v: Violations, field: str, value: str, what: str) -> str | None:
    if not SNAKE_RE.fullmatch(value):
        v.add(field, f"{quote(value)} is not a valid {what}: use {SNAKE_RULE}")
        return None
    return value


def locale_tag(language_code: str, country_code: str) -> str:
    """`en` or `en-US`: the last segment of l10n and formatter resource names."""
    return f"{language_code}-{country_code}" if country_code else language_code


def _quiet(check: object, value: str) -> bool:
    scratch = Violations()
    return check(scratch, "", value) is not None  # type: ignore[operator]
