"""Redis ACL users that make the bus's authority hold in Redis itself.

A process may fire only the events of the APIs it serves (`brewmesh.apis`),
but that check runs in the process: with one shared Redis login any service
could XADD into any API's stream. These ACLs give each service its own
Redis user that may *write* only its own APIs' streams and relay markers,
so a forged event from another service is refused by Redis (NOPERM).

What each user gets, and why (key permissions follow the commands' key
specs in Redis 7, `COMMAND INFO`):

- root permissions, for listening on any API: XREAD, XREVRANGE, XRANGE,
  XPENDING and XREADGROUP need only read access (`%R`); XGROUP CREATE,
  XACK and XAUTOCLAIM need write access (`%RW`) on the stream, since they
  change its consumer groups. So the root grants `%RW~brewmesh:events:*`
  and, for that reason, no command that changes a stream's entries (XADD,
  XDEL, XTRIM). XREADGROUP reads an API's stream and the group's replay
  stream in one command, so both patterns must be in the same permission
  set (Redis allows a command only if one set covers all of its keys).
- a selector for dead letters and replays: `brewmesh:dead:*` and
  `brewmesh:replay:*` are written (XADD, XDEL) by whichever process runs the
  group, and any process may run any group (the EventBus gRPC service is
  in every process), so every service may write them.
- a selector for authority: XADD, GET, SET and EVALSHA (the relay script)
  only on `brewmesh:events:<own api>` and `brewmesh:relayed:<own api>`.
  Commands a script runs are checked against the caller's ACL as well, so
  a script cannot XADD to another API's stream either.
- connection: AUTH (and HELLO with AUTH) needs no grant; PING (the bus's
  start check), SELECT (a bus URL may name a database; the key patterns
  hold in all of them) and SCRIPT LOAD (redis-py loads the relay script on
  NOSCRIPT). CLIENT SETINFO, which redis-py sends on connect, is left out:
  redis-py ignores its failure, and Redis 7.0 does not know it.

No pub/sub channels (`resetchannels`), no other keys, no @dangerous command.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING
from urllib.parse import quote

from brewmesh.backends.redis_bus import PREFIX, relayed_key, stream_key

if TYPE_CHECKING:
    from brewmesh.runtime import Component

USER_PREFIX = "brewmesh-"

CONNECTION_COMMANDS = ("ping", "select", "script|load")
LISTENING_COMMANDS = (
    "xread",
    "xrevrange",
    "xrange",
    "xpending",
    "xreadgroup",
    "xgroup|create",
    "xack",
    "xautoclaim",
)
GROUP_STREAM_COMMANDS = ("xadd", "xdel")
AUTHORITY_COMMANDS = ("xadd", "evalsha", "get", "set")
GROUP_STREAM_PATTERNS = (f"{PREFIX}dead:*", f"{PREFIX}replay:*")
EVENT_STREAMS_PATTERN = f"{PREFIX}events:*"


def username(service: str) -> str:
    """The Redis user of a service: `brewmesh-<service>`."""
    return f"{USER_PREFIX}{service}"


def apis_by_service(components: Iterable[Component]) -> dict[str, list[str]]:
    """Service name -> the APIs it is authoritative for, as the components declare them."""
    return {c.name: list(c.apis) for c in components}


def rules(apis: Sequence[str], password: str) -> list[str]:
    """The ACL rules of one service's user, authoritative for `apis`, in order.

    The password is stored as its SHA-256 (`#...`): the ACL text then holds
    no password, and Redis keeps no more than that anyway.
    """
    if not apis:
        raise ValueError("a service with no API fires no events and needs no Redis user of its own")
    digest = hashlib.sha256(password.encode()).hexdigest()
    root = ["reset", "on", f"#{digest}", "resetchannels"]
    root += [f"+{c}" for c in (*CONNECTION_COMMANDS, *LISTENING_COMMANDS)]
    root += [f"%RW~{EVENT_STREAMS_PATTERN}", *(f"%RW~{p}" for p in GROUP_STREAM_PATTERNS)]
    groups = [f"+{c}" for c in GROUP_STREAM_COMMANDS] + [f"%RW~{p}" for p in GROUP_STREAM_PATTERNS]
    own_keys = [key for api in apis for key in (stream_key(api), relayed_key(api))]
    authority = [f"+{c}" for c in AUTHORITY_COMMANDS] + [f"%RW~{_glob_escape(k)}" for k in own_keys]
    return [*root, _selector(groups), _selector(authority)]


def render(
    services: Mapping[str, Sequence[str]], passwords: Mapping[str, str], acl_file: bool = False
) -> str:
    """The ACL of a deployment: one line per service, in `services`' order.

    `ACL SETUSER ...` commands, selectors quoted, to pipe into `redis-cli`;
    or, with `acl_file`, `user ...` lines for a Redis `aclfile`. Neither
    takes comments (redis-cli runs `#` as a command; an aclfile refuses it),
    so the text is only the ACL: see `bus_urls` for what the services run with.
    """
    missing = sorted(set(services) - set(passwords))
    if missing:
        raise ValueError(f"no password for {', '.join(missing)}")
    lines: list[str] = []
    for service, apis in services.items():
        words = rules(apis, passwords[service])
        if acl_file:
            lines.append(" ".join(["user", username(service), *words]))
        else:
            lines.append(" ".join(["ACL", "SETUSER", username(service), *(_quoted(w) for w in words)]))
    return "\n".join(lines) + "\n"


def bus_urls(services: Iterable[str], passwords: Mapping[str, str], redis_address: str) -> str:
    """A `# <service>: --bus <url>` comment line per service."""
    lines = [f"# {s}: --bus {bus_url(s, passwords[s], redis_address)}" for s in services]
    return "\n".join(lines) + "\n"


def bus_url(service: str, password: str, redis_address: str, db: int = 0) -> str:
    """The `--bus` URL that logs the service in as its user."""
    return f"redis://{quote(username(service), safe='')}:{quote(password, safe='')}@{redis_address}/{db}"


def _selector(words: Sequence[str]) -> str:
    return "(" + " ".join(words) + ")"


def _quoted(word: str) -> str:
    # redis-cli splits a line at spaces; a selector is one argument.
    if " " not in word:
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _glob_escape(key: str) -> str:
    """`key` as a Redis glob pattern matching only itself."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in key)
