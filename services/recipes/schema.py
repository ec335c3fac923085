"""The recipes component's tables."""

from __future__ import annotations

from brewmesh.storage import Migration

MIGRATIONS = (
    Migration(
        "recipes",
        1,
        (
            "CREATE TABLE recipes ("
            " id TEXT PRIMARY KEY, namespace TEXT NOT NULL, default_volume_ml INTEGER NOT NULL,"
            " program_id TEXT NOT NULL, parameters TEXT NOT NULL,"
            " create_time TEXT NOT NULL, update_time TEXT NOT NULL)",
            "CREATE INDEX recipes_by_namespace ON recipes (namespace, id)",
            "CREATE TABLE recipe_l10n ("
            " recipe_id TEXT NOT NULL REFERENCES recipes (id) ON DELETE CASCADE,"
            " language TEXT NOT NULL, country TEXT NOT NULL, field_values TEXT NOT NULL,"
            " update_time TEXT NOT NULL, PRIMARY KEY (recipe_id, language, country))",
            "CREATE TABLE layouts ("
            " id TEXT PRIMARY KEY, namespace TEXT NOT NULL, kind TEXT NOT NULL, spec TEXT NOT NULL,"
            " create_time TEXT NOT NULL)",
            "CREATE INDEX layouts_by_kind ON layouts (kind, id)",
            "CREATE TABLE volume_formatters ("
            " tag TEXT PRIMARY KEY, language TEXT NOT NULL, country TEXT NOT NULL, template TEXT NOT NULL,"
            " operation TEXT, operand DOUBLE PRECISION, decimals INTEGER,"
            " creator TEXT NOT NULL, update_time TEXT NOT NULL)",
            "CREATE INDEX volume_formatters_by_language ON volume_formatters (language, tag)",
        ),
    ),
)
