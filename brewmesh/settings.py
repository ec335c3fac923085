"""The one configuration of a brewmesh process: frozen, validated, from flags, environment and file.

Every setting is a field of `Settings` whose metadata (`Option`) says its
flag, its `BREWMESH_*` variable, the commands that take it and whether it is
a secret. A value comes from the first of: the command line, the
environment, the TOML file given with `--config` (keys are the field
names), the default. A value that does not hold stops the start with a
`StartError` naming the setting (the CLI prints one line and exits 2).
`brewmesh config show` prints the result with secrets masked.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from brewmesh import caller_tokens
from brewmesh.backends import STORE_SCHEMES, without_password
from brewmesh.cpu_affinity import CPU_LIST_RULE, parse_cpus
from brewmesh.keepalive import MACHINE_SECONDS, MIN_PING_SECONDS
from brewmesh.log_format import LOG_FORMATS, LOG_LEVELS
from brewmesh.server import MAX_PORT
from brewmesh.startup import Setting, StartError

SERVER_COMMANDS = ("up", "serve")
PROCESS_COMMANDS = ("up", "serve", "machine")
BUS_SCHEMES = ("redis", "rediss")
BUS_PROTOCOL = "2"
"""The only `protocol` a bus URL may ask redis-py for (none: redis-py's default, which works too)."""
MASK = "********"
CONFIG_ENV = "BREWMESH_CONFIG"


@dataclass(frozen=True)
class Option:
    """How a setting is given: flag, environment variable, which commands take it."""

    env: str
    help: str
    commands: tuple[str, ...] = PROCESS_COMMANDS
    flag: str | None = None
    """None: not on the command line (a secret would show in `ps`); environment or file only."""
    secret: bool = False
    metavar: str | None = None
    is_switch: bool = False


def _option(
    env: str,
    help: str,
    commands: tuple[str, ...] = PROCESS_COMMANDS,
    *,
    flag: bool = True,
    secret: bool = False,
    metavar: str | None = None,
    is_switch: bool = False,
) -> dict[str, Option]:
    """A field's metadata; the flag is the field's name with dashes (set when the field is named)."""
    return {"option": Option(env, help, commands, "" if flag else None, secret, metavar, is_switch)}


@dataclass(frozen=True)
class Settings:
    """Everything a process is configured with. Build it with `load` (or directly, in tests)."""

    host: str = field(
        default="127.0.0.1",
        metadata=_option("BREWMESH_HOST", "address to bind (0.0.0.0: all; needs TLS or --insecure)"),
    )
    port: int = field(
        default=0, metadata=_option("BREWMESH_PORT", "port to serve on (0: any free port)", metavar="PORT")
    )
    data_dir: Path = field(
        default=Path("brewmesh-data"),
        metadata=_option(
            "BREWMESH_DATA_DIR", "where data lives (SQLite, keys)", SERVER_COMMANDS, metavar="DIR"
        ),
    )
    store: str | None = field(
        default=None,
        metadata=_option(
            "BREWMESH_STORE",
            "PostgreSQL for state, postgresql://user:password@host:port/db (default: SQLite in the data dir)",
            SERVER_COMMANDS,
            metavar="URL",
        ),
    )
    bus: str | None = field(
        default=None,
        metadata=_option(
            "BREWMESH_BUS",
            "Redis for events, redis://[user:password@]host:port[/db] (default: the embedded log;"
            " required by serve)",
            SERVER_COMMANDS,
            metavar="URL",
        ),
    )
    partners: str | None = field(
        default=None,
        metadata=_option(
            "BREWMESH_PARTNERS_ADDRESS", "where the partners service runs", ("serve",), metavar="HOST:PORT"
        ),
    )
    recipes: str | None = field(
        default=None,
        metadata=_option(
            "BREWMESH_RECIPES_ADDRESS", "where the recipes service runs", ("serve",), metavar="HOST:PORT"
        ),
    )
    runner: str | None = field(
        default=None,
        metadata=_option(
            "BREWMESH_RUNNER_ADDRESS", "where the runner service runs", ("serve",), metavar="HOST:PORT"
        ),
    )
    tls_cert: Path | None = field(
        default=None,
        metadata=_option(
            "BREWMESH_TLS_CERT", "serve TLS with this certificate (PEM chain), with --tls-key", metavar="PEM"
        ),
    )
    tls_key: Path | None = field(
        default=None,
        metadata=_option("BREWMESH_TLS_KEY", "the certificate's private key (PEM)", metavar="PEM"),
    )
    tls_ca: Path | None = field(
        default=None,
        metadata=_option(
            "BREWMESH_TLS_CA",
            "mutual TLS: accept only clients with a certificate from this CA; calls from here present"
            " --tls-cert and check servers against it",
            metavar="PEM",
        ),
    )
    insecure: bool = field(
        default=False,
        metadata=_option(
            "BREWMESH_INSECURE", "serve plaintext beyond loopback (API keys in clear)", is_switch=True
        ),
    )
    metrics_port: int | None = field(
        default=None,
        metadata=_option(
            "BREWMESH_METRICS_PORT",
            "serve Prometheus metrics at http://HOST:PORT/metrics",
            SERVER_COMMANDS,
            metavar="PORT",
        ),
    )
    log_level: str = field(
        default="INFO",
        metadata=_option("BREWMESH_LOG_LEVEL", f"one of {', '.join(LOG_LEVELS)}", metavar="LEVEL"),
    )
    log_format: str = field(
        default="text",
        metadata=_option("BREWMESH_LOG_FORMAT", "text, or json (one object per line)", metavar="FORMAT"),
    )
    event_visibility_seconds: float = field(
        default=30.0,
        metadata=_option(
            "BREWMESH_EVENT_VISIBILITY_SECONDS",
            "an event a listener group's member took and did not acknowledge goes to another after this",
            SERVER_COMMANDS,
            metavar="SECONDS",
        ),
    )
    event_max_deliveries: int = field(
        default=5,
        metadata=_option(
            "BREWMESH_EVENT_MAX_DELIVERIES",
            "failed deliveries before an event is a dead letter",
            SERVER_COMMANDS,
            metavar="N",
        ),
    )
    event_retention: int = field(
        default=1_000_000,
        metadata=_option(
            "BREWMESH_EVENT_RETENTION",
            "newest events kept per API (Redis: MAXLEN ~)",
            SERVER_COMMANDS,
            metavar="N",
        ),
    )
    health_interval_seconds: float = field(
        default=5.0,
        metadata=_option(
            "BREWMESH_HEALTH_INTERVAL",
            "how often the partners service checks each machine's health",
            SERVER_COMMANDS,
            metavar="SECONDS",
        ),
    )
    machine_keepalive: float = field(
        default=MACHINE_SECONDS,
        metadata=_option(
            "BREWMESH_MACHINE_KEEPALIVE_SECONDS",
            "the runner pings a quiet machine connection this often; twice unanswered, it is lost",
            SERVER_COMMANDS,
            metavar="SECONDS",
        ),
    )
    machine_resume: float = field(
        default=15.0,
        metadata=_option(
            "BREWMESH_MACHINE_RESUME_SECONDS",
            "how long the runner tries to reach a lost machine before failing its runs",
            SERVER_COMMANDS,
            metavar="SECONDS",
        ),
    )
    cpus: str | None = field(
        default=None,
        metadata=_option(
            "BREWMESH_CPUS",
            "run the process (every thread) on these CPUs only, e.g. 0 or 0-1 (default: any)",
            SERVER_COMMANDS,
            metavar="LIST",
        ),
    )
    admin_key: str | None = field(
        default=None,
        metadata=_option(
            "BREWMESH_ADMIN_KEY",
            "the platform admin's key (default: generated once, kept in the data dir)",
            SERVER_COMMANDS,
            flag=False,
            secret=True,
        ),
    )
    token_secret: str | None = field(
        default=None,
        metadata=_option(
            "BREWMESH_TOKEN_SECRET",
            "signs page tokens; the same on every process of a service"
            " (default: generated once, kept in the data dir)",
            SERVER_COMMANDS,
            flag=False,
            secret=True,
        ),
    )
    caller_token: str | None = field(
        default=None,
        metadata=_option(
            "BREWMESH_CALLER_TOKEN",
            "a machine serves runs only to callers presenting this token (TLS only)",
            ("machine",),
            flag=False,
            secret=True,
        ),
    )

    def __post_init__(self) -> None:
        for problem in _problems(self):
            raise problem

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def peers(self) -> dict[str, str]:
        """Where the services hosted elsewhere run (serve)."""
        return {name: where for name in ("partners", "recipes", "runner") if (where := getattr(self, name))}

    def shown(self) -> dict[str, object]:
        """The settings as `config show` prints them: secrets masked, passwords out of URLs."""
        shown: dict[str, object] = {}
        for f, option in options():
            value = getattr(self, f.name)
            if option.secret and value:
                value = MASK
            elif f.name in ("store", "bus") and value:
                value = without_password(value)
            shown[f.name] = str(value) if isinstance(value, Path) else value
        return shown


def options() -> Iterator[tuple[dataclasses.Field[Any], Option]]:
    for f in dataclasses.fields(Settings):
        option: Option = f.metadata["option"]
        yield (
            f,
            dataclasses.replace(
                option, flag=None if option.flag is None else "--" + f.name.replace("_", "-")
            ),
        )


def option_of(name: str) -> Option:
    return next(option for f, option in options() if f.name == name)


def describe(setting: Setting) -> str:
    """How a user gives `setting`: its flag and variable, e.g. `--store ($BREWMESH_STORE)`."""
    if setting is Setting.PEERS:
        return "--partners/--recipes/--runner ($BREWMESH_PARTNERS_ADDRESS, ...)"
    if setting is Setting.CONFIG:
        return f"--config (${CONFIG_ENV})"
    option = option_of(setting.value)
    return f"{option.flag} (${option.env})" if option.flag else f"${option.env}"


# -- loading ------------------------------------------------------------------------------------


def load(
    command: str,
    given: Mapping[str, object],
    environ: Mapping[str, str],
    config_file: Path | None = None,
    defaults: Mapping[str, object] | None = None,
) -> Settings:
    """The settings of `command`: `given` (flags set on the command line), else the environment,
    else the TOML file, else `defaults` (per command), else the field's default."""
    from_file = _read_config(config_file) if config_file else {}
    values: dict[str, object] = dict(defaults or {})
    for f, option in options():
        if command not in option.commands:
            continue
        if given.get(f.name) is not None:
            values[f.name] = given[f.name]
        elif option.env in environ:
            values[f.name] = _parse(f, environ[option.env], f"${option.env}")
        elif f.name in from_file:
            values[f.name] = _from_file(f, from_file[f.name])
    return Settings(**values)  # type: ignore[arg-type]


def _read_config(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as error:
        raise StartError(Setting.CONFIG, f"cannot read {path}: {error.strerror}") from error
    except tomllib.TOMLDecodeError as error:
        raise StartError(Setting.CONFIG, f"{path} is not TOML: {error}") from error
    known = {f.name for f in dataclasses.fields(Settings)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise StartError(
            Setting.CONFIG, f"{path}: unknown setting {unknown[0]!r}: use one of {sorted(known)}"
        )
    return data


def _parse(f: dataclasses.Field[Any], text: str, where: str) -> object:
    kind = kind_of(f)
    try:
        if kind is bool:
            if text.lower() not in ("1", "0", "true", "false", "yes", "no", ""):
                raise ValueError(text)
            return text.lower() in ("1", "true", "yes")
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
    except ValueError:
        raise StartError(_setting(f.name), f"{where}: {text!r} is not a {kind.__name__}") from None
    if kind is Path:
        return Path(text)
    return text or None if f.default is None else text


def _from_file(f: dataclasses.Field[Any], value: object) -> object:
    kind = kind_of(f)
    if kind is Path and isinstance(value, str):
        return Path(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise StartError(Setting.CONFIG, f"{f.name} = {value!r} is not a {kind.__name__}")
    return value


def kind_of(f: dataclasses.Field[Any]) -> type:
    """The type a setting's text is parsed as: bool, int, float, Path or str."""
    text = str(f.type)
    for name, kind in (("bool", bool), ("int", int), ("float", float), ("Path", Path)):
        if text.startswith(name):
            return kind
    return str


def _setting(name: str) -> Setting:
    return Setting.PEERS if name in ("partners", "recipes", "runner") else Setting(name)


# -- validation: each rule once -------------------------------------------------------------------

Check = Callable[[Settings], str | None]


def _port_problem(value: int | None) -> str | None:
    if value is None or 0 <= value <= MAX_PORT:
        return None
    return f"{value} is not a port: use 1 to {MAX_PORT} (0: any free port)"


def _seconds_problem(value: float, least: float) -> str | None:
    if math.isfinite(value) and value >= least:
        return None
    return f"{value!r} is not a number of seconds of at least {least:g}"


def _url_problem(value: str | None, schemes: tuple[str, ...]) -> str | None:
    if value is None or value.partition("://")[0] in schemes:
        return None
    return f"'{without_password(value)}' is not a {' or '.join(schemes)}:// URL"


def _bus_problem(value: str | None) -> str | None:
    problem = _url_problem(value, BUS_SCHEMES)
    if problem or value is None:
        return problem
    # redis-py takes `protocol` from the URL; with protocol=3 it hands stream replies over in
    # shapes the Redis bus does not read (its default, and protocol=2, give the ones it does).
    protocol = parse_qs(urlsplit(value).query).get("protocol", [BUS_PROTOCOL])[-1]
    if protocol == BUS_PROTOCOL:
        return None
    return f"asks for protocol={protocol}: leave protocol out of the URL (or give protocol={BUS_PROTOCOL})"


CHECKS: dict[str, Check] = {
    "host": lambda s: None if s.host.strip() else "is empty: give an address to bind, e.g. 127.0.0.1",
    "port": lambda s: _port_problem(s.port),
    "metrics_port": lambda s: (
        _port_problem(s.metrics_port)
        or ("must differ from --port" if s.metrics_port and s.metrics_port == s.port else None)
    ),
    "store": lambda s: _url_problem(s.store, STORE_SCHEMES),
    "bus": lambda s: _bus_problem(s.bus),
    "log_level": lambda s: (
        None if s.log_level.upper() in LOG_LEVELS else f"use one of {', '.join(LOG_LEVELS)}"
    ),
    "log_format": lambda s: None if s.log_format in LOG_FORMATS else f"use one of {', '.join(LOG_FORMATS)}",
    "event_visibility_seconds": lambda s: (
        _seconds_problem(s.event_visibility_seconds, 0.1)
        or (None if s.event_visibility_seconds <= 86_400 else "at most 86400 seconds")
    ),
    "event_max_deliveries": lambda s: None if 1 <= s.event_max_deliveries <= 1000 else "use 1 to 1000",
    "event_retention": lambda s: None if s.event_retention >= 1000 else "keep at least 1000 events",
    "health_interval_seconds": lambda s: _seconds_problem(s.health_interval_seconds, 0.1),
    "machine_keepalive": lambda s: _seconds_problem(s.machine_keepalive, MIN_PING_SECONDS),
    "machine_resume": lambda s: _seconds_problem(s.machine_resume, 0.0),
    "cpus": lambda s: None if s.cpus is None or parse_cpus(s.cpus) else f"is not {CPU_LIST_RULE}",
    "caller_token": lambda s: (
        None
        if s.caller_token is None or caller_tokens.is_valid(s.caller_token)
        else f"is not {caller_tokens.TOKEN_RULE}"
    ),
}


def _problems(settings: Settings) -> Iterator[StartError]:
    for name, check in CHECKS.items():
        problem = check(settings)
        if problem:
            yield StartError(_setting(name), problem)
