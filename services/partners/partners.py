"""Partners: who owns which namespace, and their API keys (domain layer)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from brewmesh.auth import hash_key, new_api_key
from brewmesh.errors import AlreadyExists, NotFound, Violations, quote
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
    # A key replaced by a rotation keeps working until then (NULL: until the next rotation).
    # (Versions 2 and 3 are the fleet's, in machines.py.)
    Migration("partners", 4, ("ALTER TABLE partner_keys ADD COLUMN expire_time_ns BIGINT",)),
)

MAX_DISPLAY_NAME = 200
MAX_KEY_GRACE = timedelta(hours=24)
"""The longest a rotated key may keep working beside its replacement."""


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


def check_key_grace(v: Violations, field: str, seconds: int, nanos: int) -> timedelta | None:
    """A grace period for rotated keys, from a duration's seconds and nanos: 0 to MAX_KEY_GRACE."""
    limit = int(MAX_KEY_GRACE.total_seconds())
    if seconds < 0 or nanos < 0 or nanos >= 10**9 or (seconds, nanos) > (limit, 0):
        v.add(field, f"is {seconds}s and {nanos}ns: use 0 to {limit} s (24 hours), e.g. '3600s'")
        return None
    return timedelta(seconds=seconds, microseconds=nanos // 1000)


def rotate_key(tx: Tx, namespace: str, grace: timedelta) -> tuple[Partner, str, datetime]:
    """A new key for the partner; its other keys stop working after `grace` (0: now).

    Returns the partner, the new key in clear (shown once) and when the old keys expire.
    """
    partner = get_partner(tx, namespace)
    now = datetime.now(UTC)
    expire = now + grace
    # Every key it had expires by `expire` at the latest; those already expired are dropped.
    tx.execute(
        "UPDATE partner_keys SET expire_time_ns = ?"
        " WHERE namespace = ? AND (expire_time_ns IS NULL OR expire_time_ns > ?)",
        (_ns(expire), namespace, _ns(expire)),
    )
    tx.execute("DELETE FROM partner_keys WHERE namespace = ? AND expire_time_ns <= ?", (namespace, _ns(now)))
    key = new_api_key()
    tx.execute("INSERT INTO partner_keys (key_hash, namespace) VALUES (?, ?)", (hash_key(key), namespace))
    return partner, key, expire


def parse_partner_name(v: Violations, field: str, name: str) -> str | None:
    if not name.startswith("partners/"):
        example = "'partners/my-coffee-company'"
        v.add(field, f"{quote(name)} is not a partner name: use 'partners/{{namespace}}', e.g. {example}")
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


def key_owner(tx: Tx, key_hash: str) -> tuple[str, datetime | None] | None:
    """The namespace of a valid key and when it expires (None: at the next rotation)."""
    row = tx.fetchone("SELECT namespace, expire_time_ns FROM partner_keys WHERE key_hash = ?", (key_hash,))
    if row is None:
        return None
    expire_ns = row["expire_time_ns"]
    if expire_ns is None:
        return str(row["namespace"]), None
    expire = EPOCH + timedelta(microseconds=int(expire_ns) // 1000)
    return (str(row["namespace"]), expire) if datetime.now(UTC) < expire else None


EPOCH = datetime.fromtimestamp(0, UTC)


def _ns(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1) * 1000


def _partner(row: Row) -> Partner:
    return Partner(row["namespace"], row["display_name"], datetime.fromisoformat(row["create_time"]))
