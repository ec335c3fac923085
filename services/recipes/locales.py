"""Locales: a language, optionally narrowed to one country (`en`, `en-US`)."""

from __future__ import annotations

from dataclasses import dataclass

from brewmesh.errors import Violations, quote
from brewmesh.names import check_country, check_language, locale_tag


@dataclass(frozen=True, order=True)
class Locale:
    """ISO 639-1 language code and ISO 3166-1 alpha-2 country code ('' for none)."""

    language: str
    country: str = ""

    @property
    def tag(self) -> str:
        """`en` or `en-US`: the last segment of l10n and formatter resource names."""
        return locale_tag(self.language, self.country)

    @property
    def language_only(self) -> Locale:
        return Locale(self.language)

    def describe_fallback(self) -> str:
        """What a lookup for this locale tries, in order, e.g. `'fr-FR' or 'fr'`."""
        return f"'{self.tag}' or '{self.language}'" if self.country else f"'{self.language}'"


def check_locale(
    v: Violations,
    language: str,
    country: str,
    language_field: str = "language_code",
    country_field: str = "country_code",
) -> Locale | None:
    """Both codes checked (every violation reported); the locale if both are valid."""
    checked_language = check_language(v, language_field, language)
    checked_country = check_country(v, country_field, country)
    if checked_language is None or checked_country is None:
        return None
    return Locale(checked_language, checked_country)


def parse_tag(v: Violations, field: str, tag: str) -> Locale | None:
    """`en` or `en-US` (the last segment of a resource name) as a locale."""
    language, _, country = tag.partition("-")
    scratch = Violations()
    locale = check_locale(scratch, language, country)
    if locale is None or (tag.endswith("-") and not country):
        v.add(
            field,
            f"{quote(tag)} is not a locale: use a language code or language-COUNTRY, e.g. 'en' or 'en-US'",
        )
        return None
    return locale
