"""HTTP/2 keepalive: how often a client pings a quiet connection, and how often servers allow it.

A peer that stops answering (a frozen process, a cut cable) leaves its TCP
connection open, so a call on it waits forever; only a ping that goes
unanswered tells. The runner pings its machines (`client_options`); every
brewmesh server (the mesh's, and each machine built on the SDK) accepts
pings as often as any client may be configured to send them
(`SERVER_OPTIONS`), since grpc's default answers a ping more often than
every 5 minutes with GOAWAY `too_many_pings`.
"""

from __future__ import annotations

MIN_PING_SECONDS = 1.0
"""The shortest keepalive a client may be configured with: servers allow pings this often."""
MACHINE_SECONDS = 2.5
"""The runner's default ping interval to machines: with the default resume window (15 s), a
frozen machine's runs fail within 2 x 2.5 + 15 = 20 s."""

SERVER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.keepalive_permit_without_calls", 1),
    # Half the shortest client interval: a ping that arrives a little early is not a strike.
    ("grpc.http2.min_ping_interval_without_data_ms", int(MIN_PING_SECONDS * 1000 / 2)),
]


def client_options(seconds: float) -> list[tuple[str, int]]:
    """Channel options that ping after `seconds` of quiet and drop the connection when a
    ping is not answered within `seconds`: a silent peer is noticed within twice that."""
    if seconds < MIN_PING_SECONDS:
        raise ValueError(f"keepalive of {seconds:g} s: use at least {MIN_PING_SECONDS:g} s")
    millis = int(seconds * 1000)
    return [
        ("grpc.keepalive_time_ms", millis),
        ("grpc.keepalive_timeout_ms", millis),
        # grpc-core times a keepalive ping out by the general ping timeout (60 s by default).
        ("grpc.http2.ping_timeout_ms", millis),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),  # a quiet stream (a run brewing) is pinged too
    ]
