"""`--cpus` runs a mesh process, every thread of it, on the CPUs given; a list it cannot use is refused.

An operator pins a mesh to a core of its own on a small host shared with
its clients (README, "The event bus"): every thread must be there, those
grpc and the store start later included, or the pinning buys nothing.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from brewmesh.client import connect
from brewmesh.cpu_affinity import cpu_list, parse_cpus
from brewmesh.partners.v1 import partners_pb2
from tests.conftest import start_mesh_process
from tests.test_start_failures import assert_refused, start

ALLOWED = sorted(os.sched_getaffinity(0))


def cpus_of_threads(pid: int) -> dict[int, str]:
    """Each thread of process `pid` and the CPUs it may run on, as Linux lists them."""
    found: dict[int, str] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
            for line in Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines():
                if line.startswith("Cpus_allowed_list:"):
                    found[int(tid)] = line.partition(":")[2].strip()
    return found


@pytest.mark.skipif(len(ALLOWED) < 2, reason="confining to fewer CPUs needs at least 2")
async def test_every_thread_of_a_mesh_started_with_cpus_runs_on_them(tmp_path: Path) -> None:
    chosen = str(ALLOWED[-1])
    running = start_mesh_process(tmp_path / "data", BREWMESH_CPUS=chosen)
    try:
        # A write and a read: the store's threads start on demand, after the process was confined.
        async with connect(running.address, running.admin_key) as admin:
            created = partners_pb2.CreatePartnerRequest(
                namespace="pinned-co", partner=partners_pb2.Partner(display_name="Pinned")
            )
            await admin.partners.CreatePartner(created)
            listed = await admin.partners.ListPartners(partners_pb2.ListPartnersRequest())
        assert [p.name for p in listed.partners] == ["partners/pinned-co"]
        threads = cpus_of_threads(running.process.pid)
        assert len(threads) > 1  # grpc's and the store's threads, not the main one alone
        assert set(threads.values()) == {chosen}, threads
    finally:
        running.stop()


def test_a_cpu_the_process_may_not_use_is_refused(tmp_path: Path) -> None:
    refusal = start("up", "--port", "0", "--data-dir", str(tmp_path / "data"), "--cpus", "4095")
    assert_refused(refusal, "--cpus", "CPU 4095", f"use some of {cpu_list(set(ALLOWED))}")


@pytest.mark.parametrize("given", ["x", "1-0", "0,", "-1"])
def test_a_cpu_list_that_is_not_one_is_refused(tmp_path: Path, given: str) -> None:
    refusal = start("up", "--port", "0", "--data-dir", str(tmp_path / "data"), f"--cpus={given}")
    assert_refused(refusal, "--cpus", "is not a list of CPU numbers")


def test_cpu_lists_read_as_linux_writes_them() -> None:
    assert parse_cpus("0") == frozenset({0})
    assert parse_cpus("0-2,5") == frozenset({0, 1, 2, 5})
    assert parse_cpus("3-1") is None
    assert cpu_list({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"
    assert cpu_list(parse_cpus("0-2,5") or set()) == "0-2,5"
