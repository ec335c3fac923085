"""What every benchmark shares: server processes, free ports, percentiles, CPU time.

Servers run as child processes (their own event loop and GIL), bound to
127.0.0.1 on a free port, and are stopped (SIGTERM, then SIGKILL) however
the benchmark ends: normally, on an error or on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
READY_SECONDS = 30.0
STOP_SECONDS = 10.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def stop_on_signals() -> None:
    """Make Ctrl-C and SIGTERM raise KeyboardInterrupt, so every `with Servers` block cleans up.

    (A shell may start a background job with SIGINT ignored; SIGTERM would
    otherwise end us without stopping the servers.)
    """

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)


def run_benchmark(run: Callable[[], object]) -> None:
    """Run a benchmark from the command line: every server stops on Ctrl-C, SIGTERM or a failure."""
    stop_on_signals()
    try:
        run()
    except KeyboardInterrupt:
        print("\ninterrupted: every server stopped", file=sys.stderr)
        sys.exit(130)
    except ServerFailed as error:
        print(f"a server failed: {error}", file=sys.stderr)
        sys.exit(1)


def free_port() -> int:
    """A port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def new_key() -> str:
    return "bench-admin-" + secrets.token_hex(16)


def python_module(module: str, *args: str) -> list[str]:
    """The command running `module` of this checkout with the current interpreter."""
    return [sys.executable, "-m", module, *args]


def brewmesh_command(*args: str) -> list[str]:
    """`brewmesh ARGS`: the venv's console script, or the same entry point through python."""
    script = Path(sys.executable).with_name("brewmesh")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-c", "from brewmesh.cli import main; main()", *args]


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process `pid` and its reaped children (Linux /proc), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the ")" the fields start at field 3 (state): utime is 14, stime 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an already sorted sequence."""
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class ServerProcess:
    name: str
    port: int
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        return self.popen.pid

    def cpu_seconds(self) -> float | None:
        return cpu_seconds(self.popen.pid)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        """SIGTERM (graceful stop), then SIGKILL if it is still there after `timeout`."""
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()
            self.popen.wait(timeout)


@dataclass
class Servers:
    """Starts server processes and stops every one of them on exit."""

    log_dir: Path
    started: list[ServerProcess] = field(default_factory=list)

    def start(
        self,
        name: str,
        command: Sequence[str],
        port: int,
        env: dict[str, str] | None = None,
        service: str = "",
    ) -> ServerProcess:
        """Start `command` (it must serve on `port`) and wait until its health says SERVING."""
        log_path = self.log_dir / f"{name}.log"
        environment = {**os.environ, **(env or {})}
        environment["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), environment.get("PYTHONPATH", "")) if p
        )
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                [sys.executable, "-m", "bench._guard", str(os.getpid()), *command],
                cwd=REPO,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own session: Ctrl-C reaches only us, and we stop it in order.
                start_new_session=True,
            )
        process = ServerProcess(name, port, popen, log_path)
        self.started.append(process)
        wait_serving(process, service)
        return process

    def stop_all(self) -> None:
        while self.started:
            self.started.pop().stop()

    def __enter__(self) -> Servers:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_all()


class ServerFailed(RuntimeError):
    pass


def wait_serving(process: ServerProcess, service: str = "", timeout: float = READY_SECONDS) -> None:
    """Poll grpc.health.v1 until `service` is SERVING; fail early if the process dies."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(process.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            if process.popen.poll() is not None:
                raise ServerFailed(
                    f"{process.name} exited with {process.popen.returncode}:\n{process.log_tail()}"
                )
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise ServerFailed(f"{process.name} not SERVING after {timeout:g} s:\n{process.log_tail()}")
            time.sleep(0.1)


def cpu_snapshot(processes: Sequence[ServerProcess]) -> dict[str, float | None]:
    """Each process's CPU seconds so far (see `cpu_since`)."""
    return {p.name: p.cpu_seconds() for p in processes}


def cpu_since(before: dict[str, float | None], processes: Sequence[ServerProcess]) -> dict[str, float]:
    """CPU seconds each process used since `before` (processes /proc cannot tell are left out)."""
    used: dict[str, float] = {}
    for p in processes:
        start, end = before.get(p.name), p.cpu_seconds()
        if start is not None and end is not None:
            used[p.name] = end - start
    return used


@contextlib.contextmanager
def cpu_meter(processes: Sequence[ServerProcess]) -> Iterator[dict[str, float]]:
    """CPU seconds each process used inside the `with` block, filled in on exit."""
    before = cpu_snapshot(processes)
    used: dict[str, float] = {}
    yield used
    used.update(cpu_since(before, processes))


def machine_summary() -> str:
    cores = os.cpu_count() or 0
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = cores
    return f"{usable} usable core(s) of {cores}, Python {sys.version.split()[0]}, grpcio {grpc.__version__}"


def load_summary() -> str:
    """The load average: other work on this machine skews every figure."""
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "load average unknown"
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) before start"
