"""A start that cannot succeed says, in one line, what to change, exits 2 and leaves no secret behind.

Each case runs the real `brewmesh` command as a process, with the admin key
left to be generated (so a start that wrote one before failing would show).
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from brewmesh.auth import ADMIN_KEY_FILE
from brewmesh.backends import DB_FILE
from tests.certificates import Pki
from tests.conftest import BIN, ROOT, free_port, wait_for_serving

START_SECONDS = 60
UNSET = ("BREWMESH_ADMIN_KEY", "BREWMESH_STORE", "BREWMESH_BUS", "BREWMESH_PARTNERS_ADDRESS")


@dataclass(frozen=True)
class Refusal:
    """How a start that failed ended."""

    code: int
    stdout: str
    stderr: str

    @property
    def line(self) -> str:
        """The one line on stderr (the test fails if there is not exactly one)."""
        lines = self.stderr.splitlines()
        assert len(lines) == 1, f"expected one line on stderr, got:\n{self.stderr}"
        return lines[0]


def start(*args: str) -> Refusal:
    """Run `brewmesh ARGS` until it exits (a start that does not fail within the bound is a failure)."""
    env = {k: v for k, v in os.environ.items() if k not in UNSET} | {"PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [str(BIN / "brewmesh"), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=START_SECONDS,
        check=False,
    )
    return Refusal(done.returncode, done.stdout, done.stderr)


def assert_refused(refusal: Refusal, *naming: str) -> None:
    """Exit code 2, one line on stderr naming each of `naming`, no traceback anywhere."""
    assert refusal.code == 2, refusal
    assert "Traceback" not in refusal.stdout + refusal.stderr
    for word in naming:
        assert word in refusal.line


def unused_port() -> int:
    """A port with nothing listening (to stand for an engine that is down)."""
    return free_port()


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something else already listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize(
    "command",
    [("up",), ("serve", "partners", "--bus", "redis://127.0.0.1:1/0"), ("machine", "--kind", "vending")],
    ids=["up", "serve", "machine"],
)
def test_a_busy_port_is_named_in_one_line(tmp_path: Path, busy_port: int, command: tuple[str, ...]) -> None:
    data_dir = tmp_path / "data"
    dir_args = () if command[0] == "machine" else ("--data-dir", str(data_dir))
    refusal = start(*command, *dir_args, "--port", str(busy_port))
    assert_refused(refusal, "--port", f"127.0.0.1:{busy_port} is in use")
    assert not (data_dir / ADMIN_KEY_FILE).exists()


@pytest.mark.parametrize("command", [("up",), ("machine", "--kind", "cafe")], ids=["up", "machine"])
def test_a_port_out_of_range_is_refused_instead_of_wrapping_around(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    refusal = start(*command, "--port", "70000")
    assert_refused(refusal, "--port", "70000", "65535")


def test_a_data_dir_under_a_regular_file_is_named(tmp_path: Path) -> None:
    regular = tmp_path / "notes.txt"
    regular.write_text("not a directory\n")
    refusal = start("up", "--port", "0", "--data-dir", str(regular / "data"))
    assert_refused(refusal, "--data-dir", str(regular / "data"), "not a directory")


def test_a_data_dir_that_is_a_file_is_named(tmp_path: Path) -> None:
    regular = tmp_path / "data"
    regular.write_text("not a directory\n")
    refusal = start("up", "--port", "0", "--data-dir", str(regular))
    assert_refused(refusal, "--data-dir", str(regular))
    assert regular.read_text() == "not a directory\n"


def test_a_corrupt_database_is_named_and_left_as_it_was(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    garbage = os.urandom(8192)
    (data_dir / DB_FILE).write_bytes(garbage)
    refusal = start("up", "--port", "0", "--data-dir", str(data_dir))
    assert_refused(refusal, "--data-dir", str(data_dir / DB_FILE), "not a database")
    assert (data_dir / DB_FILE).read_bytes() == garbage
    assert not (data_dir / ADMIN_KEY_FILE).exists()


def test_an_unreachable_postgresql_is_named(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    store = f"postgresql://brewmesh@127.0.0.1:{unused_port()}/brewmesh"
    bus = f"redis://127.0.0.1:{unused_port()}/0"
    refusal = start(
        "serve", "partners", "--port", "0", "--data-dir", str(data_dir), "--store", store, "--bus", bus
    )
    assert_refused(refusal, "--store", "$BREWMESH_STORE", store)
    assert not (data_dir / ADMIN_KEY_FILE).exists()


def test_an_unreachable_redis_is_named(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    bus = f"redis://127.0.0.1:{unused_port()}/0"
    refusal = start("serve", "partners", "--port", "0", "--data-dir", str(data_dir), "--bus", bus)
    assert_refused(refusal, "--bus", "$BREWMESH_BUS", bus)
    assert not (data_dir / ADMIN_KEY_FILE).exists()


def test_a_password_in_an_unreachable_url_is_not_printed(tmp_path: Path) -> None:
    bus = f"redis://brewmesh-partners:s3cret-pass@127.0.0.1:{unused_port()}/0"
    refusal = start("serve", "partners", "--port", "0", "--data-dir", str(tmp_path / "data"), "--bus", bus)
    assert_refused(refusal, "--bus")
    assert "s3cret-pass" not in refusal.stdout + refusal.stderr


def test_a_service_without_the_partners_address_is_told_to_give_it(tmp_path: Path) -> None:
    bus = f"redis://127.0.0.1:{unused_port()}/0"
    refusal = start("serve", "recipes", "--port", "0", "--data-dir", str(tmp_path / "data"), "--bus", bus)
    assert_refused(refusal, "--partners")


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki.create(tmp_path / "pki")


def test_an_unreadable_certificate_is_named(tmp_path: Path, pki: Pki) -> None:
    issued = pki.issue("mesh")
    missing = tmp_path / "missing.pem"
    refusal = start("up", "--port", "0", "--data-dir", str(tmp_path / "data"), "--tls-cert", str(missing),
                    "--tls-key", str(issued.key))  # fmt: skip
    assert_refused(refusal, "--tls-cert", str(missing))
    assert not (tmp_path / "data").exists()


def test_a_file_that_is_no_certificate_is_named(tmp_path: Path, pki: Pki) -> None:
    issued = pki.issue("mesh")
    refusal = start("up", "--port", "0", "--data-dir", str(tmp_path / "data"), "--tls-cert", str(issued.key),
                    "--tls-key", str(issued.key))  # fmt: skip
    assert_refused(refusal, "--tls-cert", "not a PEM certificate")


def test_a_key_of_another_certificate_is_named(tmp_path: Path, pki: Pki) -> None:
    mesh, other = pki.issue("mesh"), pki.issue("other")
    refusal = start("up", "--port", "0", "--data-dir", str(tmp_path / "data"), "--tls-cert", str(mesh.cert),
                    "--tls-key", str(other.key))  # fmt: skip
    assert_refused(refusal, "--tls-key", "not the key of the certificate")


def test_an_unreadable_ca_is_named(tmp_path: Path, pki: Pki) -> None:
    mesh = pki.issue("mesh")
    missing = tmp_path / "no-ca.pem"
    refusal = start("machine", "--kind", "legacy", "--port", "0", "--tls-cert", str(mesh.cert),
                    "--tls-key", str(mesh.key), "--tls-ca", str(missing))  # fmt: skip
    assert_refused(refusal, "--tls-ca", str(missing))


@pytest.mark.parametrize(
    "command",
    [("up",), ("serve", "partners", "--bus", "redis://127.0.0.1:1/0"), ("machine", "--kind", "vending")],
    ids=["up", "serve", "machine"],
)
def test_plaintext_beyond_loopback_needs_insecure(tmp_path: Path, command: tuple[str, ...]) -> None:
    data_dir = tmp_path / "data"
    dir_args = () if command[0] == "machine" else ("--data-dir", str(data_dir))
    refusal = start(*command, *dir_args, "--host", "0.0.0.0", "--port", "0")
    assert_refused(refusal, "--host", "0.0.0.0", "--insecure", "--tls-cert")
    assert not data_dir.exists()


def test_insecure_plaintext_beyond_loopback_serves_and_says_so(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    process = subprocess.Popen(
        [str(BIN / "brewmesh"), "machine", "--kind", "vending", "--host", "0.0.0.0", "--port", str(port),
         "--insecure"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    try:
        wait_for_serving(f"127.0.0.1:{port}", process)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=20)
    warnings = [line for line in stderr.splitlines() if "plaintext" in line]
    assert len(warnings) == 1, stderr
    assert "0.0.0.0" in warnings[0] and "WARNING" in warnings[0]
