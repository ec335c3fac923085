#!/usr/bin/env bash
# Called by `python3 tasks.py test` (and so by .ci/run) before the tests.
# Installs the engines the tests start (PostgreSQL, Redis) when their binaries are missing.
#
# The tests start their own PostgreSQL and Redis (tests/engines.py) on free ports with
# temporary data, so CI needs only the binaries: the Debian packages are installed when
# they are missing, and their system services are neither started nor left enabled.
set -euo pipefail
cd "$(dirname "$0")/.."

# Where tests/engines.py looks: the newest /usr/lib/postgresql/*/bin, else PATH.
have_postgres() {
    local bindir
    for bindir in /usr/lib/postgresql/*/bin; do
        if [[ -x $bindir/initdb && -x $bindir/pg_ctl && -x $bindir/postgres ]]; then
            return 0
        fi
    done
    command -v initdb >/dev/null && command -v pg_ctl >/dev/null && command -v postgres >/dev/null
}

have_redis() {
    command -v redis-server >/dev/null
}

POLICY=/usr/sbin/policy-rc.d
POLICY_BACKUP=""

# A policy-rc.d that exits 101 tells invoke-rc.d and deb-systemd-invoke not to start
# services while packages install; an existing one (Docker images ship one) is put back.
block_service_starts() {
    if [[ -e $POLICY ]]; then
        POLICY_BACKUP=$(mktemp)
        cp -p "$POLICY" "$POLICY_BACKUP"
    fi
    trap restore_policy EXIT
    printf '#!/bin/sh\n# .ci/run: no service starts while installing\nexit 101\n' >"$POLICY"
    chmod 755 "$POLICY"
}

restore_policy() {
    if [[ -n $POLICY_BACKUP ]]; then
        mv -f "$POLICY_BACKUP" "$POLICY"
    else
        rm -f "$POLICY"
    fi
    trap - EXIT
}

install_packages() {
    local log
    log=$(mktemp)
    echo "engines: installing $* with apt-get (quietly; its output is shown if it fails)"
    block_service_starts
    export DEBIAN_FRONTEND=noninteractive
    if ! {
        apt-get update -q &&
            apt-get install -y -q --no-install-recommends -o Dpkg::Use-Pty=0 "$@"
    } >"$log" 2>&1; then
        cat "$log" >&2
        echo "engines: apt-get install $* failed (output above)" >&2
        exit 1
    fi
    restore_policy
    rm -f "$log"
    # Belt and braces: whatever started anyway is stopped, and nothing starts at boot.
    local service
    for service in "$@"; do
        if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
            systemctl disable --now "$service" >/dev/null 2>&1 || true
        fi
        service "$service" stop >/dev/null 2>&1 || true
    done
}

missing=()
have_postgres || missing+=(postgresql)
have_redis || missing+=(redis-server)

if ((${#missing[@]} == 0)); then
    echo "engines: PostgreSQL and Redis binaries found; no apt-get needed"
elif ((EUID != 0)); then
    echo "engines: missing ${missing[*]}, and not root, so apt-get cannot install them." >&2
    echo "engines: install them first (Debian: sudo apt-get install ${missing[*]}), then rerun .ci/run" >&2
    exit 1
elif ! command -v apt-get >/dev/null; then
    echo "engines: missing ${missing[*]} and there is no apt-get: install them with this system's tools" >&2
    exit 1
else
    install_packages "${missing[@]}"
    if ! have_postgres || ! have_redis; then
        echo "engines: installed ${missing[*]}, but the PostgreSQL or Redis binaries are still not found" >&2
        exit 1
    fi
fi

