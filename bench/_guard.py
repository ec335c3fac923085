"""Runs a server command so that it dies with the benchmark that started it.

    python -m bench._guard PARENT_PID COMMAND [ARGS...]

On Linux it asks the kernel to send SIGTERM to this process when its parent
goes away (prctl PR_SET_PDEATHSIG, kept across exec), then execs COMMAND in
place. So even a benchmark killed with SIGKILL leaves no server behind.
Elsewhere it just execs COMMAND.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main() -> None:
    parent, command = int(sys.argv[1]), sys.argv[2:]
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        sys.exit(1)  # the benchmark is already gone
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
