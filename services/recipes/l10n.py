"""Localised values: a recipe's text for the fields of layouts, per locale.

Values are put per language (`en`) or per language in a country (`en-US`);
a reader in a country sees the country's values over the language's, field
by field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from brewmesh.counts import check_count
from brewmesh.errors import NotFound, Violations, quote
from brewmesh.names import SNAKE_RE, SNAKE_RULE, CompositeId
from brewmesh.services.recipes import recipes
from brewmesh.services.recipes.changes import Announcer
from brewmesh.services.recipes.locales import Locale, check_locale, parse_tag
from brewmesh.services.recipes.recipes import recipe_name
from brewmesh.storage import Row, Tx

MAX_VALUE_CHARS = 1000
MAX_VALUES = 100
MAX_KEY_IN_PATH = 100  # a longer key is invalid anyway; its path need not hold all of it
SEGMENT = "/l10n/"

Values = Mapping[str, str]


@dataclass(frozen=True)
class L10n:
    recipe_id: CompositeId
    locale: Locale
    values: Values
    update_time: datetime

    @property
    def name(self) -> str:
        return l10n_name(self.recipe_id, self.locale)


@dataclass(frozen=True)
class L10nInput:
    """A PutRecipeL10n request as the domain sees it (not yet validated)."""

    recipe: str
    language: str
    country: str
    values: Values


def l10n_name(recipe_id: CompositeId, locale: Locale) -> str:
    return f"{recipe_name(recipe_id)}{SEGMENT}{locale.tag}"


def merge(language_values: Values, country_values: Values) -> dict[str, str]:
    """What a reader in the country sees: country values override language values."""
    return {**language_values, **country_values}


# -- validation ----------------------------------------------------------------


def check_put(v: Violations, put: L10nInput) -> tuple[CompositeId | None, Locale | None]:
    """Fields `recipe` and `l10n.*` of PutRecipeL10nRequest."""
    recipe_id = recipes.parse_recipe_name(v, "recipe", put.recipe)
    return recipe_id, check_entry(v, put)


def check_entry(v: Violations, put: L10nInput) -> Locale | None:
    """Fields `l10n.*`: the locale and the values."""
    with v.under("l10n"):
        locale = check_locale(v, put.language, put.country)
        check_values(v, put.values)
    return locale


def check_values(v: Violations, values: Values) -> None:
    if not values:
        v.add("values", "is empty: give at least one field's text, e.g. 'search_title'")
    if not check_count(v, "values", values, MAX_VALUES, "fields"):
        return
    if v.full:  # a build may hold thousands of values: count what is wrong, describe nothing
        v.count(sum(SNAKE_RE.fullmatch(k) is None for k in values))
        v.count(sum(not 0 < len(t) <= MAX_VALUE_CHARS for t in values.values()))
        return
    for key, text in values.items():
        valid_key = SNAKE_RE.fullmatch(key) is not None
        valid_text = 0 < len(text) <= MAX_VALUE_CHARS
        if valid_key and valid_text:
            continue
        if v.full:  # a build may hold thousands of values: count the rest, do not describe them
            v.count(int(not valid_key) + int(not valid_text))
            continue
        path = _value_path(key, valid_key)
        if not valid_key:
            v.add(path, f"{quote(key)} is not a field name: use {SNAKE_RULE}, as the layout names it")
        if not text:
            v.add(path, "is empty: give the text (1 to 1000 characters) or leave the field out")
        elif not valid_text:
            v.add(path, f"is {len(text)} characters: use at most {MAX_VALUE_CHARS}")


def _value_path(key: str, valid_key: bool) -> str:
    """`values["search_title"]`: the key quoted as JSON (a valid one needs no escapes)."""
    quoted = f'"{key}"' if valid_key else json.dumps(key[:MAX_KEY_IN_PATH], ensure_ascii=False)
    return f"values[{quoted}]"


def parse_l10n_name(v: Violations, field_path: str, name: str) -> tuple[CompositeId, Locale] | None:
    """`recipes/{namespace}:{id_component}/l10n/{language}[-{country}]`."""
    recipe_part, sep, tag = name.partition(SEGMENT)
    if not sep:
        example = "'recipes/my-coffee-company:lungo-customato/l10n/en-US'"
        v.add(field_path, f"{quote(name)} is not a recipe l10n name: use one like {example}")
        return None
    recipe_id = recipes.parse_recipe_name(v, field_path, recipe_part)
    locale = parse_tag(v, field_path, tag)
    if recipe_id is None or locale is None:
        return None
    return recipe_id, locale


# -- repository ------------------------------------------------------------------


def put(tx: Tx, recipe_id: CompositeId, locale: Locale, values: Values, announce: Announcer) -> L10n:
    """Replace the recipe's values for the locale (the recipe must exist)."""
    recipes.get(tx, recipe_id)
    l10n = L10n(recipe_id, locale, dict(values), datetime.now(UTC))
    tx.execute(
        "INSERT INTO recipe_l10n (recipe_id, language, country, field_values, update_time)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (recipe_id, language, country) DO UPDATE SET"
        " field_values = excluded.field_values, update_time = excluded.update_time",
        (str(recipe_id), locale.language, locale.country, _dump(values), l10n.update_time.isoformat()),
    )
    announce.l10n_put(tx, l10n)
    return l10n


def get(tx: Tx, recipe_id: CompositeId, locale: Locale) -> L10n:
    row = tx.fetchone(
        "SELECT * FROM recipe_l10n WHERE recipe_id = ? AND language = ? AND country = ?",
        (str(recipe_id), locale.language, locale.country),
    )
    if row is None:
        recipes.get(tx, recipe_id)
        raise NotFound(f"recipe '{recipe_name(recipe_id)}' has no values for '{locale.tag}': put them first")
    return _l10n(row)


def for_reader(tx: Tx, recipe_id: CompositeId, locale: Locale) -> dict[str, str]:
    """The values a reader in `locale` sees (country over language)."""
    rows = tx.fetchall(
        "SELECT country, field_values FROM recipe_l10n"
        " WHERE recipe_id = ? AND language = ? AND country IN ('', ?)",
        (str(recipe_id), locale.language, locale.country),
    )
    return merged_rows(rows)


def for_readers_in_range(tx: Tx, locale: Locale, after: str, last: str) -> dict[str, dict[str, str]]:
    """Per recipe id in (`after`, `last`]: the values a reader in `locale` sees. One query."""
    rows = tx.fetchall(
        "SELECT recipe_id, country, field_values FROM recipe_l10n"
        " WHERE recipe_id > ? AND recipe_id <= ? AND language = ? AND country IN ('', ?)",
        (after, last, locale.language, locale.country),
    )
    grouped: dict[str, list[Row]] = {}
    for row in rows:
        grouped.setdefault(row["recipe_id"], []).append(row)
    return {recipe_id: merged_rows(group) for recipe_id, group in grouped.items()}


def merged_rows(rows: list[Row]) -> dict[str, str]:
    language = next((_load(r["field_values"]) for r in rows if not r["country"]), {})
    country = next((_load(r["field_values"]) for r in rows if r["country"]), {})
    return merge(language, country)


def _dump(values: Values) -> str:
    return json.dumps(dict(values), sort_keys=True, ensure_ascii=False)


def _load(text: str) -> dict[str, str]:
    loaded: dict[str, str] = json.loads(text)
    return loaded


def _l10n(row: Row) -> L10n:
    return L10n(
        recipes.id_from_key(row["recipe_id"]),
        Locale(row["language"], row["country"]),
        _load(row["field_values"]),
        datetime.fromisoformat(row["update_time"]),
    )
