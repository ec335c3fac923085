"""Why a process could not start, and which of its settings to change.

A start that fails (a busy port, an unusable data directory, an engine out
of reach, an unreadable certificate) raises `StartError` naming the
`Setting` at fault; the CLI turns it into one line naming its option and
exits 2, instead of a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum

from brewmesh.errors import Unavailable
from brewmesh.storage import StoreUnusable


class Setting(Enum):
    """A setting of a process: the name of its `Settings` field (PEERS: the service addresses)."""

    HOST = "host"
    PORT = "port"
    DATA_DIR = "data_dir"
    STORE = "store"
    BUS = "bus"
    PEERS = "peers"
    TLS_CERT = "tls_cert"
    TLS_KEY = "tls_key"
    TLS_CA = "tls_ca"
    INSECURE = "insecure"
    METRICS_PORT = "metrics_port"
    LOG_LEVEL = "log_level"
    LOG_FORMAT = "log_format"
    EVENT_VISIBILITY = "event_visibility_seconds"
    EVENT_MAX_DELIVERIES = "event_max_deliveries"
    EVENT_RETENTION = "event_retention"
    HEALTH_INTERVAL = "health_interval_seconds"
    MACHINE_KEEPALIVE = "machine_keepalive"
    MACHINE_RESUME = "machine_resume"
    CPUS = "cpus"
    ADMIN_KEY = "admin_key"
    TOKEN_SECRET = "token_secret"
    CALLER_TOKEN = "caller_token"
    CONFIG = "config"


class StartError(Exception):
    """A process could not start because of `setting`; `problem` says what to change."""

    def __init__(self, setting: Setting, problem: str) -> None:
        super().__init__(problem)
        self.setting = setting
        self.problem = problem


@contextmanager
def blame(setting: Setting, what: str) -> Iterator[None]:
    """Report an environment failure inside the block as a StartError of `setting`: '`what`: why'.

    Only failures of the outside world (files, sockets, engines) are caught;
    a bug still shows its traceback.
    """
    try:
        yield
    except StartError:
        raise
    except (OSError, Unavailable, StoreUnusable) as error:
        raise StartError(setting, f"{what}: {_reason(error)}") from error


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror[0].lower() + error.strerror[1:]
    return str(error)
