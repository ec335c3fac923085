"""Partners: who owns which namespace, and their API keys (domain layer)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from brewmesh.auth import hash_key, new_api_key
from brewmesh.errors import AlreadyExists, NotFound, Violations
from brewmesh.names import COMMON_NAMESPACE, check_namespace
from brewmesh.storage import Migration, Row, Tx

MIGRATIONS = (
    Migration(
        "partners",
        1,
        (
            "CREATE TABLE partners ("
            " namespace TEXT PRIMARY KEY, display_name TEXT NOT NULL, create_time TEXT NOT NULL)",
            "CREATE TABLE partner_keys ("
            " key_hash TEXT PRIMARY KEY,"
            " namespace TEXT NOT NULL REFERENCES partners (namespace) ON DELETE CASCADE)",
        ),
    ),
)

MAX_DISPLAY_NAME = 200


@dataclass(frozen=True)
class Partner:
    namespace: str
    display_name: str
    create_time: datetime

    @property
    def name(self) -> str:
        return f"partners/{self.namespace}"


def validate_new_partner(namespace: str, display_name: str) -> None:
    v = Violations()
    if check_namespace(v, "namespace", namespace) == COMMON_NAMESPACE:
        v.add("namespace", "'common' is the platform's namespace: choose the partner's own")
    if not display_name.strip():
        v.add("partner.display_name", "is required: the partner's name as people see it")
    elif len(display_name) > MAX_DISPLAY_NAME:
        v.add("partner.display_name", f"is {len(display_name)} characters: use at most {MAX_DISPLAY_NAME}")
    v.raise_if_any()


def insert_partner(tx: Tx, namespace: str, display_name: str) -> tuple[Partner, str]:
    """Create the partner and its key; returns the key in clear (shown once)."""
    if tx.fetchone("SELECT 1 FROM partners WHERE namespace = ?", (namespace,)):
        raise AlreadyExists(f"partner '{namespace}' already exists")
    partner = Partner(namespace, display_name, datetime.now(UTC))
    tx.execute(
        "INSERT INTO partners (namespace, display_name, create_time) VALUES (?, ?, ?)",
        (namespace, display_name, partner.create_time.isoformat()),
    )
    key = new_api_key()
    tx.execute("INSERT INTO partner_keys (key_hash, namespace) VALUES (?, ?)", (hash_key(key), namespace))
    return partner, key


def parse_partner_name(v: Violations, field: str, name: str) -> str | None:
    if not name.startswith("partners/"):
        example = "'partners/my-coffee-company'"
        v.add(field, f"'{name}' is not a partner name: use 'partners/{{namespace}}', e.g. {example}")
        return None
    return check_namespace(v, field, name.removeprefix("partners/"))


def get_partner(tx: Tx, namespace: str) -> Partner:
    row = tx.fetchone("SELECT * FROM partners WHERE namespace = ?", (namespace,))
    if row is None:
        raise NotFound(f"partner 'partners/{namespace}' does not exist")
    return _partner(row)


def list_partners(tx: Tx, after: str, limit: int) -> list[Partner]:
    rows = tx.fetchall(
        "SELECT * FROM partners WHERE namespace > ? ORDER BY namespace LIMIT ?", (after, limit)
    )
    return [_partner(r) for r in rows]


def namespace_for_key_hash(tx: Tx, key_hash: str) -> str | None:
    row = tx.fetchone("SELECT namespace FROM partner_keys WHERE key_hash = ?", (key_hash,))
    return str(row["namespace"]) if row else None


def _partner(row: Row) -> Partner:
    return Partner(row["namespace"], row["display_name"], datetime.fromisoformat(row["create_time"]))
